"""An exclusive lock on an output or run directory, held for a job's life.

    with DirectoryLock(output_dir, "output_dir"):
        ...   # a second job on the same directory is refused at once

The lock is `fcntl.flock` on `<dir>/.m3bert.lock`, which holds the holder's
pid (local directories and file:// URLs; an object store such as gs:// has
no file locks: the job says so and goes on unlocked). The kernel drops it
when the holder dies, so a lock left by a killed run is taken over by the
next one (and said so); a live holder's is never broken. A directory the lock
created and the job left empty (it stopped on bad input before writing
anything) is removed on release: a usage error leaves no debris.
"""

import fcntl
import os
import shutil

LOCK_NAME = ".m3bert.lock"

# The descriptors of the locks this process holds. A child forked while one is
# held (the extraction job's workers) closes its copies at once: it never
# holds the directory, and no lock outlives a killed job in its children.
_HELD: set[int] = set()


def _close_in_child() -> None:
    for fd in _HELD:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


class DirectoryInUse(RuntimeError):
    """Another live process holds the directory's lock."""


class DirectoryLock:
    """Exclusive use of `directory` (created if missing) by this process.

    Args:
      directory: the output or run directory.
      field: the config field or flag that named it, for the message.
      log: one-line messages (a stale lock taken over).
    """

    def __init__(self, directory: str, field: str, log=None, wait: bool = False):
        self.directory = directory
        self.field = field
        self.log = log or (lambda msg: None)
        self.wait = wait  # block until the holder is done (said once) instead of refusing
        self._fd = None
        self._created = None  # the topmost directory acquire() created

    @property
    def path(self) -> str:
        return os.path.join(self.directory, LOCK_NAME)

    def acquire(self) -> "DirectoryLock":
        from m3bert_tf.io import storage

        local = storage.local_path(self.directory)
        if local is None:  # gs://, s3://...: no file locks on object stores
            storage.makedirs(self.directory)
            self.log(
                f"{self.directory} is remote: not locked (run one job on it at a time)"
            )
            return self
        top = os.path.abspath(local)
        while not os.path.exists(os.path.dirname(top)):
            top = os.path.dirname(top)
        self._created = None if os.path.exists(top) else top
        os.makedirs(local, exist_ok=True)
        fd = os.open(os.path.join(local, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            if not self.wait:
                os.close(fd)
                raise DirectoryInUse(
                    f"{self.field}={self.directory} is in use by another job (pid {holder}); "
                    f"wait for it to finish, or use another {self.field}"
                ) from None
            self.log(
                f"waiting for another job (pid {holder}) to finish in {self.directory}"
            )
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.lseek(fd, 0, os.SEEK_SET)  # then as any taker: its pid, if it died
        previous = os.read(fd, 64).decode(errors="replace").strip()
        if previous:
            self.log(
                f"took over the lock of an ended job (pid {previous}) on {self.directory}"
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        _HELD.add(fd)
        return self

    def release(self) -> None:
        if self._fd is not None and self._fd not in _HELD:  # a forked child's copy
            self._fd = None
        if self._fd is not None:
            _HELD.discard(self._fd)
            os.ftruncate(self._fd, 0)  # an empty file: released cleanly
            if self._created and _only_lock_files(self._created):
                shutil.rmtree(self._created, ignore_errors=True)  # still locked: ours
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "DirectoryLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def holder(directory: str) -> str | None:
    """The pid of the live job that holds `directory`'s lock, or None (no
    lock file, a released or stale one, a remote directory). Creates nothing."""
    path = os.path.join(directory, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.read(fd, 64).decode(errors="replace").strip() or "unknown"
    finally:
        os.close(fd)
    return None


def _only_lock_files(directory: str) -> bool:
    """True when `directory` holds no file but lock files (empty folders aside)."""
    return all(name == LOCK_NAME for _, _, names in os.walk(directory) for name in names)
