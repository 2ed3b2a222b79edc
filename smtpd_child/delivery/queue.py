"""Where accepted mail goes: a qmail-queue program, or the built-in spool.

Both backends have the same life cycle, driven by main.py:
  open(sender, recipients) -> bool   False: answer `451 qqt failure`
  write(bytes)                       message bytes (LF line ends)
  abort()                            nothing may be queued
  commit() -> reply bytes            `250 ok ...` only once the mail is safe
"""

import os
import select
# The C module itself: the `signal` wrapper imports enum, about 4 ms of
# every session's start-up, for names this module does not use.
import _signal as signal

from smtpd_child.smtp import replies
from smtpd_child.delivery import spoolfile
from smtpd_child.smtp.envelope import envelope_bytes

CHUNK = 65536


class QueueProgram:
    """qmail-queue's interface: message on the child's fd 0, envelope on fd 1.

    The program inherits our environment and working directory (main.py has
    already changed to the qmail home, as qmail-smtpd does).  Its exit code
    is mapped to qmail's replies; if it cannot be waited for (SIGCHLD
    ignored) the answer is a 451, never a 250.  A program that takes no
    input, or does not exit, for `timeout` seconds is killed: `451 qq timeout`.
    """

    def __init__(self, path: str, clock, environment, timeout: float = 1200):
        self.path = path
        self.clock = clock
        self.environment = environment
        self.timeout = timeout         # seconds the program may take input or to exit
        self.timed_out = False
        self.pid = self.last_pid = None
        self.message_fd = self.envelope_fd = None
        self.write_error = False
        self.exec_failed = False
        self.envelope = b""

    def open(self, sender, recipients) -> bool:
        self.write_error = self.exec_failed = self.timed_out = False
        self.envelope = envelope_bytes(sender, recipients)
        try:
            message_r, self.message_fd = os.pipe()
            envelope_r, self.envelope_fd = os.pipe()
        except OSError:
            return False
        try:
            self.pid = os.posix_spawn(
                self.path, [self.path], self.environment,
                file_actions=[(os.POSIX_SPAWN_DUP2, message_r, 0),
                              (os.POSIX_SPAWN_DUP2, envelope_r, 1)],
                setsigdef=(signal.SIGPIPE, signal.SIGCHLD))
        except (OSError, ValueError):     # ValueError: an empty program name
            # qmail's child would exit 120: swallow the data, then say so.
            self.exec_failed = True
            self.pid = None
        finally:
            os.close(message_r)
            os.close(envelope_r)
        os.set_blocking(self.message_fd, False)
        os.set_blocking(self.envelope_fd, False)
        return True

    def write(self, data: bytes) -> None:
        if self.write_error or self.exec_failed or self.timed_out:
            return
        self._write_all(self.message_fd, data)

    def _write_all(self, fd, data):
        view = memoryview(data)
        try:
            while view:
                try:
                    view = view[os.write(fd, view[:CHUNK]):]
                except BlockingIOError:
                    if not select.select([], [fd], [], self.timeout)[1]:
                        self._kill_stuck()
                        return
        except OSError:
            self.write_error = True     # the program died early; its status tells why

    def _kill_stuck(self):
        self.timed_out = True
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass

    def abort(self) -> None:
        # Closing both pipes before the envelope's final NUL makes qmail-queue
        # exit without queueing anything.
        self._close_pipes()
        self._wait()

    def commit(self) -> bytes:
        if self.exec_failed:
            self._close_pipes()
            return replies.queue_failure(replies.qq_status(120))
        os.close(self.message_fd)
        self.message_fd = None
        if not self.timed_out:
            self._write_all(self.envelope_fd, self.envelope)
        self._close_pipes()
        status = self._wait()
        if self.timed_out:
            return replies.queue_failure(replies.qq_status(52))
        if status is None:
            return replies.queue_failure(replies.QQ_WAITPID)
        if os.WIFSIGNALED(status):
            return replies.queue_failure(replies.QQ_CRASHED)
        code = os.WEXITSTATUS(status)
        if code == 0 and not self.write_error:
            return replies.accepted(self.clock(), self.last_pid)
        if code == 0:
            return replies.queue_failure(replies.QQ_READ_ERROR)
        return replies.queue_failure(replies.qq_status(code))

    def _close_pipes(self):
        for name in ("message_fd", "envelope_fd"):
            fd = getattr(self, name)
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
                setattr(self, name, None)

    def _exits_in_time(self, pid) -> bool:
        """Wait up to the timeout for the program to end (pidfd; no SIGCHLD needed)."""
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            return True      # already reaped (SIGCHLD ignored) or no pidfd: waitpid decides
        try:
            return bool(select.select([pidfd], [], [], self.timeout)[0])
        finally:
            os.close(pidfd)

    def _wait(self):
        """The child's wait status, or None if it could not be waited for."""
        pid, self.pid = self.pid, None
        self.last_pid = pid
        if pid is None:
            return None
        if not self._exits_in_time(pid):
            self.timed_out = True
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        while True:
            try:
                return os.waitpid(pid, 0)[1]
            except InterruptedError:
                continue
            except ChildProcessError:
                return None


class Spool:
    """The built-in durable spool: `<dir>/tmp` while writing, `<dir>/new` when safe.

    A message is written to tmp/, fsynced, renamed into new/ and new/ is
    fsynced before commit() returns the 250; an aborted or failed message is
    removed from tmp/, so new/ only ever holds complete messages.
    """

    def __init__(self, directory: str, clock):
        self.directory = directory
        self.clock = clock
        self.file = None
        self.name = None
        self.failed = False

    def open(self, sender, recipients) -> bool:
        if not os.path.isdir(self.directory):
            return False
        tmp = os.path.join(self.directory, "tmp")
        try:
            created = False
            for sub in (tmp, os.path.join(self.directory, "new")):
                if not os.path.isdir(sub):
                    os.makedirs(sub, exist_ok=True)
                    created = True
            if created:
                # The new directory entries must be durable before any 250.
                _fsync_directory(self.directory)
            self.name = f"{self.clock()}.{os.getpid()}.{os.urandom(6).hex()}"
            fd = os.open(os.path.join(tmp, self.name),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError:
            return False
        self.file = os.fdopen(fd, "wb", buffering=CHUNK)
        self.failed = False
        self.write(spoolfile.header(sender, recipients))
        return True

    def write(self, data: bytes) -> None:
        if self.failed:
            return
        try:
            self.file.write(data)
        except OSError:
            self.failed = True

    def abort(self) -> None:
        self._discard()

    def commit(self) -> bytes:
        if self.failed:
            self._discard()
            return replies.queue_failure(replies.qq_status(53))
        tmp_path = os.path.join(self.directory, "tmp", self.name)
        new_dir = os.path.join(self.directory, "new")
        new_path = os.path.join(new_dir, self.name)
        renamed = False
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            self.file = None
            os.rename(tmp_path, new_path)
            renamed = True
            _fsync_directory(new_dir)
        except OSError:
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
