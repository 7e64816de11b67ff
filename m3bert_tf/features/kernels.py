"""librosa's numba kernels: compiled once per environment, in one place we control.

librosa compiles its numba kernels on first use and caches them (`cache=True`)
beside its sources by default. Two extraction workers that compile the same
kernel at once can leave a cache that crashes every later call with a
segmentation fault and no message (seen with `piptrack`'s
`_parabolic_interpolation`). So:

- `configure()` (run when `m3bert_tf` is imported, before librosa) points
  numba's cache at `cache_dir()`, a directory of ours per Python, numba and
  librosa version (`NUMBA_CACHE_DIR`; a value the user set is kept);
- `ensure_compiled()` (run by every job's parent before it starts workers,
  through `workers.prepare`, and by `make install`) compiles every kernel our code and the benchmarks'
  reference paths use, in a child process, under a file lock, so that no
  two processes ever write the cache at once and workers only read it. A
  child that fails (a cache that does not load can crash the process) has
  the cache removed and compiled again, with a message. A stamp of the
  checked cache's files makes this a directory listing on later calls.
"""

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys

from m3bert_tf.io import storage

CACHE_ENV = "NUMBA_CACHE_DIR"
STAMP_NAME = "checked.json"
LOCK_NAME = ".lock"


def cache_dir() -> str:
    """`storage.user_cache_dir()`/numba/<python>-<numba>-<librosa>."""
    from importlib import metadata

    versions = []
    for package in ("numba", "librosa"):
        try:
            versions.append(f"{package}{metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package}-none")
    python = f"py{sys.version_info.major}.{sys.version_info.minor}"
    return os.path.join(storage.user_cache_dir(), "numba", "-".join([python, *versions]))


def configure() -> None:
    """Points numba's cache at `cache_dir()` unless the environment names one."""
    if not os.environ.get(CACHE_ENV):
        os.environ[CACHE_ENV] = cache_dir()


def compile_all() -> None:
    """Runs every librosa kernel the project's code paths reach once: both
    feature sets, the tuning estimate (piptrack), HPSS and the descriptors of
    bin/correlate, on a few seconds of noise."""
    import warnings

    import librosa
    import numpy as np

    from m3bert_tf import schema
    from m3bert_tf.features.frames import FEATURE_SETS, FeatureConfig, FeatureExtractor

    noise = np.random.default_rng(0).standard_normal(3 * schema.SAMPLE_RATE)
    noise = noise.astype(np.float32)
    with warnings.catch_warnings():  # short noise: librosa warns about its low octaves
        warnings.simplefilter("ignore")
        for feature_set in FEATURE_SETS:
            FeatureExtractor(FeatureConfig(feature_set=feature_set))(noise)
        librosa.estimate_tuning(y=noise, sr=schema.SAMPLE_RATE)
        spectrum = np.abs(librosa.stft(noise, n_fft=schema.N_FFT))
        librosa.decompose.hpss(spectrum)
        librosa.feature.zero_crossing_rate(noise)


def _files(directory: str) -> list[tuple[str, int, int]]:
    out = []
    for root, _, names in os.walk(directory):
        for name in names:
            if name in (STAMP_NAME, LOCK_NAME):
                continue
            path = os.path.join(root, name)
            stat = os.stat(path)
            out.append((os.path.relpath(path, directory), stat.st_size, stat.st_mtime_ns))
    return sorted(out)


def _stamp(directory: str) -> str:
    listing = json.dumps([sys.executable, _files(directory)])
    return hashlib.sha256(listing.encode()).hexdigest()


def ensure_compiled(log=None) -> bool:
    """Makes sure the kernel cache is complete and loads; returns True when it
    compiled (or checked) now, False when the stamp said it was done.

    Raises:
      RuntimeError: the kernels cannot be compiled even into an empty cache.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    configure()
    directory = os.environ[CACHE_ENV]
    os.makedirs(directory, exist_ok=True)
    stamp_path = os.path.join(directory, STAMP_NAME)
    with open(os.path.join(directory, LOCK_NAME), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process compiling: wait for it
        try:
            with open(stamp_path) as f:
                if json.load(f).get("stamp") == _stamp(directory):
                    return False
        except (OSError, ValueError):
            pass
        if not _files(directory):
            log(
                f"compiling librosa's numba kernels once for this environment (into {directory})"
            )
        code = "from m3bert_tf.features.kernels import compile_all; compile_all()"
        for attempt in range(2):
            proc = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True,
                env={**os.environ, CACHE_ENV: directory},
            )  # fmt: skip
            if proc.returncode == 0:
                stamp = _stamp(directory)  # before the temporary file joins the listing
                with open(stamp_path + ".tmp", "w") as f:
                    json.dump({"stamp": stamp}, f)
                os.replace(stamp_path + ".tmp", stamp_path)
                return True
            if attempt == 0:
                log(
                    f"librosa's numba kernel cache in {directory} does not load (a check "
                    f"exited with {proc.returncode}): removed, compiling it again"
                )
                for name in os.listdir(directory):
                    if name != LOCK_NAME:
                        path = os.path.join(directory, name)
                        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        raise RuntimeError(
            f"librosa's numba kernels do not compile into {directory} "
            f"(exit {proc.returncode}): {proc.stderr.strip()[-1000:]}"
        )
