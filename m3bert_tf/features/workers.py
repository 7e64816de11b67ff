"""What a process that featurizes files one after another sets up once, and
what the job that starts such processes prepares for them.

    workers.prepare(feature_config)   # in the job's process, before its workers start
    workers.configure()               # after the extractor is built, in each worker
    workers.leave_interrupts_to_the_job()   # first thing in each worker process

- The caches workers only read: librosa's numba kernels (`kernels`, which two
  workers compiling at once could poison) and the filter banks (`banks`).

- One BLAS thread: the parallelism is across files (one process per core),
  and one thread also gives every worker count the same float rounding.
- glibc's allocator keeps freed memory for the next file: a 30 s clip's
  spectra and frames are ~100 MB of short-lived arrays, which glibc by default
  returns to the kernel (arrays over its adaptive mmap threshold, and the top
  of the heap beyond the trim threshold) and takes back page by page: 3,000 to
  5,500 page faults, 6-9 ms of kernel time (13 %) per file, measured
  2026-12-04 on an Intel Xeon. With a fixed 32 MB mmap threshold (glibc's
  largest) and no trimming, a worker's memory stays at its peak and is
  reused: still bounded by a block of audio (one worker extracting a 60 and
  a 180-minute file: 126 MB both; 111 MB with glibc's defaults).
"""

import ctypes
import signal
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest on 64-bit systems
TRIM_THRESHOLD = 2**31 - 1  # the largest mallopt takes (an int): no trimming


def keep_freed_memory() -> bool:
    """Sets glibc's two thresholds; False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and others
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return (
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    )


def prepare(feature_config, log=None) -> None:
    """Compiles the numba kernels and builds the filter bank of
    `feature_config` unless cached, so that workers only read both caches."""
    from m3bert_tf.features import banks, kernels

    kernels.ensure_compiled()
    banks.ensure(feature_config, log)


def leave_interrupts_to_the_job() -> None:
    """Ignores Ctrl-C (SIGINT) in this worker process: the terminal sends it
    to every process of the job, whose own process stops the workers and
    says so once (`cli.run`), instead of each worker printing a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def configure() -> None:
    """One BLAS thread (for the libraries loaded now: call it once the
    extractor is built) and the allocator settings above."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    keep_freed_memory()
