"""Reading a PROXY protocol header off a connection, and no byte more.

The bytes after the header are the client's (an SMTP client may pipeline
its first command right behind it): they must stay in the socket for the
program.  So only what the parser asks for is read: exact counts for v2,
and for v1 a peek, then a read up to the first LF.  Every read is
non-blocking; the caller decides how long to wait (the server's loop with
poll, tcp-env with `read_header`).
"""

from __future__ import annotations

import select
import socket
import time

from .proxy import Header, ProxyError, parse

DEFAULT_TIMEOUT = 10


class HeaderReader:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.data = b""

    def step(self) -> Header | None:
        """Read what is there; the header once complete, None to wait for
        more.  Raises ProxyError (also for EOF: a truncated header)."""
        while True:
            wanted = parse(self.data)
            if isinstance(wanted, Header):
                return wanted
            flags = socket.MSG_DONTWAIT
            try:
                if wanted.line:
                    peeked = self.sock.recv(wanted.count, flags | socket.MSG_PEEK)
                    if peeked:
                        end = peeked.find(b"\n")
                        count = len(peeked) if end < 0 else end + 1
                        chunk = self.sock.recv(count, flags)
                    else:
                        chunk = peeked
                else:
                    chunk = self.sock.recv(wanted.count, flags)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError as exc:
                raise ProxyError(f"read error: {exc.strerror or exc.errno}") from None
            if not chunk:
                raise ProxyError("truncated header" if self.data else "no header")
            self.data += chunk


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
