"""Consult a rules cdb for one client (I/O shell around rules.keys).

The file is opened afresh for every call and read without mmap, so that
tcprules can rename a new cdb into place at any moment and a file truncated in
place can never kill the caller with SIGBUS.
"""

from __future__ import annotations

import errno
import os
import stat

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
                        return key, decode_value(data)
            finally:
                db.close()
        finally:
            os.close(fd)
    except OSError as exc:
        err = exc.errno
        if err is None or err == 0:
            err = errno.EPROTO  # cdbx reports a corrupt file without errno
        raise RulesReadError(path, err) from None
    return None


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
