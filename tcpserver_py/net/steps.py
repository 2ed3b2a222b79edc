"""Step machines: network exchanges written once, driven two ways.

A lookup (a DNS query, an ident exchange, a connection's whole preamble) is
a generator that never blocks.  It yields requests and gets the answers
back from whoever drives it:

    sock = yield NewSocket(family, kind)   # a non-blocking socket (or an
                                           # OSError thrown in)
    ready = yield Wait(fd, READ, deadline) # True once fd is ready, False
                                           # when the deadline has passed

and ends with `return result`.  `run` below drives a machine by blocking
(tcp-env, the forked child); the listening parent drives the same machines
from its poll loop (server/lookupwait.py), so a slow resolver or identd
delays only its own client there too.

The driver owns the resources: the parent may refuse a socket (out of
descriptors) or an unbounded wait (deadline None) and give the connection to
a forked child instead; a machine keeps its sockets in `with` blocks, so
closing an abandoned generator closes them.  A machine must treat a
readiness that turns out spurious (EAGAIN) as "wait again": the parent's
poll list can name a descriptor number that was closed and reused meanwhile.
"""

from __future__ import annotations

import select
import socket
import time
from typing import Generator, TypeVar

from .deadlines import ms_until

READ = select.POLLIN
WRITE = select.POLLOUT

T = TypeVar("T")


class Wait:
    __slots__ = ("fd", "events", "deadline")

    def __init__(self, fd: int, events: int, deadline: float | None):
        self.fd = fd
        self.events = events
        self.deadline = deadline     # time.monotonic() value; None: no deadline


class NewSocket:
    __slots__ = ("family", "kind")

    def __init__(self, family: int, kind: int):
        self.family = family
        self.kind = kind


Machine = Generator["Wait | NewSocket", object, T]


def new_socket(request: NewSocket) -> socket.socket:
    # Python's sockets are close-on-exec: a program started later never
    # inherits a lookup socket.
    return socket.socket(request.family, request.kind | socket.SOCK_NONBLOCK)


def wait_blocking(request: Wait) -> bool:
    poller = select.poll()
    poller.register(request.fd, request.events)
    if request.deadline is None:
        return bool(poller.poll())
    while True:      # a far deadline is waited for in pieces (deadlines.py)
        if poller.poll(ms_until(request.deadline)):
            return True
        if time.monotonic() >= request.deadline:
            return False


def run(machine: Machine[T]) -> T:
    """Drive a machine to its end, blocking as it asks; return its result."""
    reply: object = None
    error: BaseException | None = None
    while True:
        try:
            request = machine.throw(error) if error is not None else machine.send(reply)
        except StopIteration as stop:
            return stop.value
        reply = error = None
        if type(request) is NewSocket:
            try:
                reply = new_socket(request)
            except OSError as exc:
                error = exc
        else:
            reply = wait_blocking(request)
