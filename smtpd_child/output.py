"""smtpd-child's writer: buffered replies on fd 1, and its log lines on fd 2.

Used from the first byte on: the greeting goes out through it before the
SMTP core is even imported (main.py), so it imports only what a fresh
interpreter already has, plus `select`.  `posix` is os's C half: `os`
itself (posixpath, stat, collections.abc) would cost about 1 ms of every
exec'd session before its greeting.
"""

import posix
import select
import time

# qmail-smtpd's output buffer size.  fd 1 stays blocking (it is often an open
# file description shared with a wrapper or inetd, which must never see
# O_NONBLOCK): select() says there is room, and a write this small then
# completes at once.
WRITE_SIZE = 512

NOMEM_LINE = (b"smtpd-child: out of memory, answered 421: is the memory limit "
              b"(softlimit -m) too low?\n")


def log(message: str) -> None:
    # One line whatever the text holds: a control byte (from an exception's
    # text, say) is written as \xNN, never raw into the administrator's log.
    if not message.isprintable():
        message = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in message)
    try:
        posix.write(2, f"smtpd-child: {message}\n".encode(errors="replace"))
    except OSError:
        pass


def log_nomem() -> None:
    """A line for the administrator beside the client's 421; a constant,
    as formatting may itself fail now."""
    try:
        posix.write(2, NOMEM_LINE)
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
                self.channel.send(bytes(self.pending), self.wait_time())
            except OSError:
                raise Finished(1) from None
            self.pending.clear()
        while self.pending:
            try:
                ready = select.select([], [self.fd], [], self.wait_time())[1]
            except InterruptedError:
                continue
            except (OSError, ValueError):
                raise Finished(1) from None
            if not ready:
                raise Finished(1)           # qmail: write timeout exits silently
            try:
                written = posix.write(self.fd, self.pending[:WRITE_SIZE])
            except (BlockingIOError, InterruptedError):
                continue                    # (a descriptor made non-blocking by others)
            except OSError:
                raise Finished(1) from None
            del self.pending[:written]

    def wait_time(self) -> float:
        """How long one read or write may wait: the timeout, cut at the
        session deadline; past the deadline 0, so a reply (the 451) still
        goes out if there is room."""
        wait = self.timeout
        if self.deadline is not None:
            wait = max(0.0, min(wait, self.deadline - time.monotonic()))
        return wait
