"""The quick path: serve a connection from the parent with posix_spawn.

Forking a Python process is costly: the child copies every page the
interpreter touches before exec.  Once a connection's banner and lookups
are done (none asked for with -H -R -l name and no -B; else the parent's
poll loop does them, server/lookupwait.py), everything the child would do
before exec takes microseconds, so the parent does it itself -- local
address, rules (rules.cdbfile.RuleCache: the cdb's answers
are reused only while stat() shows the very file they came from),
environment (ucspi.EnvironmentTemplate: the inherited part is prepared once)
-- and starts the program with posix_spawn (vfork + exec, no page copying).

Anything unusual -- a deny, a rules file that cannot be read, a client over
its per-IP limit, a program that cannot be run -- returns None, and the
caller forks the ordinary child, which carries on from what the parent
has done (no banner or lookup twice) and produces exactly the original's
log lines and exit statuses.
"""

from __future__ import annotations

import os
import signal
import socket

from .. import logfmt
from ..options import Options, VERBOSE
from ..rules.cdbfile import RuleCache, RulesReadError
from ..ucspi import EnvironmentTemplate, per_ip_limit, socket_ip
from . import signals
from .prepare import socket_options
from .preloading import noexec

# Our handlers (SIGCHLD, SIGTERM) and what CPython ignores (SIGPIPE, SIGXFSZ)
# go back to their defaults in the program, as under the C tcpserver.
# Known difference: glibc's posix_spawn leaves its two internal signals (32
# and 33, below SIGRTMIN) ignored in the new program and will not reset them;
# glibc programs install their own handlers for them when they need them.
RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGTERM,
                 signal.SIGQUIT)
DUP2 = os.POSIX_SPAWN_DUP2


def usable(opts: Options) -> bool:
    """Can connections be served without a forked child?"""
    return (not opts.remote_host_lookup and not opts.ident
            and opts.local_name is not None and not opts.banner)


class QuickPath:
    """The quick path of one server: what is the same for every connection
    (the environment template, the rules cache, the spawn call) is worked
    out once, when the listening parent starts."""

    def __init__(self, opts: Options, base_env: dict[bytes, bytes], prog: str) -> None:
        self.opts = opts
        self.prog = prog
        self.template = EnvironmentTemplate(base_env)
        # find_rule never blocks (O_NONBLOCK, regular files only), so the
        # parent can read the rules without risk to the other clients; the
        # cache never serves an answer from a changed file (cdbfile.py).
        self.rules = RuleCache(opts.rules) if opts.rules is not None else None
        self.spawn = os.posix_spawn if "/" in opts.program[0] else os.posix_spawnp
        self.verbose = opts.verbosity == VERBOSE

    def try_spawn(self, fd: int, family: int, remote_ip: str, remote_port: int,
                  ip_count: int, proxied_local: tuple[str, int] | None = None,
                  names: tuple | None = None) -> int | None:
        """Start the program for this connection; return its pid, or None
        to have the caller fork the ordinary child instead.
        `proxied_local`: the destination a PROXY header named, used instead
        of the socket's.  `names`: (TCPLOCALHOST, TCPREMOTEHOST,
        TCPREMOTEINFO) as the parent found them (lookupwait.py); else -l's
        name and none.  With --preload the program is forked from here
        instead (preloading/noexec.py)."""
        opts, prog = self.opts, self.prog
        local_host, remote_host, remote_info = names or (opts.local_name, None, None)
        # The bare C socket type: socket.socket's Python-level __init__ and
        # detach() wrappers are not needed for three calls on a borrowed fd.
        sock = socket.SocketType(family, socket.SOCK_STREAM, 0, fd)
        try:
            socket_options(sock, remote_ip, opts)
            local = proxied_local or sock.getsockname()
        except OSError:
            return None
        finally:
            sock.detach()
        ipv6 = ":" in remote_ip
        if ipv6 and len(local) == 4 and local[3]:
            return None   # scoped IPv6 (TCP6INTERFACE): leave it to the child
        local_ip = socket_ip(local[0])
        rule = None
        limit = opts.per_ip_limit
        if self.rules is not None:
            try:
                found = self.rules.find(remote_ip, remote_host, remote_info)
            except RulesReadError:
                return None
            if found is not None:
                rule = found[1]
                if rule.deny:
                    return None
                limit = per_ip_limit(limit, rule)
        if limit and ip_count > limit:
            return None
        env = self.template.environment(local_ip, local[1], remote_ip, remote_port, ipv6, rule,
                                        local_host, remote_host, remote_info)
        if noexec.loaded is not None:
            pid = noexec.loaded.start(fd, env)
            if pid is None:
                return None
        else:
            # The mask the server was started with passes on, as through exec;
            # not the parent's blocked SIGCHLD (signals.py).
            mask = signals.original
            try:
                if mask is None:
                    pid = self.spawn(opts.program[0], opts.program, env,
                                     file_actions=((DUP2, fd, 0), (DUP2, fd, 1)),
                                     setsigdef=RESET_SIGNALS)
                else:
                    pid = self.spawn(opts.program[0], opts.program, env,
                                     file_actions=((DUP2, fd, 0), (DUP2, fd, 1)),
                                     setsigdef=RESET_SIGNALS, setsigmask=mask)
            except OSError:
                return None
        if self.verbose:
            line = logfmt.pid_from(prog, pid, remote_ip) + logfmt.decision(
                prog, True, pid, local_host, local_ip, local[1], remote_host, remote_ip,
                remote_info, remote_port)
            try:
                os.write(2, line)
            except OSError:
                pass
        return pid
