"""Per-connection lookups: reverse DNS and ident.

Each is a step machine (net/steps.py, the `*_steps` functions), driven by
the listening parent's poll loop or, blocking, by tcp-env and the forked
child (the plain functions), so a slow resolver or identd delays only its
own client.  Names come from DNS (see resolver.py), lower-cased; the first PTR
name is used.  Paranoid mode keeps the name only if one of its forward
addresses (A, or AAAA for IPv6 clients) is the client address.
"""

from __future__ import annotations

import errno
import socket
import time

from .resolver import Resolver, SoftDnsError
from .steps import READ, WRITE, Machine, NewSocket, Wait, run

IDENT_PORT = 113
IDENT_VALUE_LIMIT = 256   # the original's buffer size
LONGEST_TIMEOUT = 1 << 31   # seconds: 68 years is "no deadline"


def reverse_name_steps(resolver: Resolver, ip: str) -> Machine[bytes | None]:
    """The first PTR name of `ip`, lower-cased, or None.

    Raises SoftDnsError when the resolver gives no usable answer."""
    name = yield from resolver.name_steps(ip)
    return name or None


def forward_confirms_steps(resolver: Resolver, name: bytes, ip: str) -> Machine[bool]:
    """Paranoid check: is `ip` among the addresses of `name`?"""
    try:
        found = yield from resolver.addresses_steps(name, ":" in ip)
    except SoftDnsError:
        return False
    return ip in found


def remote_name_steps(resolver: Resolver, ip: str, paranoid: bool) -> Machine[bytes | None]:
    """TCPREMOTEHOST: the PTR name, or None on any failure or a failed -p check."""
    try:
        name = yield from reverse_name_steps(resolver, ip)
    except SoftDnsError:
        return None
    if name is not None and paranoid:
        if not (yield from forward_confirms_steps(resolver, name, ip)):
            return None
    return name


def reverse_name(resolver: Resolver, ip: str) -> bytes | None:
    return run(reverse_name_steps(resolver, ip))


def forward_confirms(resolver: Resolver, name: bytes, ip: str) -> bool:
    return run(forward_confirms_steps(resolver, name, ip))


def remote_name(resolver: Resolver, ip: str, paranoid: bool) -> bytes | None:
    return run(remote_name_steps(resolver, ip, paranoid))


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


def ident_steps(local_ip: str, local_port: int, remote_ip: str, remote_port: int,
                family: int, timeout: float) -> Machine[bytes | None]:
    """RFC 1413 query with one deadline for the whole exchange, or None on
    refusal, timeout or EOF before the end of the line."""
    # -t is any unsigned long: 68 years stand for "no deadline".
    deadline = time.monotonic() + min(timeout, LONGEST_TIMEOUT)
    try:
        sock = yield NewSocket(family, socket.SOCK_STREAM)
    except OSError:
        return None
    try:
        with sock:
            sock.bind((local_ip, 0) if family == socket.AF_INET else (local_ip, 0, 0, 0))
            err = sock.connect_ex((remote_ip, IDENT_PORT) if family == socket.AF_INET
                                  else (remote_ip, IDENT_PORT, 0, 0))
            if err == errno.EINPROGRESS:
                if not (yield Wait(sock.fileno(), WRITE, deadline)):
                    return None
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                return None
            request = memoryview(b"%d , %d\r\n" % (remote_port, local_port))
            while request:
                try:
                    request = request[sock.send(request):]
                except BlockingIOError:
                    if not (yield Wait(sock.fileno(), WRITE, deadline)):
                        return None
            reply = b""
            while b"\n" not in reply:
                if not (yield Wait(sock.fileno(), READ, deadline)):
                    return None
                try:
                    data = sock.recv(512)
                except BlockingIOError:
                    continue
                if not data:
                    return None
                reply += data
                if len(reply) > 65536:
                    return None
            return parse_ident_reply(reply)
    except OSError:
        return None


def ident(local_ip: str, local_port: int, remote_ip: str, remote_port: int,
          family: int, timeout: float) -> bytes | None:
    return run(ident_steps(local_ip, local_port, remote_ip, remote_port, family, timeout))


def interface_name(scope_id: int) -> bytes | None:
    """TCP6INTERFACE: the name of a scoped IPv6 address's interface, if any."""
    if not scope_id:
        return None
    try:
        return socket.if_indextoname(scope_id).encode()
    except OSError:
        return None
