"""The per-connection child, from just after fork() to exec().

Everything here runs in the forked child and never returns into the
parent's code: it ends in exec of the program or in os._exit().  The order
of the steps is the original's (spec: banner, local address and name, the
environment, remote name, ident, rules, log line, deny or exec); the steps
up to ident are server/prepare.py's, which the parent may have begun or
done already (server/lookupwait.py): the child carries on from there.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
from dataclasses import dataclass
from typing import NoReturn

from .. import logfmt
from ..errstr import error_str
from ..exitcodes import PERMANENT, TEMPORARY
from ..net.lookup import interface_name
from ..net.steps import run
from ..options import Options, VERBOSE, QUIET
from ..rules.cdbfile import RulesReadError, rule_for
from ..ucspi import Connection, child_environment, per_ip_limit, socket_ip
from . import signals
from .preloading import noexec
from .prepare import Drop, Progress, prepare, socket_options
from .preloading.preload import load_failure

DEFAULT_PATH = b"/bin:/usr/bin"
EXEC_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


@dataclass(frozen=True)
class Accepted:
    """What the parent hands over: the connection and what it counted."""
    fd: int
    remote_ip: str        # canonical: dotted for IPv4 and IPv4-mapped clients
    remote_port: int
    scope_id: int         # non-zero for scoped (link-local) IPv6 clients
    ip_count: int         # children of this address, this one included
    local: tuple[str, int] | None = None   # named by a PROXY header, else the socket's
    progress: Progress | None = None       # what the parent already did (prepare.py)


class ChildLog:
    def __init__(self, prog: str, verbosity: int):
        self.prog = prog
        self.verbose = verbosity == VERBOSE
        self.quiet = verbosity == QUIET

    def write(self, line: bytes) -> None:
        try:
            os.write(2, line)
        except OSError:
            pass

    def info(self, line: bytes) -> None:
        if self.verbose:
            self.write(line)

    def drop(self, text: str) -> None:
        if not self.quiet:
            self.write(logfmt.dropping(self.prog, text))


def run_child(accepted: Accepted, opts: Options, base_env: dict[bytes, bytes],
              close_fds: tuple[int, ...], prog: str = "tcpserver") -> NoReturn:
    """Serve one connection in the forked child; never returns.  With
    --preload (noexec.loaded) the program runs here instead of by exec."""
    status = TEMPORARY
    log = ChildLog(prog, opts.verbosity)
    try:
        # The parent's handlers, wakeup fd and blocked SIGCHLD must not act in
        # the child.
        signals.restore_in_child()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in close_fds:
            os.close(fd)
        status = _serve(accepted, opts, base_env, log)
    except Drop as exc:
        log.drop(str(exc))
        status = TEMPORARY
    except MemoryError:
        log.drop("out of memory")
        status = TEMPORARY
    except BaseException as exc:   # never let an exception unwind into parent code
        if isinstance(exc, ImportError) or type(exc) is LookupError:
            # A module or codec loaded lazily, out of reach after -u/-g.
            log.drop(load_failure(exc))
        else:
            log.drop(f"internal error: {type(exc).__name__}")
        status = TEMPORARY
    finally:
        os._exit(status)


def _serve(accepted: Accepted, opts: Options, base_env: dict[bytes, bytes],
           log: ChildLog) -> int:
    pid = os.getpid()
    remote_ip = accepted.remote_ip
    log.info(logfmt.pid_from(log.prog, pid, remote_ip))
    if opts.rules is None and over_limit(accepted.ip_count, opts.per_ip_limit):
        # No rule can change the limit: refuse before the banner, DNS and
        # ident, so a refused client holds its -c slot for no time at all.
        return refuse(accepted, opts, log, pid, opts.per_ip_limit)
    sock = socket.socket(fileno=accepted.fd)
    socket_options(sock, remote_ip, opts)
    progress = accepted.progress or Progress(opts.banner)
    run(prepare(sock, remote_ip, accepted.remote_port, accepted.local, opts, base_env,
                progress))
    local_host, remote_host, remote_info = progress.names()
    local = progress.local
    local_ip = socket_ip(local[0])
    local_port = local[1]
    ipv6 = ":" in remote_ip

    rule = None
    if opts.rules is not None:
        try:
            rule = rule_for(opts.rules, opts.rules_missing_ok, remote_ip, remote_host,
                            remote_info)
        except RulesReadError as exc:
            raise Drop(f"unable to read {opts.rules}: {exc.text}") from None

    denied = rule is not None and rule.deny
    ip_limit = per_ip_limit(opts.per_ip_limit, rule)
    if not denied and over_limit(accepted.ip_count, ip_limit):
        return refuse(accepted, opts, log, pid, ip_limit)
    log.info(logfmt.decision(log.prog, not denied, pid, local_host, local_ip, local_port,
                             remote_host, remote_ip, remote_info, accepted.remote_port))
    if denied:
        return PERMANENT

    interface = interface_name(accepted.scope_id) if ipv6 else None
    conn = Connection(local_ip=local_ip, local_port=local_port, remote_ip=remote_ip,
                      remote_port=accepted.remote_port, local_host=local_host,
                      remote_host=remote_host, remote_info=remote_info, ipv6=ipv6,
                      interface=interface)
    env = child_environment(base_env, conn, rule)
    try:
        os.dup2(accepted.fd, 0)
        os.dup2(accepted.fd, 1)
    except OSError as exc:
        raise Drop(f"unable to set up descriptors: {error_str(exc.errno)}") from None
    if accepted.fd > 1:
        sock.detach()
        os.close(accepted.fd)
    if noexec.loaded is not None:
        noexec.loaded.run(env)        # never returns: ends in os._exit
    err = exec_program(opts.program, env, base_env.get(b"PATH", DEFAULT_PATH))
    raise Drop(f"unable to run {opts.program[0]}: {error_str(err)}")


def over_limit(count: int, limit: int) -> bool:
    return bool(limit) and count > limit


def refuse(accepted: Accepted, opts: Options, log: ChildLog, pid: int, limit: int) -> int:
    """A client over its per-IP limit: log, send the -M text, exit 100."""
    log.info(logfmt.per_ip_refused(log.prog, pid, accepted.remote_ip, accepted.ip_count,
                                   limit))
    if opts.per_ip_message:
        try:
            os.write(accepted.fd, opts.per_ip_message)
        except OSError:
            pass
    return PERMANENT


def exec_program(argv: tuple[str, ...], env: dict[bytes, bytes], path: bytes) -> int:
    """djb pathexec: search PATH (from the inherited environment, not the
    rule's), keep the most telling error; returns only on failure."""
    # CPython ignores SIGPIPE and SIGXFSZ; an ignored signal stays ignored
    # across exec, so give the program the defaults a C parent would.
    for signum in EXEC_DEFAULT_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    program = argv[0].encode("utf-8", "surrogateescape")
    if b"/" in program:
        candidates = [program]
    else:
        candidates = [(entry or b".") + b"/" + program for entry in path.split(b":")]
    saved = 0
    for candidate in candidates:
        try:
            os.execve(candidate, list(argv), env)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                saved = exc.errno
                if exc.errno not in (errno.EACCES, errno.EPERM, errno.EISDIR):
                    return saved
    return saved or errno.ENOENT
