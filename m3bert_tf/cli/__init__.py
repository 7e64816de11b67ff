"""What every binary does around its one library call: quiet framework logs,
flags parsed by absl, and usage errors as one line with exit status 2.

    cli.run(flags.define_pretrain_flags, main)   # flags: `cli/flags.py`

TensorFlow's C++ start-up lines (CUDA factory registration, oneDNN notices)
and absl's INFO lines tell a user nothing they can act on; set
TF_CPP_MIN_LOG_LEVEL=0 to see them again. (TensorFlow 2.21 writes its
import-time lines before it reads that variable: `QuietTensorFlowImport`
filters them by the same levels.)
"""

import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

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


class UsageError(ValueError):
    """A flag value the job cannot use; its message names the config field,
    printed as the flag (`flags.translate`)."""


def run(define_flags, main) -> None:
    """Defines the flags, parses them and runs `main(argv)`.

    A ValueError raised while the job's config is built (raised as or
    wrapped in `UsageError` by the binary), or an unknown/invalid flag, ends
    the process with one line on stderr and status 2, creating nothing.
    """
    from absl import app, flags
    from absl import logging as absl_logging

    if "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, QuietTensorFlowImport())
    define_flags()
    from m3bert_tf.cli.flags import show_in_help

    show_in_help()
    prog = os.path.basename(sys.argv[0])

    def parse(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:
            print(f"{prog}: {e} (--help lists the flags)", file=sys.stderr)
            sys.exit(2)

    def wrapped(argv):
        absl_logging.set_verbosity(absl_logging.WARNING)
        try:
            main(argv)
        except UsageError as e:
            from m3bert_tf.cli.flags import translate

            print(f"{prog}: {translate(str(e))}", file=sys.stderr)
            sys.exit(2)

    try:
        app.run(wrapped, flags_parser=parse)
    except SystemExit as e:
        _exit_past_tfio(e)
        raise


def _exit_past_tfio(e: SystemExit) -> None:
    """Ends the process without C++ static destructors once tensorflow-io's
    file systems were loaded: tensorflow-io 0.37.1's S3 client aborts in them
    ("pure virtual method called", exit 134) after a job that succeeded
    (tensorflow/io#2039; the fix is unreleased). Python's own exit handlers
    run first; the status is the job's."""
    from m3bert_tf.io import storage

    if not storage.tfio_loaded():
        return
    import atexit

    code = e.code  # as Python treats it: None is success, a message is printed, status 1
    if not isinstance(code, int):
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def config_or_usage_error(build):
    """`build()`, with its ValueError turned into a UsageError."""
    try:
        return build()
    except ValueError as e:
        raise UsageError(str(e)) from None
