"""The relay-ctrl directory on disk: one file per client address.

Every operation goes through a descriptor of the directory and names that
names.canonical_address produced (or TEMP_PREFIX names), so nothing is ever
written or removed outside it, whatever the environment held.  Errors are
RecordError with the path and the errno text, for the caller to log.
"""

import errno
import os
import stat

from smtpd_child.relayctrl.names import TEMP_PREFIX, is_fresh, is_record_name


class RecordError(Exception):
    pass


def _reason(path: str, what: str, exc: OSError) -> RecordError:
    return RecordError(f"unable to {what} {path}: {exc.strerror or exc}")


def open_directory(path: str) -> int:
    if not path:
        raise RecordError("RELAY_CTRL_DIR is not set")
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise _reason(path, "open directory", exc) from None


def in_directory(path: str, action):
    """action(dirfd) on the records directory, opened for it and closed
    after; what it returns.  RecordError when the directory cannot be
    opened.  (A plain function: contextlib would cost relay-ctrl-check, run
    for every connection, its import.)"""
    dirfd = open_directory(path)
    try:
        return action(dirfd)
    finally:
        os.close(dirfd)


def record(dirfd: int, dirpath: str, name: str, content: bytes) -> None:
    """Create the record `name`, or replace it (its time becomes now).

    Written under a temporary name and renamed: relay-ctrl-check sees either
    the old record or the new one, never a half-written file.  Not fsynced:
    a record lives minutes, and after a crash the client logs in again.
    """
    temp = f"{TEMP_PREFIX}{os.getpid()}.{os.urandom(6).hex()}"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644, dir_fd=dirfd)
    except OSError as exc:
        raise _reason(f"{dirpath}/{temp}", "create", exc) from None
    try:
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.rename(temp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
    except OSError as exc:
        try:
            os.unlink(temp, dir_fd=dirfd)
        except OSError:
            pass
        raise _reason(f"{dirpath}/{name}", "write", exc) from None


def recorded_at(dirfd: int, dirpath: str, name: str):
    """The record's modification time, or None when there is none.

    Only a regular file counts: a directory, fifo or symlink planted under
    an address's name relays nobody.
    """
    try:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise _reason(f"{dirpath}/{name}", "stat", exc) from None
    if not stat.S_ISREG(st.st_mode):
        raise RecordError(f"{dirpath}/{name} is not a regular file; ignored")
    return st.st_mtime


def remove_stale(dirfd: int, dirpath: str, expiry: int, now: float):
    """Remove records (and left-over temporary files) older than `expiry`.

    Returns (removed count, error lines).  Other files are left alone: the
    directory may be shared with relay-ctrl's own programs.
    """
    removed, problems = 0, []
    try:
        with os.scandir(dirfd) as entries:
            names = [entry.name for entry in entries]
    except OSError as exc:
        return 0, [str(_reason(dirpath, "read directory", exc))]
    for name in names:
        temporary = name.startswith(TEMP_PREFIX)
        if not temporary and not is_record_name(name):
            continue
        try:
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or is_fresh(st.st_mtime, now, expiry):
                continue
            os.unlink(name, dir_fd=dirfd)
            removed += 1
        except OSError as exc:
            if exc.errno != errno.ENOENT:       # gone meanwhile: nothing to do
                problems.append(str(_reason(f"{dirpath}/{name}", "remove", exc)))
    return removed, problems
