"""smtpd-child after its greeting: the session's settings, the driver around
protocol.Session, the queue.

main.py has written the greeting when this module is imported: it parses
what startup.py read (config.build), then runs the session -- read with a
per-read timeout (`timeoutsmtpd`) and an overall session deadline, write with
the same timeout, run the queue, exit 0 after QUIT and 1 otherwise.  The
queue is imported when a message starts, the spool sweep after the session.
"""

import os
import select
import time

from smtpd_child.session import config
from smtpd_child.session.actions import (KINDS as EXTENSION_ACTIONS, Extras,
                                         perform as perform_extension)
from smtpd_child.session.actions import setup as setup_extensions
from smtpd_child.output import Finished, log, log_nomem
from smtpd_child.procenv import undo_startup_changes
from smtpd_child.smtp import replies
from smtpd_child.smtp.protocol import (ABORT, CLOSE, COMMIT, FLUSH, INTERNAL_ERROR, OPEN, SEND,
                                       WRITE, Session)

READ_SIZE = 65536


class LazyQueue:
    """The queue, built (and its module imported) when a message starts."""

    def __init__(self, make):
        self._make = make
        self._queue = None

    def __getattr__(self, name):
        if self._queue is None:
            self._queue = self._make()
        return getattr(self._queue, name)


def prepare(raw, checker, output):
    """The Driver of this session, from startup.read's files.  Raises on a
    failure (main.py answers 421)."""
    clock = lambda: int(time.time())  # noqa: E731
    settings = config.build(raw, os.environ, clock, auth_checker=checker is not None)
    for warning in settings.warnings:
        log(warning)
    undo_startup_changes()      # qmail-queue and checkpassword get what we were given
    extras = setup_extensions(settings, checker, log, os.environ)
    output.timeout = settings.timeout

    def make_queue():
        from smtpd_child.delivery.queue import QueueProgram, Spool
        if settings.queue_program is not None:
            return QueueProgram(settings.queue_program, clock, os.environ, settings.timeout, log)
        return Spool(settings.spool_dir, clock, log)

    return Driver(settings, Session(settings.session), LazyQueue(make_queue), output, extras)


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
        """The session after its greeting (main.py wrote it); the exit code."""
        try:
            deadline = started + self.settings.deadline
            self.output.deadline = self.deadline = deadline
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
        if self.settings.queue_program is None:
            self._sweep()
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

    def _sweep(self):
        """Once the client has its last reply (flushed above): remove abandoned
        spool/tmp files (at most once per sweep.INTERVAL; see delivery/sweep.py)."""
        from smtpd_child.delivery import sweep
        spool = self.settings.spool_dir
        try:
            sweep.maybe_sweep(spool, time.time())
        except Exception as e:      # never let housekeeping turn a session into an error
            log(f"unable to sweep {spool}/tmp: {e}")
