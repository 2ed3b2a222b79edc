"""The password file on disk: read it, replace it atomically under a lock.

An update (add, remove) holds an exclusive lock on PATH.lock for its whole
read-modify-write, so two updates at once cannot lose one another's change;
readers take no lock, because the new file is written to a temporary file
in the same directory (exclusive create, fsync), renamed over the old one,
and the directory fsynced: a reader sees the old file or the new one.

The file keeps its mode (0600, or 0640 when it already was, for a group that
runs smtpd-child) and its group; a new file is 0600.
"""

import errno
import fcntl
import os


class StoreError(Exception):
    """An I/O failure, with the path and the errno text."""


def _error(what: str, path: str, exc: OSError) -> StoreError:
    return StoreError(f"unable to {what} {path}: {exc.strerror or exc}")


def read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise _error("read", path, exc) from None


def _read_if_present(path: str):
    """(contents, stat) or (b"", None) when the file does not exist yet."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return b"", None
        raise _error("read", path, exc) from None
    try:
        st = os.fstat(fd)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks), st
    except OSError as exc:
        raise _error("read", path, exc) from None
    finally:
        os.close(fd)


def update(path: str, change):
    """Apply `change(old bytes) -> (new bytes, result)` to the file under
    the lock and return result; when new is None nothing is written.

    A symlink is followed: the file it names is replaced, the link stays."""
    path = os.path.realpath(path)
    lock_path = path + ".lock"
    try:
        lock = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise _error("open lock file", lock_path, exc) from None
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError as exc:
            raise _error("lock", lock_path, exc) from None
        old, st = _read_if_present(path)
        new, result = change(old)
        if new is not None:
            _replace(path, new, st)
        return result
    finally:
        os.close(lock)      # releases the lock


def _replace(path: str, data: bytes, old_stat) -> None:
    directory = os.path.dirname(path) or "."
    temp = os.path.join(directory, f".{os.path.basename(path)}.tmp.{os.getpid()}.{os.urandom(4).hex()}")
    mode = 0o640 if old_stat is not None and old_stat.st_mode & 0o040 else 0o600
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except OSError as exc:
        raise _error("create", temp, exc) from None
    try:
        try:
            if old_stat is not None and old_stat.st_gid != os.getegid():
                try:
                    os.fchown(fd, -1, old_stat.st_gid)
                except OSError:
                    pass            # not a member of that group: the file stays ours
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, path)
    except OSError as exc:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise _error("write", path, exc) from None
    try:
        dirfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
    except OSError as exc:
        raise _error("sync directory", directory, exc) from None
