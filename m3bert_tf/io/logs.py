"""TensorFlow's start-up lines, filtered by the level a user set.

    logs.quiet_tensorflow_import()   # before anything imports tensorflow

TensorFlow's C++ start-up lines (CUDA factory registration, oneDNN notices)
and absl's INFO lines tell a user nothing they can act on; set
TF_CPP_MIN_LOG_LEVEL=0 to see them again. TensorFlow 2.21 writes its
import-time lines before it reads that variable: `QuietTensorFlowImport`
filters them by the same levels. The binaries install it (`cli.run`), and
so do worker processes that load a model (`serving.embed_tracks`).
"""

import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile

# absl's C++ line prefix ("I0000 00:00:1796319248.236745   31021 port.cc:153] ...")
# and the notice absl prints before its first such line.
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d\d")
_ABSL_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called"


def hidden(line: str, min_level: int) -> bool:
    """Whether TF_CPP_MIN_LOG_LEVEL=`min_level` hides this start-up line (1: INFO,
    2: and WARNING, 3: and ERROR; FATAL always shows)."""
    if line.startswith(_ABSL_NOTICE):
        return min_level > 0
    match = _ABSL_LINE.match(line)
    return bool(match) and "IWE".find(match.group(1)) in range(min_level)


class QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """On `sys.meta_path`: the first `import tensorflow` runs with file
    descriptor 2 caught, then replays what TF_CPP_MIN_LOG_LEVEL lets through
    (a traceback, an error line) to stderr. Imports TensorFlow only when the
    job does: bin/extract's processes never do."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Quiet(spec.loader)
        return spec


class _Quiet(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        min_level = int(os.environ.get("TF_CPP_MIN_LOG_LEVEL") or 0)
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as caught:
            os.dup2(caught.fileno(), 2)
            try:
                self.loader.exec_module(module)
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                caught.seek(0)
                for line in caught.read().decode(errors="replace").splitlines():
                    if not hidden(line, min_level):
                        print(line, file=sys.stderr)


def quiet_tensorflow_import() -> None:
    """Installs `QuietTensorFlowImport` unless TensorFlow is imported already."""
    if "tensorflow" not in sys.modules and not any(
        isinstance(f, QuietTensorFlowImport) for f in sys.meta_path
    ):
        sys.meta_path.insert(0, QuietTensorFlowImport())
