"""The built-in durable spool: `<dir>/tmp` while writing, `<dir>/new` when safe.

A message is written to tmp/, fsynced, renamed into new/ and new/ is fsynced
before commit() returns the 250; an aborted or failed message is removed from
tmp/, so new/ only ever holds complete messages.

Before each message the spool is checked: tmp/ and new/ are created 0700
whatever the umask, and a spool directory that other users can write (world-
writable, or group-writable without the setgid bit that marks a directory
shared with a group on purpose) is refused: whoever can write there can
plant or replace mail, or a symlink that decides where ours goes.  Every
refusal and failure is logged with the path and the reason.
"""

import errno
import os
import stat

from smtpd_child.smtp import replies
from smtpd_child.delivery import spoolfile

CHUNK = 65536
DIRECTORY_MODE = 0o700
EFFECTIVE_IDS = os.access in os.supports_effective_ids      # as open() will check


def mode_problem(mode: int):
    """Why a directory with this st_mode must not hold the spool, or None."""
    if mode & stat.S_IWOTH:
        return f"it is writable by every user (mode {stat.S_IMODE(mode):04o}); chmod o-w it"
    if mode & stat.S_IWGRP and not mode & stat.S_ISGID:
        return (f"it is writable by its group (mode {stat.S_IMODE(mode):04o}); chmod g-w it, "
                f"or chmod g+s it if the group shares the spool on purpose")
    return None


class Spool:
    def __init__(self, directory: str, clock, log=None):
        self.directory = directory
        self.clock = clock
        self.log = log or (lambda message: None)
        self.file = None
        self.name = None
        self.failed = None           # the first write error, logged at commit

    def open(self, sender, recipients) -> bool:
        tmp = os.path.join(self.directory, "tmp")
        if not self._ready(tmp):
            return False
        self.name = f"{self.clock()}.{os.getpid()}.{os.urandom(6).hex()}"
        path = os.path.join(tmp, self.name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            self.name = None
            self.log(f"unable to create {path}: {e.strerror}")
            return False
        try:
            # Held until the file is closed (or we die): sweep.py never
            # removes a tmp/ file whose writer is alive.
            os.lockf(fd, os.F_TLOCK, 0)
        except OSError:
            pass
        self.file = os.fdopen(fd, "wb", buffering=CHUNK)
        self.failed = None
        self.write(spoolfile.header(sender, recipients))
        return True

    def _ready(self, tmp) -> bool:
        """tmp/ and new/ exist, no one else can write the spool, new/ is writable."""
        new = os.path.join(self.directory, "new")
        created = False
        for path in (self.directory, tmp, new):
            try:
                info = os.stat(path)
            except FileNotFoundError as e:
                if path == self.directory:
                    self.log(f"unable to use the spool {path}: {e.strerror} (make it with "
                             f"mode 0700, owned by the user this program runs as)")
                    return False
                info = self._make(path)
                if info is None:
                    return False
                created = True
            except OSError as e:
                self.log(f"unable to use {path}: {e.strerror}")
                return False
            if not stat.S_ISDIR(info.st_mode):
                self.log(f"unable to use {path}: {os.strerror(errno.ENOTDIR)}")
                return False
            problem = mode_problem(info.st_mode)
            if problem is not None:
                self.log(f"refusing to write into {path}: {problem}")
                return False
        # new/ is only written at commit: find out now, before the client sends
        # the message, and say which directory and why.
        if not os.access(new, os.W_OK | os.X_OK, effective_ids=EFFECTIVE_IDS):
            self.log(f"unable to write into {new}: {os.strerror(errno.EACCES)}")
            return False
        if created:
            try:
                # The new directory entries must be durable before any 250.
                _fsync_directory(self.directory)
            except OSError as e:
                self.log(f"unable to fsync {self.directory}: {e.strerror}")
                return False
        return True

    def _make(self, path):
        """Create tmp/ or new/ with DIRECTORY_MODE; its stat, or None (logged)."""
        try:
            try:
                os.mkdir(path, DIRECTORY_MODE)
            except FileExistsError:
                pass                    # another session made it first: checked as found
            else:
                # The umask may have taken bits away: the mode is set, not
                # left to whatever umask the service was started with.
                os.chmod(path, DIRECTORY_MODE)
            return os.stat(path)
        except OSError as e:
            self.log(f"unable to create {path}: {e.strerror}")
            return None

    def write(self, data: bytes) -> None:
        if self.failed is not None:
            return
        try:
            self.file.write(data)
        except OSError as e:
            self.failed = e

    def abort(self) -> None:
        self._discard()

    def commit(self) -> bytes:
        tmp_path = os.path.join(self.directory, "tmp", self.name)
        if self.failed is not None:
            self.log(f"unable to write {tmp_path}: {self.failed.strerror}")
            self._discard()
            return replies.queue_failure(replies.qq_status(53))
        new_dir = os.path.join(self.directory, "new")
        new_path = os.path.join(new_dir, self.name)
        renamed = False
        step = f"write {tmp_path}"
        try:
            self.file.flush()
            step = f"fsync {tmp_path}"
            os.fsync(self.file.fileno())
            self.file.close()
            self.file = None
            step = f"move {tmp_path} into {new_dir}"
            os.rename(tmp_path, new_path)
            renamed = True
            step = f"fsync {new_dir}"
            _fsync_directory(new_dir)
        except OSError as e:
            self.log(f"unable to {step}: {e.strerror}")
            if renamed:
                # Not known to be durable, so the answer is 451 and the client
                # will send it again: withdraw this copy rather than deliver twice.
                try:
                    os.unlink(new_path)
                except OSError:
                    pass
            self._discard()
            return replies.queue_failure(replies.qq_status(53))
        self.name = None
        return replies.accepted(self.clock(), os.getpid())

    def _discard(self):
        if self.file is not None:
            try:
                self.file.close()
            except OSError:
                pass
            self.file = None
        if self.name is not None:
            try:
                os.unlink(os.path.join(self.directory, "tmp", self.name))
            except OSError:
                pass
            self.name = None


def _fsync_directory(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
