"""Per-connection lookups done in the child: reverse DNS and ident.

These run after the fork, so a slow resolver or identd delays only its own
client.  Names come from the system resolver (gethostbyaddr), lowercased;
the first name is used.  Paranoid mode keeps the name only if one of its
forward addresses is the client address.
"""

from __future__ import annotations

import socket
import time

IDENT_PORT = 113
IDENT_VALUE_LIMIT = 256   # the original's buffer size


class SoftDnsError(Exception):
    """A temporary resolver failure (tcp-env reports it as `softdnserror`)."""


def reverse_name(ip: str) -> bytes | None:
    """The lowercased first PTR name of `ip`, or None.

    Raises SoftDnsError when the resolver says to try again."""
    try:
        name = socket.gethostbyaddr(ip)[0]
    except socket.herror as exc:
        if exc.args and exc.args[0] == 2:   # TRY_AGAIN
            raise SoftDnsError(ip) from None
        return None
    except (OSError, UnicodeError):
        return None
    if not name:
        return None
    return name.lower().encode("ascii", "replace")


def forward_confirms(name: bytes, ip: str) -> bool:
    """Paranoid check: does `name` resolve back to `ip`?"""
    try:
        infos = socket.getaddrinfo(name.decode("ascii"), None, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    for info in infos:
        found = info[4][0].split("%", 1)[0]
        if found.startswith("::ffff:") and "." in found:
            found = found[7:]
        if found == ip:
            return True
    return False


def remote_name(ip: str, paranoid: bool) -> bytes | None:
    try:
        name = reverse_name(ip)
    except SoftDnsError:
        return None
    if name is not None and paranoid and not forward_confirms(name, ip):
        return None
    return name


def parse_ident_reply(line: bytes) -> bytes:
    """The original's parse: drop spaces, tabs and CRs; the value is what
    follows the third colon (empty for `ERROR` replies); capped."""
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
    return bytes(out)


def ident(local_ip: str, local_port: int, remote_ip: str, remote_port: int,
          family: int, timeout: float) -> bytes | None:
    """RFC 1413 query with one deadline for the whole exchange, or None on
    refusal, timeout or EOF before the end of the line."""
    deadline = time.monotonic() + timeout
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
