"""The parent's side of --proxy-from: hold a balancer's connection until
its PROXY header has come, then hand it on as the client it names.

Why in the parent, not in the forked child: the header names the client,
and the parent is what counts children per client address (-C, MAXCONIP)
and decides whether the posix_spawn quick path can serve the connection.
Read here, the header costs one more poll round and a non-blocking read or
two (a balancer sends it with its first segment); the child and the quick
path then see an ordinary connection from the real client.  Held
connections count against -c, so slow or silent balancers cannot make the
server hold more than -c sockets; each has a deadline (--proxy-timeout).

A connection whose header is malformed, oversized, truncated or late is
closed with one log line; no child is ever started for it.
"""

from __future__ import annotations

import functools
import os
import select
import socket
import time

from .. import logfmt
from ..net.deadlines import ms_until
from ..net.proxy import ProxyError, trusted
from ..net.proxyio import HeaderReader

PROG = "tcpserver"


class ProxyIntake:
    def __init__(self, sources, timeout: float, poller, family: int, write, quiet: bool):
        # Parsing an address costs microseconds; the balancers are few, so
        # remember the answers (bounded: direct clients are many).
        self.trusted = functools.lru_cache(maxsize=1024)(
            lambda ip: trusted(ip, sources))
        self.timeout = timeout
        self.poller = poller
        self.family = family
        self.write = write
        self.quiet = quiet
        self.held: dict[int, tuple[HeaderReader, tuple, str, float]] = {}

    def __len__(self) -> int:
        return len(self.held)

    def __contains__(self, fd: int) -> bool:
        return fd in self.held

    def admit(self, conn_fd: int, addr: tuple, ip: str):
        """A new connection.  Returns (fd, address for the child, local
        address override or None) when it can be served now: any source
        but a balancer (a direct client: a header from it is data), or a
        balancer whose header is already there (the usual case).  Else
        None: held until its header comes, or dropped."""
        if not self.trusted(ip):
            return conn_fd, addr, None
        sock = socket.socket(self.family, socket.SOCK_STREAM, 0, conn_fd)
        self.held[conn_fd] = (HeaderReader(sock), addr, ip, time.monotonic() + self.timeout)
        self.poller.register(conn_fd, select.POLLIN)
        return self.ready(conn_fd)

    def ready(self, fd: int):
        """Read from a held connection.  Returns None while the header is
        incomplete or after a drop; else as `admit`."""
        reader, addr, _, _ = self.held[fd]
        try:
            header = reader.step()
        except ProxyError as exc:
            self._drop(fd, str(exc))
            return None
        if header is None:
            return None
        self._release(fd)
        if header.addresses is None:        # LOCAL / UNKNOWN: the socket's own
            return fd, addr, None
        src_ip, src_port, dst_ip, dst_port = header.addresses
        return fd, (src_ip, src_port), (dst_ip, dst_port)

    def expire(self) -> None:
        now = time.monotonic()
        for fd in [fd for fd, (_, _, _, deadline) in self.held.items() if deadline <= now]:
            self._drop(fd, "header timed out")

    def poll_timeout(self) -> int | None:
        """Milliseconds until the next deadline (None: wait for ever)."""
        if not self.held:
            return None
        first = min(entry[3] for entry in self.held.values())
        return ms_until(first)

    def drop_all(self, why: str) -> None:
        for fd in list(self.held):
            self._drop(fd, why)

    def _release(self, fd: int) -> None:
        reader = self.held.pop(fd)[0]
        self.poller.unregister(fd)
        reader.sock.detach()

    def _drop(self, fd: int, why: str) -> None:
        ip = self.held[fd][2]
        self._release(fd)
        os.close(fd)
        if not self.quiet:
            self.write(logfmt.dropping(PROG, f"PROXY header from {ip}: {why}"))
