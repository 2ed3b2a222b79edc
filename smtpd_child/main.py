"""smtpd-child [checkprogram subprogram [args...]]: SMTP on fd 0/1 for
tcpserver, tcp-env/inetd, or plain pipes; with a checkpassword command, AUTH.

The driver around protocol.Session: read with a per-read timeout
(`timeoutsmtpd`) and an overall session deadline, write with the same
timeout, run the queue, exit 0 after QUIT and 1 otherwise.  Imports stay
small: the time from exec to the greeting is the cost of every connection,
so the queue, which the greeting does not need, is imported after it.
"""

import os
import select
# The C module itself: the `signal` wrapper imports enum, about 4 ms of
# every session's start-up, for names this module does not use.
import _signal as signal
import sys
import time

from smtpd_child import config
from smtpd_child.actions import KINDS as EXTENSION_ACTIONS, Extras, perform as perform_extension
from smtpd_child.actions import setup as setup_extensions
from smtpd_child.smtp import replies
from smtpd_child.smtp.protocol import (ABORT, CLOSE, COMMIT, FLUSH, INTERNAL_ERROR, OPEN, SEND,
                                  WRITE, Session)

READ_SIZE = 65536
# qmail-smtpd's output buffer size.  fd 1 stays blocking (it is often an open
# file description shared with a wrapper or inetd, which must never see
# O_NONBLOCK): select() says there is room, and a write this small then
# completes at once.
WRITE_SIZE = 512


def log(message: str) -> None:
    # One line whatever the text holds: a control byte (from an exception's
    # text, say) is written as \xNN, never raw into the administrator's log.
    if not message.isprintable():
        message = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in message)
    try:
        os.write(2, f"smtpd-child: {message}\n".encode(errors="replace"))
    except OSError:
        pass


NOMEM_LINE = (b"smtpd-child: out of memory, answered 421: is the memory limit "
              b"(softlimit -m) too low?\n")


def log_nomem() -> None:
    """A line for the administrator beside the client's 421; a constant,
    as formatting may itself fail now."""
    try:
        os.write(2, NOMEM_LINE)
    except Exception:
        pass


class Finished(Exception):
    def __init__(self, code):
        self.code = code


class Output:
    """Buffered replies on fd 1; a write that cannot finish in time ends the session."""

    def __init__(self, fd: int, timeout: float):
        self.fd = fd
        self.timeout = timeout
        self.deadline = None        # monotonic time; a slow reader cannot outlive it
        self.pending = bytearray()
        self.channel = None         # tls.Channel after STARTTLS

    def add(self, data: bytes) -> None:
        self.pending += data

    def flush(self) -> None:
        if self.channel is not None and self.pending:
            try:
                self.channel.send(bytes(self.pending), self._wait())
            except OSError:
                raise Finished(1) from None
            self.pending.clear()
        while self.pending:
            try:
                ready = select.select([], [self.fd], [], self._wait())[1]
            except InterruptedError:
                continue
            except (OSError, ValueError):
                raise Finished(1) from None
            if not ready:
                raise Finished(1)           # qmail: write timeout exits silently
            try:
                written = os.write(self.fd, self.pending[:WRITE_SIZE])
            except (BlockingIOError, InterruptedError):
                continue                    # (a descriptor made non-blocking by others)
            except OSError:
                raise Finished(1) from None
            del self.pending[:written]

    def _wait(self) -> float:
        """How long one write may wait: the write timeout, cut at the session
        deadline; past the deadline 0, so a reply (the 451) still goes out
        if there is room."""
        wait = self.timeout
        if self.deadline is not None:
            wait = max(0.0, min(wait, self.deadline - time.monotonic()))
        return wait


class LazyQueue:
    """The queue, built (and its module imported) when a message starts."""

    def __init__(self, make):
        self._make = make
        self._queue = None

    def __getattr__(self, name):
        if self._queue is None:
            self._queue = self._make()
        return getattr(self._queue, name)


class Driver:
    def __init__(self, settings, session, queue, output, extras=None):
        self.settings = settings
        self.session = session
        self.queue = queue
        self.output = output
        self.queue_open = False
        self.extras = extras or Extras(log=log)
        self.channel = None             # tls.Channel after STARTTLS
        self.deadline = None

    def run(self, started: float) -> int:
        try:
            deadline = started + self.settings.deadline
            self.output.deadline = self.deadline = deadline
            self.perform(self.session.greeting())
            while True:
                self.output.flush()            # before every blocking read (pipelining)
                data = self.read(deadline)
                self.perform(self.session.receive(data))
        except Finished as finished:
            code = finished.code
        except MemoryError:
            log_nomem()
            self.output.add(replies.OUT_OF_MEMORY)      # qmail's die_nomem()
            code = 1
        except Exception as e:       # a bug: one log line and a 421, never a traceback
            log(f"internal error: {type(e).__name__}: {e}")
            self.output.add(INTERNAL_ERROR)
            code = 1
        if self.queue_open:
            self.queue_open = False
            try:
                self.queue.abort()
            except Exception:
                pass
        try:
            self.output.flush()
        except Finished:
            pass
        if self.channel is not None:
            self.channel.release()
        return code

    def read(self, deadline: float) -> bytes:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.fail(replies.SESSION_DEADLINE)
            wait = min(self.settings.timeout, left)
            if self.channel is not None:
                data = self.channel.recv(wait)
                if data is None:
                    self.fail(replies.TIMEOUT if wait == self.settings.timeout
                              else replies.SESSION_DEADLINE)
                return data
            try:
                ready = select.select([0], [], [], wait)[0]
            except InterruptedError:
                continue
            except OSError:
                return b""                      # fd 0 unusable (closed): a read error
            if not ready:
                self.fail(replies.TIMEOUT if wait == self.settings.timeout
                          else replies.SESSION_DEADLINE)
            try:
                return os.read(0, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return b""                      # a read error is EOF: exit 1, no reply

    def fail(self, reply: bytes):
        self.output.add(reply)
        raise Finished(1)

    def end(self, code: int):
        raise Finished(code)

    def time_left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.fail(replies.SESSION_DEADLINE)
        return left

    def perform(self, actions) -> None:
        index = 0
        while index < len(actions):
            action = actions[index]
            index += 1
            kind = action[0]
            if kind == SEND:
                self.output.add(action[1])
            elif kind == FLUSH:
                self.output.flush()
            elif kind == WRITE:
                self.queue.write(action[1])
            elif kind == OPEN:
                self.queue_open = self.queue.open(action[1], action[2])
                actions += self.session.queue_opened(self.queue_open)
            elif kind == ABORT:
                self.queue_open = False
                self.queue.abort()
            elif kind == COMMIT:
                self.queue_open = False
                reply = self.queue.commit()
                if not reply.startswith(b"250"):
                    log(f"message refused by the queue: {reply.decode(errors='replace').strip()}")
                actions += self.session.queue_finished(reply)
            elif kind == CLOSE:
                raise Finished(action[1])
            elif kind in EXTENSION_ACTIONS:
                actions += perform_extension(self, action)


def main() -> None:
    started = time.monotonic()
    if len(sys.argv) == 2:
        _answer_info_request(sys.argv[1:])
    # A SIGCHLD inherited as ignored would make a failed queue look like success.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    clock = lambda: int(time.time())  # noqa: E731
    output = Output(1, config.DEFAULT_TIMEOUT)
    checker = sys.argv[1:] or None          # checkprogram subprogram [args...]
    if checker is not None and len(checker) < 2:
        log("usage: smtpd-child [checkprogram subprogram [args...]]")
        output.add(replies.CONTROLS)
        _exit(output, 100)
    try:
        settings = config.load(clock=clock, auth_checker=checker is not None)
        os.chdir(settings.qmailhome)            # as qmail-smtpd: relative paths are under it
    except MemoryError:
        log_nomem()
        output.add(replies.OUT_OF_MEMORY)
        _exit(output, 1)
    except (config.ControlsUnreadable, OSError) as e:
        log(str(e) if isinstance(e, config.ControlsUnreadable)
            else f"unable to enter the qmail home {e.filename}: {e.strerror}")
        output.add(replies.CONTROLS)
        _exit(output, 1)
    for warning in settings.warnings:
        log(warning)
    from smtpd_child.procenv import undo_startup_changes
    undo_startup_changes()      # qmail-queue and checkpassword get what we were given
    extras = setup_extensions(settings, checker, log, os.environ)
    output.timeout = settings.timeout

    def make_queue():
        from smtpd_child.delivery.queue import QueueProgram, Spool
        if settings.queue_program is not None:
            return QueueProgram(settings.queue_program, clock, os.environ, settings.timeout, log)
        return Spool(settings.spool_dir, clock, log)

    queue = LazyQueue(make_queue)
    code = Driver(settings, Session(settings.session), queue, output, extras).run(started)
    if settings.queue_program is None:
        _sweep_after(output, settings.spool_dir)
    _exit(output, code)


def _sweep_after(output, spool):
    """Once the client has its last reply: remove abandoned spool/tmp files
    (at most once per sweep.INTERVAL; see delivery/sweep.py)."""
    try:
        output.flush()
    except Finished:
        pass
    from smtpd_child.delivery import sweep
    try:
        sweep.maybe_sweep(spool, time.time())
    except Exception as e:      # never let housekeeping turn a session into an error
        log(f"unable to sweep {spool}/tmp: {e}")


def _exit(output, code):
    try:
        output.flush()
    except Finished:
        pass
    sys.exit(code)


def _answer_info_request(arguments):
    """`--help` or `--version` alone: the text on stdout, exit 0."""
    from smtpd_child import usage
    text = usage.info(arguments, usage.SMTPD_CHILD_HELP)
    if text is None:
        return
    try:
        os.write(1, text.encode())
    except OSError as e:
        log(f"unable to write to stdout: {e.strerror}")
        sys.exit(111)
    sys.exit(0)


if __name__ == "__main__":
    main()
