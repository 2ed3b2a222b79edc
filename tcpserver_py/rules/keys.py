"""Rule lookup logic shared by tcpserver, tcp-env and tcprulescheck (pure).

Keys are tried in ucspi-tcp 0.88 order (spec §1.6); the first key present in
the cdb decides.  IPv4 clients (including IPv4-mapped IPv6 ones) use the
vanilla dotted keys, so cdbs made by the C tcprules work unchanged.

IPv6 key format (our choice, see README "IPv6 rules"):
  * a single address is written fully expanded in upper-case hex,
    ``2001:0DB8:0000:0000:0000:0000:0000:0001`` -- the same key ucspi-tcp6
    writes, so host rules are shared with that implementation;
  * a prefix is that text cut after a whole number of hex digits (4-bit
    steps), with the group's colon kept when the cut falls on a group
    boundary: ``2001:0DB8:`` is 2001:db8::/32, ``2001:0DB8:00`` is /40.
    Textual prefixes make "longest prefix wins" a plain longest-key-first
    search, exactly like the dotted IPv4 prefixes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Iterable, Iterator

IPV6_NIBBLES = 32


def canonical_ip(text: str) -> str:
    """Return the address as the rules see it: dotted quad for IPv4 and
    IPv4-mapped IPv6, compressed lower-case text for other IPv6.

    Raises ValueError for text that is not an IP address.
    """
    addr = ipaddress.ip_address(text.split("%", 1)[0])
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def ipv6_key(addr: ipaddress.IPv6Address) -> str:
    """Fully expanded upper-case form of an IPv6 address (the host key)."""
    return addr.exploded.upper()


def ipv6_prefix_key(addr: ipaddress.IPv6Address, nibbles: int) -> str:
    """Key for the first `nibbles` hex digits of `addr` (1 <= nibbles <= 31)."""
    text = ipv6_key(addr)
    groups, rest = divmod(nibbles, 4)
    cut = groups * 5 + rest  # each whole group is 4 digits and a colon
    return text[:cut]


def ip_keys(ip: str) -> tuple[str, list[str]]:
    """Return (host key, prefix keys longest first) for a canonical address."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        parts = ip.split(".")
        prefixes = [".".join(parts[:n]) + "." for n in (3, 2, 1)]
        return ip, prefixes
    prefixes = [ipv6_prefix_key(addr, n) for n in range(IPV6_NIBBLES - 1, 0, -1)]
    return ipv6_key(addr), prefixes


def candidate_keys(ip: str, host: bytes | None = None,
                   info: bytes | None = None) -> Iterator[bytes]:
    """Yield the cdb keys to try, in ucspi-tcp order.

    `ip` is canonical (see canonical_ip); `host` is the remote host name if
    known (after -H/-p processing), `info` the ident answer if set (it may
    be empty, which gives the key ``@IP`` exactly as the original does).
    """
    host_key, prefixes = ip_keys(ip)
    return _keys_in_order(host_key.encode("ascii"),
                          (prefix.encode("ascii") for prefix in prefixes), host, info)


def _keys_in_order(ip_key: bytes, prefixes: Iterable[bytes], host: bytes | None,
                   info: bytes | None) -> Iterator[bytes]:
    """info@ip, info@=host, ip, =host, the address prefixes (longest first),
    =.suffixes of host (longest first), =, and the empty key."""
    if info is not None:
        yield info + b"@" + ip_key
        if host is not None:
            yield info + b"@=" + host
    yield ip_key
    if host is not None:
        yield b"=" + host
    yield from prefixes
    if host is not None:
        dot = host.find(b".")
        while dot != -1:
            yield b"=" + host[dot:]
            dot = host.find(b".", dot + 1)
        yield b"="
    yield b""


@dataclass(frozen=True)
class RuleValue:
    """A decoded rule: whether it denies, and the variables it sets, in order."""
    deny: bool = False
    env: tuple[tuple[bytes, bytes], ...] = field(default_factory=tuple)


def raw_items(data: bytes) -> Iterator[bytes]:
    """The NUL-terminated items of a cdb value; bytes after the last NUL are
    ignored, as in ucspi-tcp."""
    start = 0
    while True:
        end = data.find(b"\0", start)
        if end == -1:
            return
        yield data[start:end]
        start = end + 1


def value_items(data: bytes) -> Iterator[tuple[str, tuple[bytes, bytes] | None]]:
    """Yield ('deny', None) and ('set', (name, value)) items in file order.

    Items with an unknown first byte and `+` items without `=` are ignored,
    as in ucspi-tcp.
    """
    for item in raw_items(data):
        if item[:1] == b"D":
            yield "deny", None
        elif item[:1] == b"+":
            name, eq, value = item[1:].partition(b"=")
            if eq:
                yield "set", (name, value)


def decode_value(data: bytes) -> RuleValue:
    """Decode a cdb value into a RuleValue (variables of deny rules kept)."""
    deny = False
    env = []
    for kind, pair in value_items(data):
        if kind == "deny":
            deny = True
        else:
            env.append(pair)
    return RuleValue(deny=deny, env=tuple(env))


def encode_value(deny: bool, env: list[tuple[bytes, bytes]]) -> bytes:
    """Encode a rule as tcprules does: `D\\0` first, then `+NAME=VALUE\\0`."""
    out = [b"D\0"] if deny else []
    out.extend(b"+" + name + b"=" + value + b"\0" for name, value in env)
    return b"".join(out)


def text_candidate_keys(ip: bytes, host: bytes | None = None,
                        info: bytes | None = None) -> Iterator[bytes]:
    """Keys in ucspi-tcp 0.88 order for an address taken as plain text, the
    way the original tcprulescheck treats whatever TCPREMOTEIP holds: every
    prefix of it that ends in `.`, longest first (the whole text too if it
    ends in `.`).  For a dotted quad this equals candidate_keys()."""
    prefixes = (ip[:end] for end in range(len(ip), 0, -1) if ip[end - 1] == 0x2E)  # "."
    return _keys_in_order(ip, prefixes, host, info)
