"""The parent's side of the banner, DNS and ident: hold a connection while
its preamble (server/prepare.py) runs, then hand it on.

Why in the parent: forking a CPython process costs about a millisecond of
CPU in copied pages, while the preamble is a few small non-blocking socket
exchanges.  The parent drives the same step machines the forked child
runs (net/steps.py) from its poll loop: each held connection waits on at
most one lookup socket, with the deadline its exchange sets (the DNS
timeouts, ident's -t), so a slow resolver or identd delays only its own
client.  When the preamble is done, the connection goes the quick way
(server/direct.py: rules, environment and posix_spawn in the parent).

Anything unusual gives the connection to an ordinary forked child, with
the Progress so far so that nothing is done twice: a banner the socket
will not take at once (the original waits without a deadline), no
descriptor or memory for a lookup socket, a Drop (its warning is then the
child's), any exception.  A hostile DNS or ident reply reaches the parent
only as "no name" (the machines end every exchange in a value).

Held connections count against -c (with the children) and per client
address against -C, as the original's children doing the same work would:
at most -c client sockets and -c lookup sockets are held.
"""

from __future__ import annotations

import errno
import socket
import time

from ..net.deadlines import ms_until
from ..net.steps import NewSocket, new_socket
from ..options import Options
from .prepare import Drop, Progress, prepare, socket_options

# socket() failures that mean "not now": the child, with its own descriptor
# table free of the parent's held sockets, does the lookup instead.
SHORTAGE = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


class Held:
    __slots__ = ("fd", "addr", "ip", "count", "local", "sock", "progress", "machine",
                 "wait_fd", "deadline")


class LookupIntake:
    def __init__(self, opts: Options, base_env: dict[bytes, bytes], family: int, poller,
                 hand):
        self.opts = opts
        self.base_env = base_env
        self.family = family
        self.poller = poller
        # hand(fd, addr, ip, count, local, progress, complete): serve it now;
        # complete is False when a child must finish the preamble.
        self.hand = hand
        self.held: dict[int, Held] = {}        # by client descriptor
        self.waiting: dict[int, Held] = {}     # by the lookup socket it waits on
        self.per_ip: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.held)

    def __contains__(self, fd: int) -> bool:
        return fd in self.waiting

    def count_for(self, ip: str) -> int:
        return self.per_ip.get(ip, 0)

    def descriptors(self) -> tuple[int, ...]:
        """Every descriptor held here: a forked child closes them."""
        return tuple(self.held) + tuple(self.waiting)

    def admit(self, fd: int, addr: tuple, ip: str, count: int,
              local: tuple[str, int] | None) -> None:
        """A new connection: start its preamble (often done at once)."""
        held = Held()
        held.fd, held.addr, held.ip, held.count, held.local = fd, addr, ip, count, local
        held.sock = socket.socket(self.family, socket.SOCK_STREAM, 0, fd)
        if self.opts.banner:
            # Before the banner, as the original's child does (server/direct.py
            # sets them again, before the program, when there is none).
            socket_options(held.sock, ip, self.opts)
        held.progress = Progress(self.opts.banner)
        held.machine = prepare(held.sock, ip, addr[1], local, self.opts, self.base_env,
                               held.progress)
        held.wait_fd = None
        held.deadline = 0.0
        self.held[fd] = held
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        self._advance(held, None)

    def ready(self, fd: int) -> None:
        self._advance(self.waiting[fd], True)

    def expire(self) -> None:
        now = time.monotonic()
        for held in [h for h in self.held.values() if h.deadline <= now]:
            if self.held.get(held.fd) is held:     # not handed on meanwhile
                self._advance(held, False)

    def poll_timeout(self) -> int | None:
        """Milliseconds until the next deadline (None: nothing held)."""
        if not self.held:
            return None
        first = min(h.deadline for h in self.held.values())
        return ms_until(first)

    def hand_all(self) -> None:
        """Give every held connection to a child (the server is stopping)."""
        for held in list(self.held.values()):
            self._give_up(held)

    def _advance(self, held: Held, reply) -> None:
        """Resume the machine with `reply` until it waits or ends."""
        error = None
        done = give_up = False
        try:
            while True:
                if error is not None:
                    request = held.machine.throw(error)
                else:
                    request = held.machine.send(reply)
                if type(request) is not NewSocket:
                    give_up = request.deadline is None   # only a child may wait for ever
                    break
                reply = error = None
                try:
                    reply = new_socket(request)
                except OSError as exc:
                    if exc.errno in SHORTAGE:
                        give_up = True
                        break
                    error = exc
        except StopIteration:
            done = True
        except Drop as exc:
            held.progress.drop = str(exc)
            give_up = True
        except Exception:
            give_up = True             # the child does it again, and reports
        if done:
            self._release(held)
            self.hand(held.fd, held.addr, held.ip, held.count, held.local, held.progress,
                      True)
        elif give_up:
            self._give_up(held)
        else:
            self._unwatch(held)
            self.poller.register(request.fd, request.events)
            self.waiting[request.fd] = held
            held.wait_fd = request.fd
            held.deadline = request.deadline

    def _give_up(self, held: Held) -> None:
        try:
            held.machine.close()       # closes its lookup socket, if any
        except Exception:
            pass
        self._release(held)
        self.hand(held.fd, held.addr, held.ip, held.count, held.local, held.progress,
                  False)

    def _unwatch(self, held: Held) -> None:
        fd = held.wait_fd
        if fd is not None and self.waiting.get(fd) is held:
            del self.waiting[fd]
            try:
                self.poller.unregister(fd)
            except KeyError:
                pass
        held.wait_fd = None

    def _release(self, held: Held) -> None:
        self._unwatch(held)
        del self.held[held.fd]
        count = self.per_ip[held.ip] - 1
        if count:
            self.per_ip[held.ip] = count
        else:
            del self.per_ip[held.ip]
        held.sock.detach()
