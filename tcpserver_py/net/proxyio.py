"""Reading a PROXY protocol header off a connection, and no byte more.

The bytes after the header are the client's (an SMTP client may pipeline
its first command right behind it): they must stay in the socket for the
program.  So the reader peeks, lets the parser find where the header ends,
and then reads exactly that many bytes: two system calls for a header that
has arrived whole (the usual case: a balancer sends it as it connects).
While a header is incomplete, every byte there belongs to it, so what was
peeked is taken off the socket and the next poll waits for more.  Every
read is non-blocking; the caller decides how long to wait (the server's
loop with poll, tcp-env with `read_header`).
"""

from __future__ import annotations

import select
import socket
import time

from .proxy import MAX_V2_LENGTH, V2_FIXED, Header, ProxyError, parse

DEFAULT_TIMEOUT = 10
PEEK_LIMIT = V2_FIXED + MAX_V2_LENGTH     # the longest header there can be


class HeaderReader:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.data = b""

    def step(self) -> Header | None:
        """Read what is there; the header once complete, None to wait for
        more.  Raises ProxyError (also for EOF: a truncated header)."""
        flags = socket.MSG_DONTWAIT
        try:
            peeked = self.sock.recv(PEEK_LIMIT - len(self.data), flags | socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            raise ProxyError(f"read error: {exc.strerror or exc.errno}") from None
        if not peeked:
            raise ProxyError("truncated header" if self.data else "no header")
        found = parse(self.data + peeked)
        # A header: take exactly its bytes.  Not yet: all there is belongs
        # to it, take it all (so that poll waits for new bytes).
        count = found.length - len(self.data) if isinstance(found, Header) else len(peeked)
        try:
            taken = self.sock.recv(count, flags)
        except OSError as exc:
            raise ProxyError(f"read error: {exc.strerror or exc.errno}") from None
        if len(taken) != count:
            raise ProxyError("read error: short read")
        self.data += taken
        return found if isinstance(found, Header) else None


def read_header(sock: socket.socket, timeout: float = DEFAULT_TIMEOUT) -> Header:
    """Wait at most `timeout` seconds for a whole header; ProxyError if it
    does not come, is malformed or too long."""
    reader = HeaderReader(sock)
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    while True:
        header = reader.step()
        if header is not None:
            return header
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            raise ProxyError("header timed out")

