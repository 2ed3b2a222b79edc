"""The listening parent: accept, fork, count, reap.  Single-threaded.

Signals only record (a Python handler plus signal.set_wakeup_fd); the loop
reaps with waitpid(-1, WNOHANG) when the wakeup fd shows a signal, and
exits on SIGTERM; SIGQUIT is the graceful stop (server/drain.py).  SIGCHLD
is blocked except during poll() (signals.py), so that a batch of exits
costs one delivery.  At the -c limit the
listening socket is simply not polled, so new clients wait in the kernel's
backlog; a connection is never accepted only to be closed.  The per-client
work (banner, DNS, ident: lookupwait.py; rules and environment: direct.py)
happens here without ever blocking; anything unusual goes to a forked child
(child.py).
"""

from __future__ import annotations

import errno
import gc
import os
import select
import socket
from typing import Callable, NoReturn

from .. import logfmt
from .child import Accepted, over_limit, run_child
from .children import ChildTable
from . import signals
from .addresses import bound_address, canonical_ip
from .direct import QuickPath, usable
from .drain import Drain
from .lookupwait import LookupIntake
from .prepare import Progress
from .proxywait import ProxyIntake
from .signals import Signals
from ..errstr import error_str
from ..options import Options, QUIET, VERBOSE

PROG = "tcpserver"

# Out of descriptors, processes or memory: accept() or fork() fails at once,
# and the listening socket stays readable.  Polling it again straight away
# would spin at 100% CPU, so it is left alone for RESOURCE_PAUSE seconds
# (a child's exit ends the pause sooner); clients wait in the backlog.
OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM,
                              errno.EAGAIN))
RESOURCE_PAUSE = 0.5

def serve(listener: socket.socket, opts: Options, base_env: dict[bytes, bytes],
          at_exit: Callable[[], None] | None = None) -> NoReturn:
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signals.install(wake_write)
    listener.setblocking(False)
    listen_fd = listener.fileno()
    poller = select.poll()
    poller.register(wake_read, select.POLLIN)
    parent = _Parent(opts, base_env, listener.family, (listen_fd, wake_read, wake_write),
                     poller)
    parent.bound = bound_address(listener)
    parent.run(listener, wake_read, at_exit)


class _Parent:
    """The loop's state; one per server."""

    def __init__(self, opts: Options, base_env: dict[bytes, bytes], family: int,
                 close_in_child: tuple[int, ...], poller):
        self.opts = opts
        self.base_env = base_env
        self.family = family
        self.close_in_child = close_in_child
        self.poller = poller
        self.verbose = opts.verbosity == VERBOSE
        self.quiet = opts.verbosity == QUIET
        self.limit = opts.limit
        self.table = ChildTable()
        self.quick = usable(opts)
        self.quick_path = QuickPath(opts, base_env, PROG)
        self.paused = False
        self.foreign = True      # children not started here may exist (see reap)
        self.bound = None        # every connection's local address, if one (serve)
        self.spawn_failure_told = False
        self.proxy = None
        if opts.proxy_from:
            self.proxy = ProxyIntake(opts.proxy_from, opts.proxy_timeout, poller, family,
                                     self.write, self.quiet)
        # A banner or lookups: the parent does them (lookupwait.py), then
        # serves the connection as on the quick path.
        self.lookups = None
        if not self.quick:
            self.lookups = LookupIntake(opts, base_env, family, poller, self.spawn)

    def write(self, line: bytes) -> None:
        try:
            os.write(2, line)
        except OSError:
            pass

    def busy(self) -> int:
        """Children and connections held for their preamble: what -c counts."""
        return len(self.table) + (len(self.lookups) if self.lookups is not None else 0)

    def run(self, listener: socket.socket, wake_read: int,
            at_exit: Callable[[], None] | None) -> NoReturn:
        opts, poller, table, proxy, lookups = (self.opts, self.poller, self.table,
                                               self.proxy, self.lookups)
        listen_fd = listener.fileno()
        write = self.write
        if self.verbose:
            write(logfmt.status(PROG, 0, self.limit))

        # Objects that exist now live for the whole run: keep the collector off
        # them, so that forked children do not copy pages it would touch.
        gc.freeze()

        def finish() -> NoReturn:
            if lookups is not None:
                lookups.hand_all()   # as the original's children, they carry on
            if at_exit is not None:
                at_exit()     # e.g. remove the pidfile
            os._exit(0)

        more = select.poll()
        more.register(listen_fd, select.POLLIN)
        more = more.poll
        polling_listener = False
        drain = None
        starved_logged = False
        # Reap only after a signal (the wakeup fd): a waitpid() per poll round
        # would cost a system call, and an exception when nothing is left.
        # With SIGCHLD blocked from the start no signal comes: reap every round.
        always_reap = not signals.hold()
        set_mask, block, unblock = signals.pthread_sigmask, signals.SIG_BLOCK, signals.SIG_UNBLOCK
        held = None if always_reap else signals.HELD
        signalled = True             # children from before serve() (a shell's)
        while True:
            if Signals.terminated:
                finish()
            if Signals.draining and drain is None:
                if lookups is not None:
                    # Children now (the drain waits for them), forked while
                    # the descriptors they close are still open.
                    lookups.hand_all()
                if polling_listener:
                    poller.unregister(listen_fd)
                    polling_listener = False
                listener.close()     # new clients go to another server or wait for us
                self.limit = 0
                if proxy is not None:
                    proxy.drop_all("server stopping")
                drain = Drain(table, opts.stop_timeout, write, self.quiet)
            if drain is not None and drain.done():
                finish()
            want = self.room() and not self.paused
            if want != polling_listener:
                if want:
                    poller.register(listen_fd, select.POLLIN)
                else:
                    poller.unregister(listen_fd)
                polling_listener = want
            timeout = None
            if proxy is not None or lookups is not None or drain is not None or self.paused:
                timeout = self.poll_timeout(drain)
            if held is None:
                ready = poller.poll(timeout)
            else:
                set_mask(unblock, held)      # a pending SIGCHLD arrives now
                ready = poller.poll(timeout)
                set_mask(block, held)
            self.paused = False
            accepting = False
            for fd, _ in ready:
                if fd == listen_fd:
                    accepting = True
                elif fd == wake_read:
                    signalled = True
                    try:
                        while len(os.read(wake_read, 512)) == 512:   # a byte a signal
                            pass
                    except OSError:
                        pass
                elif lookups is not None and fd in lookups:
                    lookups.ready(fd)
                elif proxy is not None and fd in proxy:
                    handed = proxy.ready(fd)
                    if handed is not None:
                        self.start(*handed)
            if proxy is not None:
                proxy.expire()
            if lookups is not None:
                lookups.expire()
            if signalled:
                signalled = always_reap
                self.reap()
            if Signals.terminated:
                finish()
            # Only when poll() said so: on a round woken by a child's exit, an
            # accept() would mostly fail (an exception).  A listener just made
            # pollable again is polled first.
            while accepting and drain is None and not self.paused and self.room():
                try:
                    conn_fd, addr = listener._accept()   # (fd, address): no socket object
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in OUT_OF_RESOURCES:
                        self.paused = True
                        if not starved_logged:           # once per shortage, not per retry
                            write(logfmt.warning(PROG, "unable to accept: "
                                                 + error_str(exc.errno)))
                            starved_logged = True
                    break                                # or a transient error
                local = None
                if proxy is not None:
                    handed = proxy.admit(conn_fd, addr, canonical_ip(addr))
                    if handed is None:                   # held for its header, or dropped
                        accepting = more(0)
                        continue
                    conn_fd, addr, local = handed
                self.start(conn_fd, addr, local)
                if self.paused:
                    break                                # fork failed: no process to spare
                starved_logged = False
                if Signals.terminated:
                    finish()
                # Another client waiting?  poll(0) asks for 0.3 us; a failed
                # accept() costs 2.3 (the exception).
                accepting = more(0)

    def room(self) -> bool:
        """Below -c, counting connections held for a PROXY header too."""
        held_for_header = len(self.proxy) if self.proxy is not None else 0
        return self.busy() + held_for_header < self.limit

    def poll_timeout(self, drain: Drain | None) -> int | None:
        """Milliseconds to the first deadline of the intakes, the drain or a pause."""
        timeouts = [t for t in (self.proxy.poll_timeout() if self.proxy is not None else None,
                                self.lookups.poll_timeout() if self.lookups is not None
                                else None,
                                drain.poll_timeout() if drain is not None else None,
                                RESOURCE_PAUSE * 1000 if self.paused else None)
                    if t is not None]
        return min(timeouts) if timeouts else None

    def start(self, conn_fd: int, addr, local: tuple[str, int] | None) -> None:
        """A connection to serve (its PROXY header, if any, read)."""
        ip = canonical_ip(addr)
        lookups = self.lookups
        count = self.table.count_for(ip) + 1
        if lookups is not None:
            count += lookups.count_for(ip)
            scoped = len(addr) == 4 and addr[3]
            # Held here unless the child must log a refusal with its pid (no
            # rule can change -C: refused before the banner) or a scoped
            # IPv6 client needs TCP6INTERFACE.
            if not scoped and not (self.opts.rules is None
                                   and over_limit(count, self.opts.per_ip_limit)):
                if self.verbose:
                    self.write(logfmt.status(PROG, self.busy() + 1, self.limit))
                lookups.admit(conn_fd, addr, ip, count, local)
                return
        if self.verbose:
            self.write(logfmt.status(PROG, self.busy() + 1, self.limit))
        self.spawn(conn_fd, addr, ip, count, local, None)

    def spawn(self, conn_fd: int, addr, ip: str, count: int,
              local: tuple[str, int] | None, progress: Progress | None,
              complete: bool = False) -> None:
        """Start the child for a connection.  When fork() fails for want of
        resources (the connection is dropped and logged, as the original
        does), the listener pauses.  `local`: the destination a PROXY
        header named (our TCPLOCALIP/PORT).  `progress`: what the parent
        did of the preamble; `complete`: all of it, and nothing to report."""
        opts = self.opts
        quick = self.quick or (complete and progress is not None)
        if quick:
            names = progress.names() if progress is not None else None
            try:
                pid = self.quick_path.try_spawn(
                    conn_fd, self.family, ip, addr[1], count,
                    progress.local if names else local or self.bound, names=names)
            except Exception as exc:
                # Never let one connection end the server: a forked child
                # serves it alike, only slower.  This is a bug, not a
                # client's doing: said once, so that it is seen and fixed.
                if not self.spawn_failure_told and not self.quiet:
                    self.write(logfmt.warning(
                        PROG, f"posix_spawn path failed ({type(exc).__name__}: {exc}); "
                        "serving connections by a forked child instead"))
                self.spawn_failure_told = True
                pid = None
            if pid is not None:
                self.table.add(pid, ip)
                os.close(conn_fd)
                return
        close_fds = self.close_in_child
        if self.lookups is not None and len(self.lookups):
            close_fds = close_fds + self.lookups.descriptors()
        scope_id = addr[3] if len(addr) == 4 else 0
        try:
            pid = os.fork()
        except OSError as exc:
            if not self.quiet:
                self.write(logfmt.dropping(PROG, f"unable to fork: {error_str(exc.errno)}"))
            if self.verbose:
                self.write(logfmt.status(PROG, self.busy(), opts.limit))
            os.close(conn_fd)
            if exc.errno in OUT_OF_RESOURCES:
                self.paused = True
            return
        if pid == 0:
            run_child(Accepted(conn_fd, ip, addr[1], scope_id, count, local, progress), opts,
                      self.base_env, close_fds, PROG)
        self.table.add(pid, ip)
        os.close(conn_fd)

    def reap(self) -> None:
        table = self.table
        # Once waitpid() has said there are no children at all, every later
        # one is ours (in the table): with the table empty, no need to ask.
        while table or self.foreign:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.foreign = False
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            # Every reaped child is logged, as the original does, even one
            # inherited from a shell that exec'd us; only ours are counted (the
            # original counts such a child down too, and then runs one over -c).
            table.remove(pid)
            if self.verbose:
                self.write(logfmt.end(PROG, pid, status)
                           + logfmt.status(PROG, self.busy(), self.opts.limit))
