"""Create the listening socket: IPv4, IPv6 or dual stack.

Host forms: `0`, the empty string and `::` mean every local address; that is
one dual-stack IPv6 socket (IPv4 clients arrive IPv4-mapped and are shown as
dotted quads) unless -4 (0.0.0.0 only) or -6 (IPv6 only) is given, or the
kernel has no IPv6, in which case 0.0.0.0 is used as the original does.  A
literal address is bound as given; a name is resolved and its first address
bound (IPv4 first, as the original binds the first A record; -6 wants AAAA).
"""

from __future__ import annotations

import errno
import socket

from .errstr import error_str

WILDCARDS = ("0", "", "::")


class ListenError(Exception):
    """A fatal startup problem; `text` follows `tcpserver: fatal: `."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


def resolve_port(port: str) -> int:
    if port.isdigit():
        return int(port) & 0xFFFF   # the original stores it in a uint16
    try:
        return socket.getservbyname(port, "tcp")
    except OSError:
        raise ListenError(f"unable to figure out port number for {port}") from None


def resolve_host(host: str, family: int) -> tuple[int, str, bool]:
    """Return (address family, address text, dual stack?)."""
    if host in WILDCARDS:
        if family == 4 or not socket.has_ipv6 or not _ipv6_works():
            return socket.AF_INET, "0.0.0.0", False
        return socket.AF_INET6, "::", family != 6
    for fam in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(fam, host.split("%", 1)[0])
            return fam, host, False
        except OSError:
            pass
    want = {4: socket.AF_INET, 6: socket.AF_INET6}.get(family, socket.AF_UNSPEC)
    try:
        infos = socket.getaddrinfo(host, None, want, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
            raise ListenError(f"no IP address for {host}") from None
        raise ListenError(f"temporarily unable to figure out IP address for {host}: "
                          f"{error_str(errno.EAGAIN)}") from None
    infos.sort(key=lambda info: info[0] != socket.AF_INET)  # stable: A records first
    if not infos:
        raise ListenError(f"no IP address for {host}")
    fam, _, _, _, sockaddr = infos[0]
    return fam, sockaddr[0], False


def _ipv6_works() -> bool:
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()
        return True
    except OSError:
        return False


def open_listener(host: str, port: str, backlog: int, family: int = 0) -> socket.socket:
    """Bind and listen; raise ListenError with the original's fatal texts."""
    fam, address, dual = resolve_host(host, family)
    number = resolve_port(port)
    try:
        sock = socket.socket(fam, socket.SOCK_STREAM)
    except OSError as exc:
        raise ListenError(f"unable to create socket: {error_str(exc.errno)}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual else 1)
        try:
            if fam == socket.AF_INET6:
                sock.bind(socket.getaddrinfo(address, number, fam, socket.SOCK_STREAM,
                                             0, socket.AI_NUMERICHOST)[0][4])
            else:
                sock.bind((address, number))
        except OSError as exc:
            raise ListenError(f"unable to bind: {error_str(exc.errno)}") from None
        try:
            sock.listen(backlog)
        except OSError as exc:
            raise ListenError(f"unable to listen: {error_str(exc.errno)}") from None
    except BaseException:
        sock.close()
        raise
    return sock
