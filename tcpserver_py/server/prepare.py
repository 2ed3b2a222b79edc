"""What tcpserver does for a connection before the rules: the banner, the
local address and name, the client's name (and -p's check), ident.

One step machine (net/steps.py) in the original's order, run either by the
listening parent from its poll loop (server/lookupwait.py) or, blocking, by
the forked child (server/child.py).  Its Progress records each finished
step, so when the parent gives a connection to a child half way (an
unbounded banner write, no socket to spare, anything unusual) the child
carries on from there: no banner is written twice, no lookup repeated.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from ..errstr import error_str
from ..net.lookup import ident_steps, remote_name_steps, reverse_name_steps
from ..net.resolver import SoftDnsError, resolver_for
from ..net.steps import WRITE, Machine, Wait
from ..options import Options
from ..ucspi import socket_ip

PENDING = object()      # a step not done yet (None is an answer: "no name")


class Drop(Exception):
    """Stop serving this connection: log a warning, exit 111."""


@dataclass
class Progress:
    banner: bytes                            # what is still to be written
    local: tuple | None = None               # the address the client reached
    local_host: object = PENDING             # TCPLOCALHOST
    remote_host: object = PENDING            # TCPREMOTEHOST
    remote_info: object = PENDING            # TCPREMOTEINFO
    drop: str | None = None                  # the parent met a Drop: the child reports it

    def names(self) -> tuple:
        return self.local_host, self.remote_host, self.remote_info


def socket_options(sock: socket.socket, remote_ip: str, opts: Options) -> None:
    """-O and -D, set before anything is written to the client: the
    banner must not go out along a source route the client chose."""
    if opts.kill_ip_options and (sock.family == socket.AF_INET or "." in remote_ip):
        try:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, b"")
        except OSError:
            pass
    if opts.nodelay:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def prepare(sock: socket.socket, remote_ip: str, remote_port: int,
            proxied_local: tuple[str, int] | None, opts: Options,
            env: dict[bytes, bytes], progress: Progress) -> Machine[Progress]:
    """Run the steps still pending in `progress`; Drop ends the connection.
    `proxied_local`: the destination a PROXY header named."""
    if progress.drop is not None:
        raise Drop(progress.drop)
    while progress.banner:
        # Never blocks: the parent cannot wait for one client's window, so
        # a banner that does not fit goes to a child (the wait has no
        # deadline, as in the original).
        try:
            sent = sock.send(progress.banner, socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise Drop(f"unable to print banner: {error_str(exc.errno)}") from None
        progress.banner = progress.banner[sent:]
        if progress.banner:
            yield Wait(sock.fileno(), WRITE, None)
    if progress.local is None:
        try:
            progress.local = proxied_local or sock.getsockname()
        except OSError as exc:
            raise Drop(f"unable to get local address: {error_str(exc.errno)}") from None
    local_ip = socket_ip(progress.local[0])

    resolver = None
    if ((progress.local_host is PENDING and opts.local_name is None)
            or (progress.remote_host is PENDING and opts.remote_host_lookup)):
        resolver = resolver_for(env)        # $DNSCACHEIP, as the original
    if progress.local_host is PENDING:
        if opts.local_name is not None:
            progress.local_host = opts.local_name
        else:
            try:
                progress.local_host = yield from reverse_name_steps(resolver, local_ip)
            except SoftDnsError:
                progress.local_host = None
    # Each answer is recorded only once complete: a step the parent gave up
    # half way stays PENDING, and the child does it again.
    if progress.remote_host is PENDING:
        name = None
        if opts.remote_host_lookup:
            name = yield from remote_name_steps(resolver, remote_ip, opts.paranoid)
        progress.remote_host = name
    if progress.remote_info is PENDING:
        info = None
        if opts.ident:
            family = socket.AF_INET6 if ":" in remote_ip else socket.AF_INET
            info = yield from ident_steps(local_ip, progress.local[1], remote_ip,
                                          remote_port, family, opts.ident_timeout)
        progress.remote_info = info
    return progress
