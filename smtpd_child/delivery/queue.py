"""Where accepted mail goes: a qmail-queue program, or the built-in spool (spool.py).

Both backends have the same life cycle, driven by main.py:
  open(sender, recipients) -> bool   False: answer `451 qqt failure`
  write(bytes)                       message bytes (LF line ends)
  abort()                            nothing may be queued
  commit() -> reply bytes            `250 ok ...` only once the mail is safe
Both take a `log` callable: every failure an administrator must fix (a
program that cannot run, a spool that cannot be written) is one line naming
the path and the reason; the client only ever sees qmail's reply.
"""

import os
import select
# The C module itself: the `signal` wrapper imports enum, about 4 ms of
# every session's start-up, for names this module does not use.
import _signal as signal

from smtpd_child.smtp import replies
# Re-exported: the driver takes both backends from this module.
from smtpd_child.delivery.spool import Spool  # noqa: F401
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

    def __init__(self, path: str, clock, environment, timeout: float = 1200, log=None):
        self.path = path
        self.log = log or _no_log
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
        except OSError as e:
            self.log(f"unable to make a pipe for the queue program: {e.strerror}")
            return False
        try:
            self.pid = os.posix_spawn(
                self.path, [self.path], self.environment,
                file_actions=[(os.POSIX_SPAWN_DUP2, message_r, 0),
                              (os.POSIX_SPAWN_DUP2, envelope_r, 1)],
                setsigdef=(signal.SIGPIPE, signal.SIGCHLD))
        except (OSError, ValueError) as e:     # ValueError: an empty program name
            # qmail's child would exit 120: swallow the data, then say so.
            self.exec_failed = True
            self.pid = None
            self.log(self._exec_problem(e))
        finally:
            os.close(message_r)
            os.close(envelope_r)
        os.set_blocking(self.message_fd, False)
        os.set_blocking(self.envelope_fd, False)
        return True

    def _exec_problem(self, error) -> str:
        if not self.path:
            return "unable to run the queue program: QMAILQUEUE is set but empty"
        reason = getattr(error, "strerror", None) or str(error)
        name = self.path
        if not os.path.isabs(name):
            # posix_spawn does not search PATH: the name is taken from the
            # qmail home, where main.py has changed to.
            name = f"{os.path.abspath(name)} (QMAILQUEUE={self.path} is relative to the qmail home)"
        return f"unable to run the queue program {name}: {reason}"

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


def _no_log(message: str) -> None:
    pass

