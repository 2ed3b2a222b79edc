"""The PROXY protocol header, versions 1 and 2 (pure).

A load balancer (HAProxy `send-proxy`/`send-proxy-v2`, nginx, AWS/GCP) opens
its own TCP connection to us and first sends one header naming the client it
relays.  `parse(data)` looks at the bytes read so far and answers one of:

- `Need(count, line)`: the header is not complete; read at most `count` more
  bytes (`line`: a v1 header, which ends at the first LF -- read no further
  than that LF, the client's data follows it);
- `Header(...)`: a complete header of `length` bytes;
- or raises `ProxyError` (malformed, oversized, unsupported).

Bounded: a v1 header is at most 107 bytes (the specification's maximum), a
v2 header 16 bytes plus at most MAX_V2_LENGTH bytes of addresses and TLVs.
Reading 15 bytes first is always safe: no valid header is shorter
(`PROXY UNKNOWN\\r\\n`).

Addresses come back in the server's canonical text: dotted IPv4 (also for
an IPv4-mapped IPv6 address), compressed IPv6.  `addresses` is None when the
real socket's addresses are to be kept: a v2 LOCAL command (health checks),
v1 `UNKNOWN`, v2 `UNSPEC` or a UNIX-socket client.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX = 107
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16
MAX_V2_LENGTH = 2048        # addresses (at most 216 bytes) plus TLVs
MIN_HEADER = 15             # b"PROXY UNKNOWN\r\n"


class ProxyError(Exception):
    """The header is unusable; the text names why (for the log line)."""


@dataclass(frozen=True)
class Need:
    count: int
    line: bool = False


@dataclass(frozen=True)
class Header:
    length: int                                   # bytes the header took
    version: int
    addresses: tuple[str, int, str, int] | None   # src ip, src port, dst ip, dst port


def parse(data: bytes) -> Need | Header:
    if len(data) < MIN_HEADER:
        if not (V1_PREFIX.startswith(data[:6]) or V2_SIGNATURE.startswith(data[:12])):
            raise ProxyError("no PROXY header")
        return Need(MIN_HEADER - len(data))
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data)
    if data.startswith(V1_PREFIX):
        return _parse_v1(data)
    raise ProxyError("no PROXY header")


def _parse_v1(data: bytes) -> Need | Header:
    end = data.find(b"\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyError("v1 header longer than 107 bytes")
        return Need(V1_MAX - len(data), line=True)
    line = data[:end + 1]
    if not line.endswith(b"\r\n"):
        raise ProxyError("v1 header not ended by CRLF")
    words = line[len(V1_PREFIX):-2].split(b" ")
    if words == [b"UNKNOWN"] or (words and words[0] == b"UNKNOWN"):
        return Header(len(line), 1, None)
    if len(words) != 5 or words[0] not in (b"TCP4", b"TCP6"):
        raise ProxyError("malformed v1 header")
    version = 4 if words[0] == b"TCP4" else 6
    src = _v1_address(words[1], version)
    dst = _v1_address(words[2], version)
    return Header(len(line), 1, (src, _v1_port(words[3]), dst, _v1_port(words[4])))


def _v1_address(word: bytes, version: int) -> str:
    if version == 4:
        parts = word.split(b".")
        if len(parts) != 4 or not all(
                part.isdigit() and len(part) <= 3 and (part == b"0" or part[:1] != b"0")
                and int(part) <= 255 for part in parts):
            raise ProxyError("bad address in v1 header")
        return word.decode("ascii")    # dotted quad, as the parser checked it
    try:
        text = word.decode("ascii")
        address = (ipaddress.IPv4Address(text) if version == 4
                   else ipaddress.IPv6Address(text))
    except (UnicodeError, ValueError):
        raise ProxyError("bad address in v1 header") from None
    return _canonical(address)


def _v1_port(word: bytes) -> int:
    if not word or len(word) > 5 or not word.isdigit() or (len(word) > 1 and word[:1] == b"0"):
        raise ProxyError("bad port in v1 header")
    port = int(word)
    if port > 65535:
        raise ProxyError("bad port in v1 header")
    return port


# v2 family/transport byte: high nibble family, low nibble transport.
AF_UNSPEC, AF_INET, AF_INET6, AF_UNIX = 0, 1, 2, 3
STREAM = 1
ADDRESS_BYTES = {AF_INET: 12, AF_INET6: 36, AF_UNIX: 216}


def _parse_v2(data: bytes) -> Need | Header:
    if len(data) < V2_FIXED:
        return Need(V2_FIXED - len(data))
    version_command = data[12]
    if version_command >> 4 != 2:
        raise ProxyError("unsupported v2 version")
    command = version_command & 0x0F
    if command > 1:
        raise ProxyError("unsupported v2 command")
    length = int.from_bytes(data[14:16], "big")
    if length > MAX_V2_LENGTH:
        raise ProxyError(f"v2 header longer than {V2_FIXED + MAX_V2_LENGTH} bytes")
    total = V2_FIXED + length
    if len(data) < total:
        return Need(total - len(data))
    if command == 0:                 # LOCAL: the balancer's own connection
        return Header(total, 2, None)
    family, transport = data[13] >> 4, data[13] & 0x0F
    if family == AF_UNSPEC or family == AF_UNIX:
        return Header(total, 2, None)
    if family not in ADDRESS_BYTES or transport != STREAM:
        raise ProxyError("unsupported v2 address family or transport")
    if length < ADDRESS_BYTES[family]:
        raise ProxyError("v2 addresses truncated")
    body = data[V2_FIXED:total]
    size = 4 if family == AF_INET else 16
    make = ipaddress.IPv4Address if family == AF_INET else ipaddress.IPv6Address
    if family == AF_INET:        # the common case, without ipaddress objects
        src = "%d.%d.%d.%d" % tuple(body[:4])
        dst = "%d.%d.%d.%d" % tuple(body[4:8])
    else:
        src = _canonical(make(body[:size]))
        dst = _canonical(make(body[size:2 * size]))
    ports = body[2 * size:2 * size + 4]
    return Header(total, 2, (src, int.from_bytes(ports[:2], "big"),
                             dst, int.from_bytes(ports[2:], "big")))


def _canonical(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped if mapped is not None else address)


# --proxy-from: the sources whose connections must begin with a header.

def parse_sources(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """`CIDR[,CIDR...]` (a bare address is a /32 or /128); ValueError if bad."""
    nets = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise ValueError("empty address")
        nets.append(ipaddress.ip_network(item, strict=False))
    return tuple(nets)


def trusted(ip: str, sources) -> bool:
    """Is a connection from `ip` (canonical text) one of the balancers'?"""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    return any(address.version == net.version and address in net for net in sources)
