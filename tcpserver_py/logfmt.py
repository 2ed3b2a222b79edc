"""tcpserver's log lines, byte for byte (pure).

Vanilla forms (ucspi-tcp 0.88), each a single write to stderr:

    tcpserver: status: N/LIMIT
    tcpserver: pid PID from REMOTEIP
    tcpserver: ok PID LOCALHOST:LOCALIP:LOCALPORT REMOTEHOST:REMOTEIP:REMOTEINFO:REMOTEPORT
    tcpserver: deny PID ...same fields...
    tcpserver: end PID status WAITSTATUS

In the ok/deny line every field is sanitised on its own: bytes below 33 or
above 126, `%` and `:` become `?`, and a field of 100 bytes or more is cut
to 100 bytes followed by `...`.  Empty fields stay empty.

IPv6 (our format): an IPv6 address in the ok/deny line is written inside
square brackets and left unmasked, e.g.
``ok 77 0:[::1]:2525 :[2001:db8::5]::40000``.  Since the other fields can
never contain `:` (it is masked), a line splits unambiguously with
``^(ok|deny) (\\d+) ([^:]*):(\\[[^]]*\\]|[^:]*):(\\d+) ([^:]*):(\\[[^]]*\\]|[^:]*):([^:]*):(\\d+)$``.
IPv4 and IPv4-mapped clients are logged as plain dotted quads, exactly as
vanilla.  The `pid ... from IP` line carries the address unbracketed.
"""

from __future__ import annotations

FIELD_LIMIT = 100


# safecats()'s mask as a translation table: bytes below 33 or above 126,
# 37 '%' and 58 ':' become 63 '?' (one C call per field instead of a loop).
SAFE = bytes(ch if 33 <= ch <= 126 and ch not in (37, 58) else 63 for ch in range(256))


def sanitise(field: bytes) -> bytes:
    """The original's safecats(): mask unsafe bytes, cap at 100 bytes."""
    out = bytes(field[:FIELD_LIMIT]).translate(SAFE)
    if len(field) >= FIELD_LIMIT:
        out += b"..."
    return out


def address(ip: str) -> bytes:
    if ":" in ip:
        return b"[" + ip.encode() + b"]"
    return sanitise(ip.encode())


def status(prog: str, children: int, limit: int) -> bytes:
    return b"%s: status: %d/%d\n" % (prog.encode(), children, limit)


def pid_from(prog: str, pid: int, remote_ip: str) -> bytes:
    return b"%s: pid %d from %s\n" % (prog.encode(), pid, remote_ip.encode())


def decision(prog: str, allowed: bool, pid: int, local_host: bytes | None,
             local_ip: str, local_port: int, remote_host: bytes | None,
             remote_ip: str, remote_info: bytes | None, remote_port: int) -> bytes:
    """The `ok` / `deny` line, with the values tcpserver itself found (rule
    variables that override TCP* never show here, as in the original)."""
    # A port's decimal digits are always safe: no sanitise() for them.
    fields = b"%s:%s:%d %s:%s:%s:%d" % (
        sanitise(local_host or b""), address(local_ip), local_port,
        sanitise(remote_host or b""), address(remote_ip), sanitise(remote_info or b""),
        remote_port)
    return b"%s: %s %d %s\n" % (prog.encode(), b"ok" if allowed else b"deny", pid, fields)


def end(prog: str, pid: int, wait_status: int) -> bytes:
    return b"%s: end %d status %d\n" % (prog.encode(), pid, wait_status)


def per_ip_refused(prog: str, pid: int, remote_ip: str, count: int, limit: int) -> bytes:
    """Our extension: a client over the per-IP limit (-C / MAXCONIP) was
    accepted and closed.  COUNT includes the refused connection."""
    return b"%s: limit %d from %s count %d/%d\n" % (
        prog.encode(), pid, remote_ip.encode(), count, limit)


def warning(prog: str, text: str | bytes) -> bytes:
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogateescape")
    return b"%s: warning: %s\n" % (prog.encode(), text)


def dropping(prog: str, text: str | bytes) -> bytes:
    """Child warnings: the connection is dropped and the child exits 111."""
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogateescape")
    return warning(prog, b"dropping connection, " + text)


def fatal(prog: str, text: str | bytes) -> bytes:
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogateescape")
    return b"%s: fatal: %s\n" % (prog.encode(), text)
