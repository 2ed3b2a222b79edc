"""The listening parent: accept, fork, count, reap.  Single-threaded.

Signals only record (a Python handler plus signal.set_wakeup_fd); the loop
reaps with waitpid(-1, WNOHANG) and exits on SIGTERM; SIGQUIT is the
graceful stop (server/drain.py).  At the -c limit the
listening socket is simply not polled, so new clients wait in the kernel's
backlog; a connection is never accepted only to be closed.  The per-client
work (DNS, ident, rules) happens in the child, after the fork.
"""

from __future__ import annotations

import errno
import gc
import os
import select
import signal
import socket
from typing import Callable, NoReturn

from .. import logfmt
from .child import Accepted, run_child
from .children import ChildTable
from .direct import try_spawn, usable
from .drain import Drain
from .proxywait import ProxyIntake
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


class _Signals:
    terminated = False
    draining = False


def _on_term(signum, frame) -> None:
    _Signals.terminated = True


def _on_quit(signum, frame) -> None:
    _Signals.draining = True


def _on_child(signum, frame) -> None:
    pass   # the wakeup fd is the message; the loop reaps


def serve(listener: socket.socket, opts: Options, base_env: dict[bytes, bytes],
          at_exit: Callable[[], None] | None = None) -> NoReturn:
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, _on_child)
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGQUIT, _on_quit)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    listener.setblocking(False)
    listen_fd = listener.fileno()
    close_in_child = (listen_fd, wake_read, wake_write)
    verbose = opts.verbosity == VERBOSE
    quiet = opts.verbosity == QUIET
    limit = opts.limit
    table = ChildTable()
    quick = usable(opts)
    family = listener.family

    def write(line: bytes) -> None:
        try:
            os.write(2, line)
        except OSError:
            pass

    if verbose:
        write(logfmt.status(PROG, 0, limit))

    # Objects that exist now live for the whole run: keep the collector off
    # them, so that forked children do not copy pages it would touch.
    gc.freeze()

    def finish() -> NoReturn:
        if at_exit is not None:
            at_exit()     # e.g. remove the pidfile
        os._exit(0)

    poller = select.poll()
    poller.register(wake_read, select.POLLIN)
    polling_listener = False
    proxy = None
    if opts.proxy_from:
        proxy = ProxyIntake(opts.proxy_from, opts.proxy_timeout, poller, family, write, quiet)
    drain = None
    paused = starved_logged = False
    while True:
        if _Signals.terminated:
            finish()
        if _Signals.draining and drain is None:
            if polling_listener:
                poller.unregister(listen_fd)
                polling_listener = False
            listener.close()     # new clients go to another server or wait for us
            limit = 0
            if proxy is not None:
                proxy.drop_all("server stopping")
            drain = Drain(table, opts.stop_timeout, write, quiet)
        if drain is not None and drain.done():
            finish()
        want = len(table) + (len(proxy) if proxy is not None else 0) < limit and not paused
        if want != polling_listener:
            if want:
                poller.register(listen_fd, select.POLLIN)
            else:
                poller.unregister(listen_fd)
            polling_listener = want
        timeouts = [t for t in (proxy.poll_timeout() if proxy is not None else None,
                                drain.poll_timeout() if drain is not None else None,
                                RESOURCE_PAUSE * 1000 if paused else None)
                    if t is not None]
        ready = poller.poll(min(timeouts) if timeouts else None)
        paused = False
        for fd, _ in ready:
            if fd == wake_read:
                try:
                    while os.read(wake_read, 512):
                        pass
                except OSError:
                    pass
            elif proxy is not None and fd in proxy:
                handed = proxy.ready(fd)
                if handed is not None:
                    _spawn(handed[0], handed[1], table, opts, base_env, close_in_child,
                           verbose, quiet, write, family if quick else 0, local=handed[2])
        if proxy is not None:
            proxy.expire()
        _reap(table, verbose, opts.limit, write)
        if _Signals.terminated:
            finish()
        while drain is None and len(table) + (len(proxy) if proxy is not None else 0) < limit:
            try:
                conn_fd, addr = listener._accept()   # (fd, address): no socket object
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in OUT_OF_RESOURCES:
                    paused = True
                    if not starved_logged:           # once per shortage, not per retry
                        write(logfmt.warning(PROG, "unable to accept: "
                                             + error_str(exc.errno)))
                        starved_logged = True
                break                                # or a transient error
            local = None
            if proxy is not None:
                handed = proxy.admit(conn_fd, addr, _canonical_ip(addr))
                if handed is None:
                    continue                         # held for its header, or dropped
                conn_fd, addr, local = handed
            if not _spawn(conn_fd, addr, table, opts, base_env, close_in_child,
                          verbose, quiet, write, family if quick else 0, local=local):
                paused = True                        # fork failed: no process to spare
                break
            starved_logged = False
            if _Signals.terminated:
                finish()


def _reap(table: ChildTable, verbose: bool, limit: int, write) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        except InterruptedError:
            continue
        if pid == 0:
            return
        # Every reaped child is logged, as the original does, even one
        # inherited from a shell that exec'd us; only ours are counted (the
        # original counts such a child down too, and then runs one over -c).
        table.remove(pid)
        if verbose:
            write(logfmt.end(PROG, pid, status) + logfmt.status(PROG, len(table), limit))


def _canonical_ip(addr) -> str:
    ip = addr[0]
    if ip.startswith("::ffff:") and "." in ip:
        ip = ip[7:]                       # IPv4 client of a dual-stack socket
    return ip.split("%", 1)[0] if len(addr) == 4 else ip


def _spawn(conn_fd: int, addr, table: ChildTable, opts: Options,
           base_env: dict[bytes, bytes], close_in_child: tuple[int, ...],
           verbose: bool, quiet: bool, write, quick_family: int,
           local: tuple[str, int] | None = None) -> bool:
    """Start the child for a connection; False if fork() failed for want of
    resources (the connection is dropped and logged, as the original does).
    `local`: the destination a PROXY header named (our TCPLOCALIP/PORT)."""
    ip = _canonical_ip(addr)
    scope_id = addr[3] if len(addr) == 4 else 0
    count = table.count_for(ip) + 1
    if verbose:
        write(logfmt.status(PROG, len(table) + 1, opts.limit))
    if quick_family:
        try:
            pid = try_spawn(conn_fd, quick_family, ip, addr[1], count, opts, base_env, PROG,
                            local)
        except Exception:
            pid = None    # never let one connection end the server: fork instead
        if pid is not None:
            table.add(pid, ip)
            os.close(conn_fd)
            return True
    try:
        pid = os.fork()
    except OSError as exc:
        if not quiet:
            write(logfmt.dropping(PROG, f"unable to fork: {error_str(exc.errno)}"))
        if verbose:
            write(logfmt.status(PROG, len(table), opts.limit))
        os.close(conn_fd)
        return exc.errno not in OUT_OF_RESOURCES
    if pid == 0:
        run_child(Accepted(conn_fd, ip, addr[1], scope_id, count, local), opts, base_env,
                  close_in_child, PROG)
    table.add(pid, ip)
    os.close(conn_fd)
    return True
