"""Create the listening socket: IPv4, IPv6 or dual stack.

Host forms: `0` and the empty string mean every local IPv4 address
(0.0.0.0), exactly as in ucspi-tcp 0.88, so a migrated run script does not
start serving IPv6 clients (-6 makes them `::`, IPv6 only).  `::` is every
address: one dual-stack IPv6 socket (IPv4 clients arrive IPv4-mapped and are
shown as dotted quads) unless -4 (0.0.0.0) or -6 (IPv6 only) is given, or
the kernel has no IPv6 (then 0.0.0.0).  A literal address is bound as
given; a name is resolved and its first address bound (IPv4 first, as the
original binds the first A record; -6 wants AAAA).
"""

from __future__ import annotations

import errno
import socket

from ..errstr import error_str

IPV4_WILDCARDS = ("0", "")     # ucspi-tcp 0.88: 0.0.0.0
DUAL_STACK_WILDCARD = "::"


class ListenError(Exception):
    """A fatal startup problem; `text` follows `tcpserver: fatal: `."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


def resolve_port(port: str) -> int:
    """All ASCII digits (the empty word too: port 0) is a number, kept in 16
    bits as the original does; anything else is a service name."""
    if all("0" <= ch <= "9" for ch in port):
        return int(port or "0") & 0xFFFF
    try:
        return socket.getservbyname(port, "tcp")
    except (OSError, UnicodeError):
        raise ListenError(f"unable to figure out port number for {port}") from None


def dotted_host(host: str) -> str | None:
    """The original's reading of a host made only of digits, dots and
    brackets (djbdns dns_ip4): each dot ends a byte (taken modulo 256),
    brackets are skipped, and whole groups of four bytes are kept, the first
    of them bound.  `127.0.0.256` is 127.0.0.0, `127.1` has no address,
    `127.0.0.1.5` is 127.0.0.1.  None for any other host text."""
    if not host or any(ch not in "0123456789.[]" for ch in host):
        return None
    found: list[int] = []
    code = 0
    for ch in host + ".":
        if ch in "[]":
            continue
        if ch == ".":
            found.append(code)
            code = 0
        else:
            code = (code * 10 + ord(ch) - 48) & 0xFF   # a C char
    if len(found) < 4:
        raise ListenError(f"no IP address for {host}")
    return ".".join(str(byte) for byte in found[:4])


def resolve_host(host: str, family: int) -> tuple[int, str, bool]:
    """Return (address family, address text, dual stack?)."""
    if host in IPV4_WILDCARDS and family != 6:
        return socket.AF_INET, "0.0.0.0", False
    if host in IPV4_WILDCARDS or host == DUAL_STACK_WILDCARD:
        if family == 4 or not socket.has_ipv6 or not _ipv6_works():
            return socket.AF_INET, "0.0.0.0", False
        return socket.AF_INET6, "::", family != 6
    dotted = dotted_host(host)
    if dotted is not None:
        return socket.AF_INET, dotted, False
    try:
        socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
        return socket.AF_INET6, host, False
    except (OSError, UnicodeError):
        pass
    want = {4: socket.AF_INET, 6: socket.AF_INET6}.get(family, socket.AF_UNSPEC)
    name = host.encode("utf-8", "surrogateescape")   # bytes: no IDNA, any byte
    if any(len(label) > 63 for label in name.split(b".")) or len(name) > 253:
        # djbdns cannot even encode such a name: the original's message
        raise ListenError(f"temporarily unable to figure out IP address for {host}: "
                          f"{error_str(errno.EPROTO)}")
    try:
        infos = socket.getaddrinfo(name, None, want, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
            raise ListenError(f"no IP address for {host}") from None
        raise ListenError(f"temporarily unable to figure out IP address for {host}: "
                          f"{error_str(errno.EAGAIN)}") from None
    except UnicodeError:
        raise ListenError(f"no IP address for {host}") from None
    infos.sort(key=lambda info: info[0] != socket.AF_INET)  # stable: A records first
    if not infos or _glibc_numeric(name):
        raise ListenError(f"no IP address for {host}")
    fam, _, _, _, sockaddr = infos[0]
    return fam, sockaddr[0], False


def _glibc_numeric(name: bytes) -> bool:
    """glibc also reads forms like 0x7f000001 as addresses; the original
    treats them as names, which have no address."""
    try:
        socket.getaddrinfo(name, None, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError):
        return False
    return True


def _ipv6_works() -> bool:
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()
        return True
    except OSError:
        return False


def listen_backlog(backlog: int) -> int:
    """The original passes its unsigned long to listen()'s int; the kernel
    caps any value that is negative or too large as an int at somaxconn."""
    backlog &= 0xFFFFFFFF
    return backlog if backlog < 1 << 31 else (1 << 31) - 1


def open_listener(host: str, port: str, backlog: int, family: int = 0,
                  reuseport: bool = False) -> socket.socket:
    """Bind and listen; raise ListenError with the original's fatal texts.
    `reuseport` (--reuseport): SO_REUSEPORT, so several servers share the
    address and the kernel spreads the connections among them."""
    fam, address, dual = resolve_host(host, family)
    number = resolve_port(port)
    try:
        sock = socket.socket(fam, socket.SOCK_STREAM)
    except OSError as exc:
        raise ListenError(f"unable to create socket: {error_str(exc.errno)}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            except (OSError, AttributeError) as exc:
                raise ListenError("unable to set SO_REUSEPORT: "
                                  f"{error_str(getattr(exc, 'errno', 0) or 0)}") from None
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
            sock.listen(listen_backlog(backlog))
        except OSError as exc:
            raise ListenError(f"unable to listen: {error_str(exc.errno)}") from None
    except BaseException:
        sock.close()
        raise
    return sock
