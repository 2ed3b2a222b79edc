"""Prefix rules that longer keys cover completely (pure).

The lookup tries longer address keys first, so a prefix key whose every
one-step-longer child is also a key is never found: `10.1.2.` beside
`10.1.2.0` ... `10.1.2.255` (or beside `10.1.2.0/25` and `10.1.2.128/25`,
which compile to those host keys).  A child that is itself a key counts
whatever its own children are, so one pass over the distinct keys is enough.

IPv4: `a.`, `a.b.`, `a.b.c.` have 256 children each.  IPv6 (our format):
a cut of n hex digits has 16 children of n+1 digits.
"""

from __future__ import annotations

from collections.abc import Iterable

OCTETS = frozenset(b"%d" % n for n in range(256))
HEX_UPPER = frozenset(b"0123456789ABCDEF")
IPV4_CHILDREN = 256
IPV6_CHILDREN = 16
IPV6_HOST_CHARS = 39


def ipv4_parent(key: bytes) -> bytes | None:
    """`a.b.c.d` -> `a.b.c.`, `a.b.c.` -> `a.b.`, `a.b.` -> `a.`; else None."""
    body = key[:-1] if key.endswith(b".") else key
    parts = body.split(b".")
    if not 1 < len(parts) <= 4 or (len(parts) == 4) == key.endswith(b"."):
        return None
    if not all(part in OCTETS for part in parts):
        return None
    return b".".join(parts[:-1]) + b"."


def ipv6_parent(key: bytes) -> bytes | None:
    """Our IPv6 key of n+1 hex digits -> the key of its first n digits."""
    if not 1 < len(key) <= IPV6_HOST_CHARS or key[4:5] not in (b":", b""):
        return None
    digits = key.replace(b":", b"")
    if not HEX_UPPER.issuperset(digits) or len(digits) < 2:
        return None
    if key != _cut(digits):
        return None
    return _cut(digits[:-1])


def _cut(digits: bytes) -> bytes:
    """Hex digits -> key text: groups of four joined by `:`, with the colon
    kept after a complete group unless all 32 digits are there."""
    groups = [digits[i:i + 4] for i in range(0, len(digits), 4)]
    text = b":".join(groups)
    if len(digits) % 4 == 0 and len(digits) < 32:
        text += b":"
    return text


def covered_prefixes(distinct_keys: Iterable[bytes],
                     prefixes: set[bytes]) -> dict[bytes, bytes]:
    """{prefix: one child key} for every prefix in `prefixes` (keys present
    in the cdb) all of whose children are keys too."""
    children: dict[bytes, int] = {}
    example: dict[bytes, bytes] = {}
    for key in distinct_keys:
        # Cheap guess of the parent first; the exact parse only for keys
        # whose guessed parent is one of the (few) prefix rules.
        if key[-1:] == b".":
            guess = key[:key.rfind(b".", 0, -1) + 1]
        elif b":" in key[4:5] or len(key) < 4:
            guess = key[:-2] if key[-1:] == b":" else key[:-1]
        else:
            guess = key[:key.rfind(b".") + 1]
        if guess not in prefixes:
            continue
        parent = ipv4_parent(key) if b"." in key else ipv6_parent(key)
        if parent is not None and parent in prefixes:
            children[parent] = children.get(parent, 0) + 1
            example.setdefault(parent, key)
    covered = {}
    for parent, count in children.items():
        needed = IPV4_CHILDREN if parent.endswith(b".") else IPV6_CHILDREN
        if count == needed:
            covered[parent] = example[parent]
    return covered


def is_prefix(key: bytes) -> bool:
    """True for a key that has address children: `a.`, `a.b.`, `a.b.c.`,
    or one of our IPv6 cuts shorter than a host key."""
    if key.endswith(b"."):
        parts = key[:-1].split(b".")
        return len(parts) <= 3 and all(part in OCTETS for part in parts)
    if b":" in key or HEX_UPPER.issuperset(key):
        digits = key.replace(b":", b"")
        return (0 < len(digits) < 32 and HEX_UPPER.issuperset(digits)
                and _cut(digits) == key)
    return False


def prefix_keys(distinct_keys: Iterable[bytes]) -> set[bytes]:
    """The keys that have address children (IPv4 or IPv6 prefixes)."""
    return {key for key in distinct_keys
            if (key[-1:] == b"." or b":" in key or len(key) < 4) and key and is_prefix(key)}
