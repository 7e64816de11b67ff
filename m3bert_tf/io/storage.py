"""Every file the project reads or writes goes through here.

    with storage.open("gs://bucket/shards/manifest.json") as f: ...
    storage.write_atomic(path, text)      storage.glob("gs://bucket/*.tfrecord")

A URL (`scheme://...`) goes through `tf.io.gfile`: gs:// (built into
TensorFlow), s3:// and hdfs:// (tensorflow-io's file systems, loaded on
first use), file:// (the local disk through TensorFlow). A plain path is
the local file system through the OS, with the same semantics, so that
processes that never touch a URL (extraction workers) do not load
TensorFlow. Both sides behave alike; tests run whole jobs on file:// URLs.

Renames on object stores (gs://, s3://) are a copy and a delete, not
atomic: a reader never sees a half-written file under the final name, but
a job killed between the copy and the delete leaves its temporary file,
which the next run removes like any other debris.
"""

import builtins
import contextlib
import errno
import glob as glob_lib
import hashlib
import os
import posixpath
import shutil
import tempfile

# Files being written (atomic writes, shards, spills); only names with this
# suffix are ever removed as debris of a killed job.
TMP_SUFFIX = ".m3bert-tmp"

# Schemes whose file systems tensorflow-io registers when imported.
_TFIO_SCHEMES = ("s3", "hdfs", "viewfs", "az", "http", "https")
_tfio_loaded = False


# What only the side being written can cause: a full disk or quota, a
# read-only file system, a file-size limit. Reading an input never does.
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


class OutputError(OSError):
    """A write to a job's output failed (no space, read-only, a size limit,
    a short write): the job stops with this one line, which names the path,
    and never records it as an input file's failure. Nothing partly written
    is kept under a final name; a rerun resumes."""

    def __str__(self) -> str:
        return (
            f"{self.filename}: cannot write ({self.strerror}); free space there or make "
            "it writable, then run the same command again: it resumes"
        )


def is_output_error(e: BaseException) -> bool:
    """Whether `e` can only have come from the side being written."""
    return isinstance(e, OutputError) or (
        isinstance(e, OSError) and e.errno in OUTPUT_ERRNOS
    )


@contextlib.contextmanager
def writing(path):
    """Any OSError raised inside becomes an `OutputError` naming `path`."""
    try:
        yield
    except OutputError:
        raise
    except OSError as e:
        raise OutputError(e.errno, e.strerror or str(e), str(path)) from None


def pwrite_all(fd: int, data, offset: int, path) -> None:
    """Writes all of `data` at `offset` of `fd`: a short write (the disk
    filled) is retried from where it stopped, so it either fails with
    `OutputError` naming `path` or leaves every byte written."""
    view = memoryview(data).cast("B")
    with writing(path):
        while view:
            written = os.pwrite(fd, view, offset)
            if written <= 0:
                raise OSError(errno.ENOSPC, "nothing written (no space left?)")
            view, offset = view[written:], offset + written


def is_url(path) -> bool:
    """Whether `path` names a file system by scheme ("gs://b/x", "file:///x")."""
    return "://" in str(path)


def scheme(path) -> str:
    return str(path).split("://", 1)[0] if is_url(path) else ""


TFIO_EXTRA = "pip install 'm3bert_tf[tfio]'"


def gfile(path):
    """`tf.io.gfile` with `path`'s file system registered (tensorflow-io's
    for s3://, hdfs://, az://): what code that hands a user's path to
    TensorFlow (tf.data readers, globbing shards) calls first."""
    global _tfio_loaded
    import tensorflow as tf

    if scheme(path) in _TFIO_SCHEMES and not _tfio_loaded:
        _load_tfio(path, tf)
        _tfio_loaded = True
    return tf.io.gfile


def load_optional_filesystems() -> bool:
    """Registers tensorflow-io's file systems where its line is installed
    (a tf.data service worker reads whatever paths the job sends it);
    returns whether they loaded. Never raises."""
    try:
        gfile("s3://")
    except OSError:
        pass
    return _tfio_loaded


def tfio_loaded() -> bool:
    """Whether this process loaded tensorflow-io's file systems."""
    return _tfio_loaded


def _load_tfio(path, tf) -> None:
    """Registers tensorflow-io's file systems, or raises OSError in one line
    naming the extra: tensorflow-io is not installed, or its native ops do not
    load on this TensorFlow (it warns rather than raises then; the scheme
    staying unregistered is what tells)."""
    import warnings

    line = (
        f"{path}: the {scheme(path)}:// file system needs tensorflow-io, which loads "
        f"only with TensorFlow 2.16/2.17 (this is {tf.__version__}): install the "
        f"tensorflow-io line with {TFIO_EXTRA} (TensorFlow 2.17.1, Python 3.10-3.12)"
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a plugin that does not load: told below
            import tensorflow_io  # noqa: F401 (registers s3://, hdfs://, az://, http://)
    except Exception as e:  # ImportError, or a native library that does not load
        raise OSError(f"{line}; importing it: {type(e).__name__}") from None
    if scheme(path) not in tf.io.gfile.get_registered_schemes():
        raise OSError(f"{line}; its {scheme(path)}:// file system did not register")


def user_cache_dir() -> str:
    """`$XDG_CACHE_HOME` (or ~/.cache)/m3bert_tf: what the package builds once
    per environment (librosa's numba kernels, the feature filter banks)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache"
    )
    return os.path.join(base, "m3bert_tf")


def local_path(path) -> str | None:
    """The OS path of a plain path or a file:// URL; None for other URLs."""
    path = str(path)
    if path.startswith("file://"):
        return path[len("file://") :]
    return None if is_url(path) else path


class LocalScratch:
    """A local directory for a job's temporary files while it writes `output_dir`.

    On this machine, `<output_dir>/<subdirectory>` (or `output_dir` itself):
    the job clears a killed run's leftovers there under its directory lock,
    and `close` leaves it. For a URL, a new directory of the job's own under
    the system's temporary directory, removed by `close`: jobs writing to
    different URLs must not share, or clear, one.
    """

    def __init__(self, output_dir, subdirectory: str = "", prefix: str = "m3bert-"):
        local = local_path(output_dir)
        self.private = local is None
        if self.private:
            self.path = tempfile.mkdtemp(prefix=prefix)
        else:
            self.path = os.path.join(local, subdirectory) if subdirectory else local

    def close(self) -> None:
        if self.private:
            shutil.rmtree(self.path, ignore_errors=True)


def abspath(path) -> str:
    """An absolute form of `path` (a URL is one already)."""
    return str(path) if is_url(path) else os.path.abspath(path)


def join_normalized(base: str, relative: str) -> str:
    """`relative` resolved against the directory `base` ("a/../b" collapsed;
    an absolute `relative` or a URL stands alone), URLs kept intact."""
    if is_url(relative) or os.path.isabs(relative) and not is_url(base):
        return relative if is_url(relative) else os.path.normpath(relative)
    if not is_url(base):
        return os.path.normpath(os.path.join(base, relative))
    head, rest = str(base).split("://", 1)
    joined = posixpath.normpath(posixpath.join(rest, relative))
    return f"{head}://{'/' if rest.startswith('/') and not joined.startswith('/') else ''}{joined}"


def open(path, mode: str = "r", newline: str | None = None):  # noqa: A001
    """A file object: the OS's for a plain path, `tf.io.gfile.GFile` for a URL
    (text modes read and write str, binary modes bytes, both seekable for
    reading)."""
    if not is_url(path):
        return builtins.open(path, mode, newline=newline)
    return gfile(path).GFile(str(path), mode)


def exists(path) -> bool:
    return gfile(path).exists(str(path)) if is_url(path) else os.path.exists(path)


def isdir(path) -> bool:
    return gfile(path).isdir(str(path)) if is_url(path) else os.path.isdir(path)


def isfile(path) -> bool:
    return exists(path) and not isdir(path)


def makedirs(path) -> None:
    if is_url(path):
        gfile(path).makedirs(str(path))
    else:
        os.makedirs(path, exist_ok=True)


def listdir(path) -> list[str]:
    names = gfile(path).listdir(str(path)) if is_url(path) else os.listdir(path)
    return [n.rstrip("/") for n in names]


def glob(pattern: str, recursive: bool = False) -> list[str]:
    """Matching paths. "**" (any depth) works on plain paths only; on a URL
    it matches one directory level, as tf.io.gfile.glob does."""
    if is_url(pattern):
        return sorted(gfile(pattern).glob(pattern))
    return sorted(glob_lib.glob(pattern, recursive=recursive))


def walk(top: str):
    """(directory, subdirectories, files) as os.walk yields them."""
    if is_url(top):
        for directory, subdirs, files in gfile(top).walk(top):
            yield directory, [d.rstrip("/") for d in subdirs], files
    else:
        yield from os.walk(top)


def size(path) -> int:
    """Bytes in a file (OSError when it is missing)."""
    if not is_url(path):
        return os.path.getsize(path)
    import tensorflow as tf

    try:
        return int(gfile(path).stat(str(path)).length)
    except tf.errors.NotFoundError:
        raise FileNotFoundError(2, "No such file or directory", str(path)) from None


def version_key(path) -> tuple:
    """What changes when a file is rewritten or replaced: (size, mtime in ns,
    inode) from the OS for a local file (TensorFlow's stat has whole
    seconds: a shard replaced within the second would look unchanged), (size,
    mtime) from the file system of a URL. For per-process caches of content
    digests; the digest, not this key, is what identifies content."""
    local = local_path(path)
    if local is not None:
        stat = os.stat(local)
        return stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev
    info = gfile(path).stat(str(path))
    return int(info.length), int(info.mtime_nsec)


def sha256(path) -> str:
    """The SHA-256 hex digest of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_or_none(path) -> str | None:
    """`sha256`, or None when the file cannot be read (missing, unreadable)."""
    try:
        return sha256(path)
    except OSError:
        return None


def sha256_many(paths: list, name: str = "checking files", interval: float = 5.0) -> dict:
    """{path: `sha256_or_none`} of many files (what a rerun compares its
    inputs by): two reads in flight per core, hashlib releasing the GIL (about
    1 GB/s a core from the page cache), a progress line `name` past 100 files."""
    from concurrent import futures

    from m3bert_tf.io.progress import Progress

    progress = Progress(name, len(paths), "files", interval)
    out = {}
    with futures.ThreadPoolExecutor(2 * (os.cpu_count() or 1)) as pool:
        digests = pool.map(sha256_or_none, paths)
        for count, (path, digest) in enumerate(zip(paths, digests, strict=True), 1):
            out[path] = digest
            if len(paths) > 100:
                progress.update(count)
    return out


def remove(path) -> None:
    if is_url(path):
        gfile(path).remove(str(path))
    else:
        os.remove(path)


def rmtree(path) -> None:
    """Removes a directory and everything in it; nothing if it is missing."""
    if is_url(path):
        if gfile(path).exists(str(path)):
            gfile(path).rmtree(str(path))
    else:
        shutil.rmtree(path, ignore_errors=True)


def replace(source, target) -> None:
    """Renames `source` to `target`, replacing it (atomic on local disks)."""
    if is_url(source) or is_url(target):
        gfile(target).rename(str(source), str(target), overwrite=True)
    else:
        os.replace(source, target)


def put_file(local: str, path) -> None:
    """Moves the local file `local` to `path` (a rename on the local disk; a
    copy under a temporary name, a rename and the local file removed for a
    URL)."""
    with writing(path):
        if not is_url(path):
            os.replace(local, path)
            return
        tmp = str(path) + TMP_SUFFIX
        gfile(path).copy(local, tmp, overwrite=True)
        replace(tmp, path)
        os.remove(local)


def write_atomic(path, data: str | bytes) -> None:
    """Writes `data` under a temporary name (our TMP_SUFFIX: debris a rerun
    removes), then renames it to `path`, so a reader sees the old file or the
    whole new one."""
    tmp = str(path) + TMP_SUFFIX
    with writing(path):
        with open(tmp, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
            if not is_url(path):
                f.flush()
                os.fsync(f.fileno())
        replace(tmp, path)


def write_json(path, value) -> None:
    """Writes `value` as JSON (indent 1, a final newline) atomically
    (`write_atomic`): the one JSON writer of every record on disk."""
    import json

    write_atomic(path, json.dumps(value, indent=1) + "\n")


def read_json(path):
    """The JSON value stored at `path`."""
    import json

    with open(path) as f:
        return json.load(f)
