"""Consult a rules cdb for one client (I/O shell around rules.keys).

The file is opened afresh for every find_rule call and read without mmap, so
that tcprules can rename a new cdb into place at any moment and a file
truncated in place can never kill the caller with SIGBUS.  RuleCache keeps
the answers of a file that stat() shows unchanged (the server's parent asks
for every connection); it never serves an answer from a replaced or changed
file (see its docstring).
"""

from __future__ import annotations

import errno
import os
import stat
import time
from typing import Callable

import cdbx

from ..errstr import error_str
from .keys import RuleValue, candidate_keys, decode_value


class RulesReadError(Exception):
    """The rules file could not be read; `text` is the djb-style reason."""

    def __init__(self, path: str, err: int | None):
        self.path = path
        self.errno = err
        self.text = error_str(err if err is not None else errno.EPROTO)
        super().__init__(f"unable to read {path}: {self.text}")


def find_rule(path: str, ip: str, host: bytes | None = None,
              info: bytes | None = None) -> tuple[bytes, RuleValue] | None:
    """Return (matching key, decoded rule) or None when no key matches.

    Raises RulesReadError when the file cannot be opened or read (missing,
    unreadable, a directory, corrupt): callers drop the connection then,
    except for a missing file under -X, which they check via `.errno`.
    """
    return _read(path, ip, host, info)[0]


def _read(path: str, ip: str, host: bytes | None,
          info: bytes | None) -> tuple[tuple[bytes, RuleValue] | None, os.stat_result]:
    """find_rule's answer and the fstat of the descriptor it was read through."""
    try:
        # O_NONBLOCK, as the original's open_read: a FIFO put in place of the
        # cdb must never block the caller.  Only a regular file is a cdb.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode):
                raise OSError(errno.EISDIR if stat.S_ISDIR(status.st_mode) else errno.EPROTO, path)
            if status.st_size == 0:
                # The original's mmap of an empty file fails with EINVAL;
                # keep its message ("invalid argument") for the same file.
                raise OSError(errno.EINVAL, path)
            db = cdbx.CDB(fd, mmap=False)
            try:
                for key in candidate_keys(ip, host, info):
                    data = db.get(key)
                    if data is not None:
                        return (key, decode_value(data)), status
            finally:
                db.close()
        finally:
            os.close(fd)
    except OSError as exc:
        err = exc.errno
        if err is None or err == 0:
            err = errno.EPROTO  # cdbx reports a corrupt file without errno
        raise RulesReadError(path, err) from None
    return None, status


def _identity(status: os.stat_result) -> tuple[int, int, int, int, int]:
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns,
            status.st_ctime_ns)


class RuleCache:
    """find_rule for a server that asks about one rules file for every
    connection: the answers read from the file are kept, and reused while
    stat() says the file at `path` is still the very one they were read from.

    Why a kept answer can never be stale: it is served only while stat(path)
    gives the same (device, inode, size, mtime_ns, ctime_ns) as the fstat()
    of the descriptor it was read through.  tcprules renames a new file into
    place, and that file existed beside the old one, so its inode differs.
    Any other change -- a write in place, a chmod, a rename, a new file that
    reuses the inode number of a deleted one -- sets the ctime of the file
    at `path` to the time of the change, which the kernel cannot forge.
    Answers are kept only from a file whose last change (ctime and mtime)
    was at least SETTLED_NS before the fstat, by the clock file times come
    from: a later change then gets a later ctime, even on a filesystem whose
    timestamps are coarse (one clock tick, or whole seconds), so it never
    matches the kept identity.  A file changed recently is read afresh for
    every connection until it has settled.  (The one assumption: the clock
    is not stepped back onto the very nanosecond of an earlier change.)
    """

    SETTLED_NS = 5_000_000_000
    LIMIT = 4096            # distinct clients kept; then the answers start over

    def __init__(self, path: str, clock: Callable[[], int] = time.time_ns) -> None:
        self.path = path
        self._clock = clock
        self._identity: tuple[int, int, int, int, int] | None = None
        self._answers: dict[tuple, tuple[bytes, RuleValue] | None] = {}
        self.hits = 0       # answers served without reading the file (tests)

    def find(self, ip: str, host: bytes | None = None,
             info: bytes | None = None) -> tuple[bytes, RuleValue] | None:
        """find_rule(path, ip, host, info), raising RulesReadError the same way."""
        query = (ip, host, info)
        if self._identity is not None:
            try:
                now = _identity(os.stat(self.path))
            except OSError:
                now = None      # find_rule below says why
            if now == self._identity:
                try:
                    answer = self._answers[query]
                except KeyError:
                    pass
                else:
                    self.hits += 1
                    return answer
        started = self._clock()          # before the fstat, see above
        answer, status = _read(self.path, ip, host, info)
        identity = _identity(status)
        if max(status.st_ctime_ns, status.st_mtime_ns) <= started - self.SETTLED_NS:
            if identity != self._identity or len(self._answers) >= self.LIMIT:
                self._identity = identity
                self._answers = {}
            self._answers[query] = answer
        else:
            self._identity = None
            self._answers = {}
        return answer


def rule_for(path: str, missing_ok: bool, ip: str, host: bytes | None = None,
             info: bytes | None = None) -> RuleValue | None:
    """The rule deciding this client, or None when no key matches or (with
    `missing_ok`, tcpserver's -X) the file does not exist.  Any other read
    problem raises RulesReadError: the caller drops the connection."""
    try:
        found = find_rule(path, ip, host, info)
    except RulesReadError as exc:
        if exc.errno == errno.ENOENT and missing_ok:
            return None
        raise
    return found[1] if found is not None else None
