"""Per-connection lookups done in the child: reverse DNS and ident.

These run after the fork, so a slow resolver or identd delays only its own
client.  Names come from DNS (see resolver.py), lower-cased; the first PTR
name is used.  Paranoid mode keeps the name only if one of its forward
addresses (A, or AAAA for IPv6 clients) is the client address.
"""

from __future__ import annotations

import socket
import time

from .resolver import Resolver, SoftDnsError

IDENT_PORT = 113
IDENT_VALUE_LIMIT = 256   # the original's buffer size
LONGEST_TIMEOUT = 1 << 31   # seconds: 68 years is "no deadline"


def reverse_name(resolver: Resolver, ip: str) -> bytes | None:
    """The first PTR name of `ip`, lower-cased, or None.

    Raises SoftDnsError when the resolver gives no usable answer."""
    name = resolver.name(ip)
    return name or None


def forward_confirms(resolver: Resolver, name: bytes, ip: str) -> bool:
    """Paranoid check: is `ip` among the addresses of `name`?"""
    try:
        found = resolver.addresses(name, ":" in ip)
    except SoftDnsError:
        return False
    return ip in found


def remote_name(resolver: Resolver, ip: str, paranoid: bool) -> bytes | None:
    """TCPREMOTEHOST: the PTR name, or None on any failure or a failed -p check."""
    try:
        name = reverse_name(resolver, ip)
    except SoftDnsError:
        return None
    if name is not None and paranoid and not forward_confirms(resolver, name, ip):
        return None
    return name


def parse_ident_reply(line: bytes) -> bytes:
    """The original's parse: drop spaces, tabs and CRs; the value is what
    follows the third colon (empty for `ERROR` replies); capped.  The C
    program then uses it as a C string, in the environment, the rules key
    and the log line alike: only the part before a NUL counts."""
    out = bytearray()
    colons = 0
    for ch in line:
        if ch in (32, 9, 13):
            continue
        if ch == 10:
            break
        if colons < 3:
            if ch == 58:
                colons += 1
        else:
            out.append(ch)
            if len(out) == IDENT_VALUE_LIMIT:
                break
    return bytes(out).split(b"\0", 1)[0]


def ident(local_ip: str, local_port: int, remote_ip: str, remote_port: int,
          family: int, timeout: float) -> bytes | None:
    """RFC 1413 query with one deadline for the whole exchange, or None on
    refusal, timeout or EOF before the end of the line."""
    # -t is any unsigned long; socket timeouts stop at about 292 years.
    deadline = time.monotonic() + min(timeout, LONGEST_TIMEOUT)
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        return None
    try:
        sock.bind((local_ip, 0) if family == socket.AF_INET else (local_ip, 0, 0, 0))
        sock.settimeout(max(0.0, deadline - time.monotonic()))
        sock.connect((remote_ip, IDENT_PORT) if family == socket.AF_INET
                     else (remote_ip, IDENT_PORT, 0, 0))
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        sock.sendall(b"%d , %d\r\n" % (remote_port, local_port))
        reply = b""
        while b"\n" not in reply:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            sock.settimeout(remaining)
            data = sock.recv(512)
            if not data:
                return None
            reply += data
            if len(reply) > 65536:
                return None
        return parse_ident_reply(reply)
    except OSError:
        return None
    finally:
        sock.close()


def interface_name(scope_id: int) -> bytes | None:
    """TCP6INTERFACE: the name of a scoped IPv6 address's interface, if any."""
    if not scope_id:
        return None
    try:
        return socket.if_indextoname(scope_id).encode()
    except OSError:
        return None
