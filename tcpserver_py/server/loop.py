"""The listening parent: accept, fork, count, reap.  Single-threaded.

Signals only record (a Python handler plus signal.set_wakeup_fd); the loop
reaps with waitpid(-1, WNOHANG) and exits on SIGTERM.  At the -c limit the
listening socket is simply not polled, so new clients wait in the kernel's
backlog; a connection is never accepted only to be closed.  The per-client
work (DNS, ident, rules) happens in the child, after the fork.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import socket
from typing import NoReturn

from .. import logfmt
from .child import Accepted, run_child
from .children import ChildTable
from .direct import try_spawn, usable
from ..errstr import error_str
from ..options import Options, QUIET, VERBOSE

PROG = "tcpserver"


class _Signals:
    terminated = False


def _on_term(signum, frame) -> None:
    _Signals.terminated = True


def _on_child(signum, frame) -> None:
    pass   # the wakeup fd is the message; the loop reaps


def serve(listener: socket.socket, opts: Options, base_env: dict[bytes, bytes]) -> NoReturn:
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, _on_child)
    signal.signal(signal.SIGTERM, _on_term)
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

    poller = select.poll()
    poller.register(wake_read, select.POLLIN)
    polling_listener = False
    while True:
        if _Signals.terminated:
            os._exit(0)
        want = len(table) < limit
        if want != polling_listener:
            if want:
                poller.register(listen_fd, select.POLLIN)
            else:
                poller.unregister(listen_fd)
            polling_listener = want
        ready = poller.poll()
        for fd, _ in ready:
            if fd == wake_read:
                try:
                    while os.read(wake_read, 512):
                        pass
                except OSError:
                    pass
        _reap(table, verbose, limit, write)
        if _Signals.terminated:
            os._exit(0)
        while len(table) < limit:
            try:
                conn_fd, addr = listener._accept()   # (fd, address): no socket object
            except OSError:
                break                                # EAGAIN or a transient error
            _spawn(conn_fd, addr, table, opts, base_env, close_in_child,
                   verbose, quiet, write, family if quick else 0)
            if _Signals.terminated:
                os._exit(0)


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


def _spawn(conn_fd: int, addr, table: ChildTable, opts: Options,
           base_env: dict[bytes, bytes], close_in_child: tuple[int, ...],
           verbose: bool, quiet: bool, write, quick_family: int) -> None:
    ip = addr[0]
    if ip.startswith("::ffff:") and "." in ip:
        ip = ip[7:]                       # IPv4 client of a dual-stack socket
    scope_id = 0
    if len(addr) == 4:
        ip = ip.split("%", 1)[0]
        scope_id = addr[3]
    count = table.count_for(ip) + 1
    if verbose:
        write(logfmt.status(PROG, len(table) + 1, opts.limit))
    if quick_family:
        try:
            pid = try_spawn(conn_fd, quick_family, ip, addr[1], count, opts, base_env, PROG)
        except Exception:
            pid = None    # never let one connection end the server: fork instead
        if pid is not None:
            table.add(pid, ip)
            os.close(conn_fd)
            return
    try:
        pid = os.fork()
    except OSError as exc:
        if not quiet:
            write(logfmt.dropping(PROG, f"unable to fork: {error_str(exc.errno)}"))
        if verbose:
            write(logfmt.status(PROG, len(table), opts.limit))
        os.close(conn_fd)
        return
    if pid == 0:
        run_child(Accepted(conn_fd, ip, addr[1], scope_id, count), opts, base_env,
                  close_in_child, PROG)
    table.add(pid, ip)
    os.close(conn_fd)
