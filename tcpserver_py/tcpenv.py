"""tcp-env: the UCSPI environment for a program started by inetd/xinetd (edge).

`tcp-env [-rR] [-hH] [-pP] [-l localname] [-t timeout] [-x rules.cdb [-X]]
         [--proxy-from CIDR[,CIDR...]] [--proxy-timeout seconds] program [arg ...]`

The connection is on fd 0.  Sets PROTO, TCPLOCAL*, TCPREMOTE* (and TCP6*
for IPv6 clients) exactly as tcpserver does, then, with -x, applies a rules
cdb the way tcpserver does: a deny rule exits 100, an unreadable rules file
exits 111 (a missing one is allowed with -X).  Name rules (`=host`,
`=.domain`) only ever see a name whose addresses include the client's
(forward-confirmed), whatever the options: anyone controls the PTR record of
their own address.  If PROTO is already TCP or TCP6 (running under
tcpserver) and no -x is given, the program is run unchanged.  Like qmail's,
it prints nothing about connections: under inetd, stderr is often the
client's socket.  Any failure exits 111.  The one warning (an inherited
RELAYCLIENT) goes to stderr, or to syslog when stderr is the connection.

--proxy-from: a connection from those addresses (a load balancer) must
begin with a PROXY protocol header, whose client and destination then stand
for the socket's addresses (as in tcpserver).  A bad or late header exits
111 before any program runs, with one line to syslog (mail facility).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import syslog

from . import VERSION_LINE, logfmt
from .server.child import exec_program
from .environ import inherited_environment, relay_warning
from .exitcodes import PERMANENT, TEMPORARY
from .helptext import TCPENV_HELP
from .launch import stderr_is_the_connection
from .net.lookup import forward_confirms, ident, interface_name, reverse_name
from .net.proxy import ProxyError, trusted
from .net.proxyio import read_header
from .options import InfoRequested, parse_tcpenv_args
from .net.resolver import Resolver, SoftDnsError, resolver_for
from .rules.cdbfile import RulesReadError, rule_for
from .ucspi import Connection, child_environment, socket_ip

PROG = "tcp-env"
SOFT_DNS_ERROR = b"softdnserror"


def _name(resolver: Resolver, ip: str) -> bytes | None:
    try:
        return reverse_name(resolver, ip)
    except SoftDnsError:
        return SOFT_DNS_ERROR


def _warn(text: str) -> None:
    if stderr_is_the_connection():
        syslog.openlog(PROG, syslog.LOG_PID, syslog.LOG_MAIL)
        syslog.syslog(syslog.LOG_WARNING, text)
        return
    try:
        os.write(2, logfmt.warning(PROG, text))
    except OSError:
        pass


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        opts = parse_tcpenv_args(sys.argv[1:])
    except InfoRequested as exc:
        os.write(1, (VERSION_LINE if exc.option == "--version" else TCPENV_HELP).encode())
        sys.exit(0)
    except BaseException:
        sys.exit(TEMPORARY)
    try:
        _run(opts)
    except SystemExit:
        raise
    except BaseException:
        # Under inetd stderr may be the client's socket: never a traceback,
        # and never the program (fail closed), as qmail's tcp-env dies 111.
        sys.exit(TEMPORARY)


def _run(opts) -> None:
    if opts is None:
        sys.exit(TEMPORARY)
    base = inherited_environment(os.environb)
    relay = relay_warning(PROG, base)
    if relay:
        _warn(relay)
    path = base.get(b"PATH", b"/bin:/usr/bin")
    # qmail's shortcut under tcpserver; never with -x, where a stray PROTO
    # would mean running the program with no rules checked (fail open).
    if (base.get(b"PROTO") in (b"TCP", b"TCP6") and opts.rules is None
            and not opts.proxy_from):
        exec_program(opts.program, base, path)
        sys.exit(TEMPORARY)
    try:
        sock = socket.socket(fileno=0)
        local, remote = sock.getsockname(), sock.getpeername()
        family = sock.family
    except OSError:
        sys.exit(TEMPORARY)
    if family not in (socket.AF_INET, socket.AF_INET6):
        sys.exit(TEMPORARY)
    local_ip, remote_ip = socket_ip(local[0]), socket_ip(remote[0])
    if opts.proxy_from and trusted(remote_ip, opts.proxy_from):
        try:
            header = read_header(sock, opts.proxy_timeout)
        except ProxyError as exc:
            syslog.openlog("tcp-env", syslog.LOG_PID, syslog.LOG_MAIL)
            syslog.syslog(syslog.LOG_WARNING,
                          f"dropping connection, PROXY header from {remote_ip}: {exc}")
            sys.exit(TEMPORARY)
        if header.addresses is not None:
            remote_ip, remote_port, local_ip, local_port = header.addresses
            remote, local = (remote_ip, remote_port), (local_ip, local_port)
    sock.detach()
    ipv6 = ":" in remote_ip
    resolver = resolver_for(base)
    local_host = opts.local_name if opts.local_name is not None else _name(resolver, local_ip)
    remote_host = _name(resolver, remote_ip) if opts.remote_host_lookup else None
    # The name rules may see, and -p's TCPREMOTEHOST: only a name that
    # resolves back to the client (qmail's tcp-env sets the PTR name as
    # it is; so does ours without -p).
    confirmed = None
    if remote_host not in (None, SOFT_DNS_ERROR) and (opts.rules is not None or opts.paranoid):
        if forward_confirms(resolver, remote_host, remote_ip):
            confirmed = remote_host
    if opts.paranoid:
        remote_host = confirmed
    remote_info = None
    if opts.ident:
        remote_info = ident(local_ip, local[1], remote_ip, remote[1],
                            socket.AF_INET6 if ipv6 else socket.AF_INET, opts.ident_timeout)
    rule = None
    if opts.rules is not None:
        try:
            rule = rule_for(opts.rules, opts.rules_missing_ok, remote_ip, confirmed,
                            remote_info)
        except RulesReadError:
            sys.exit(TEMPORARY)
        if rule is not None and rule.deny:
            sys.exit(PERMANENT)
    interface = interface_name(remote[3]) if ipv6 and len(remote) == 4 else None
    conn = Connection(local_ip=local_ip, local_port=local[1], remote_ip=remote_ip,
                      remote_port=remote[1], local_host=local_host, remote_host=remote_host,
                      remote_info=remote_info, ipv6=ipv6, interface=interface)
    exec_program(opts.program, child_environment(base, conn, rule), path)
    sys.exit(TEMPORARY)


if __name__ == "__main__":
    main()
