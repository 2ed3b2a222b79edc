"""The address part of a rule line -> the cdb keys it stands for (pure).

Vanilla forms (ucspi-tcp 0.88, spec §2.3) are reproduced byte for byte:
everything is a literal key except the first `a-b` range of an address
without `=` or `@`.  Our extensions produce only keys that the unchanged
lookup order already tries (see keys), so the C tcpserver and
tcprulescheck honour IPv4 CIDR rules too:

  * IPv4 CIDR `a.b.c.d/n` -> dotted prefixes at the next octet boundary;
  * IPv6 host -> fully expanded upper-case text; IPv6 CIDR -> nibble
    prefixes at the next 4-bit boundary; `::ffff:a.b.c.d[/n]` -> the IPv4
    form, because IPv4-mapped clients are looked up with their IPv4 keys.

Each result carries its prefix length, so the compiler can let the more
specific of two rules win when they produce the same key.
"""

from __future__ import annotations

ULONG_MASK = (1 << 64) - 1  # scan_ulong in the original wraps like C
IPV4_BITS = 32
IPV6_BITS = 128
IPV6_CHARS = frozenset(b"0123456789abcdefABCDEF:.")
MAPPED_PREFIX = 0xFFFF << 32  # ::ffff:0:0/96, the IPv4-mapped block
OCTET_TEXT = tuple(b"%d" % n for n in range(256))   # b"0" ... b"255"
OCTET_DOT = tuple(text + b"." for text in OCTET_TEXT)  # b"0." ... b"255."
OCTET_VALUE = {text: n for n, text in enumerate(OCTET_TEXT)}  # strict: no b"01"
HEX_DIGIT = tuple(b"%X" % n for n in range(16))
HEX_DIGIT_COLON = tuple(digit + b":" for digit in HEX_DIGIT)


class AddressError(ValueError):
    """The address cannot be compiled; the text says what was expected."""


class Keys:
    """Keys for one rule line.

    `prefixlen` is how many address bits the rule fixes (None for keys that
    are not addresses: host names, user@, literals); `granular` is False
    when the keys are wider than the rule (a /9 written as /16 keys), i.e.
    when a more specific rule may claim the same key.
    """
    __slots__ = ("keys", "prefixlen", "granular", "note")

    def __init__(self, keys: tuple[bytes, ...], prefixlen: int | None = None,
                 granular: bool = True, note: str | None = None):
        self.keys = keys
        self.prefixlen = prefixlen
        self.granular = granular
        self.note = note  # a warning about this address, if any


def _ulong(digits: bytes) -> int | None:
    """scan_ulong over the whole span: None unless every byte is a digit."""
    if digits and not digits.isdigit():
        return None
    value = 0
    for byte in digits:
        value = (value * 10 + byte - 48) & ULONG_MASK
    return value


def expand_range(addr: bytes) -> tuple[bytes, ...]:
    """Vanilla range expansion of the first `-` (caller checked for `-`)."""
    dash = addr.find(b"-")
    start = addr.rfind(b".", 0, dash) + 1
    end = addr.find(b".", dash + 1)
    if end == -1:
        end = len(addr)
    first = _ulong(addr[start:dash])
    last = _ulong(addr[dash + 1:end])
    if first is None or last is None:
        raise AddressError("expected digits on both sides of the '-' of a range")
    last = min(last, 255)
    head, tail = addr[:start], addr[end:]
    return tuple(head + b"%d" % n + tail for n in range(first, last + 1))


def _ipv4_prefix_keys(octets: bytes, prefixlen: int) -> Keys:
    """Dotted keys covering the /prefixlen of the four `octets` (host bits
    ignored), cut at the next octet boundary.  Only the last written octet
    varies, as prefixlen > boundary - 8."""
    whole = -(-prefixlen // 8)  # octets written in each key
    host_bits = whole * 8 - prefixlen
    head = b"".join([OCTET_DOT[octet] for octet in octets[:whole - 1]])
    last = OCTET_TEXT if whole == 4 else OCTET_DOT
    first = octets[whole - 1] >> host_bits << host_bits
    count = 1 << host_bits
    keys = tuple([head + octet for octet in last[first:first + count]])
    return Keys(keys, prefixlen, count == 1)


def _prefix_length(text: bytes, maximum: int, what: str) -> int:
    if not text.isdigit() or len(text) > 3:
        raise AddressError(f"expected a prefix length 1-{maximum} after '/' in {what}")
    value = int(text)
    if value == 0:
        raise AddressError(f"a /0 {what} matches everything: use the empty address "
                           "(a line starting with ':') instead")
    if value > maximum:
        raise AddressError(f"expected a prefix length 1-{maximum} after '/' in {what}")
    return value


def _parse_ipv4(text: bytes) -> bytes | None:
    """Strict dotted quad (no leading zeros) -> its four octets, else None."""
    parts = text.split(b".")
    if len(parts) != 4:
        return None
    try:
        return bytes(map(OCTET_VALUE.__getitem__, parts))
    except KeyError:
        return None


def ipv4_cidr(addr: bytes) -> Keys:
    """`a.b.c.d/n` -> dotted keys; errors name what was expected."""
    text, _, length = addr.partition(b"/")
    octets = _parse_ipv4(text)
    if octets is None:
        raise AddressError("expected an IPv4 CIDR block like 10.0.0.0/8 "
                           "(four decimal octets, '/', a length)")
    prefixlen = _prefix_length(length, IPV4_BITS, "IPv4 CIDR")
    keys = _ipv4_prefix_keys(octets, prefixlen)
    host_mask = (1 << (IPV4_BITS - prefixlen)) - 1
    net = int.from_bytes(octets, "big")
    if net & host_mask:
        network = _dotted(net & ~host_mask).decode("ascii")
        keys.note = (f"host bits set in {addr.decode('ascii')}: "
                     f"rule covers {network}/{prefixlen}")
    return keys


_last_ipv6: list = [None, None]  # the line split and the key maker parse the same text


def _parse_ipv6(text: bytes) -> int | None:
    """The IPv6 address `text` as an int, or None."""
    if _last_ipv6[0] == text:
        return _last_ipv6[1]
    if b":" not in text or not IPV6_CHARS.issuperset(text):
        return None
    value = _parse_hex_groups(text) if b"." not in text else None
    if value is None:
        value = _parse_ipv6_slowly(text)
    _last_ipv6[0], _last_ipv6[1] = text, value
    return value


def _parse_hex_groups(text: bytes) -> int | None:
    """The common spellings (hex groups, at most one `::`; the caller
    checked that only hex digits and colons occur) -> int.  None means
    "not decided here": _parse_ipv6_slowly then accepts or refuses it."""
    head, double, tail = text.partition(b"::")
    groups = head.split(b":") if head else []
    if double:
        low = tail.split(b":") if tail else []
        if len(groups) + len(low) > 7:
            return None
        groups += [b"0"] * (8 - len(groups) - len(low)) + low
    elif len(groups) != 8:
        return None
    if b"" in groups or max(map(len, groups)) > 4:
        return None
    return int(b"".join([group.rjust(4, b"0") for group in groups]), 16)


def _parse_ipv6_slowly(text: bytes) -> int | None:
    """Every other spelling (embedded IPv4, malformed text), left to the
    standard library; imported only here, so IPv4 files never pay for it."""
    import ipaddress
    try:
        return int(ipaddress.IPv6Address(text.decode("ascii")))
    except ValueError:
        return None


def ipv6_text(value: int, nibbles: int = 32) -> bytes:
    """Key text for the first `nibbles` hex digits of an IPv6 address: the
    fully expanded upper-case form (keys.ipv6_key / ipv6_prefix_key),
    cut after the digit, a group's colon kept on a group boundary."""
    full = value.to_bytes(16, "big").hex(":", 2).upper().encode()
    return full if nibbles == 32 else full[:nibbles // 4 * 5 + nibbles % 4]


def ipv6_prefix_keys(net: int, nibbles: int, count: int) -> tuple[bytes, ...]:
    """Keys of `count` consecutive `nibbles`-digit cuts from `net` on: only
    the last digit of the cut varies (count <= 16 - that digit)."""
    key = ipv6_text(net, nibbles)
    if count == 1:
        return (key,)
    # The last digit sits before a group's colon when the cut ends one.
    if key.endswith(b":"):
        head, first, digits = key[:-2], key[-2:-1], HEX_DIGIT_COLON
    else:
        head, first, digits = key[:-1], key[-1:], HEX_DIGIT
    start = int(first, 16)
    return tuple([head + digit for digit in digits[start:start + count]])


def _dotted(value: int) -> bytes:
    return b".".join([OCTET_TEXT[octet] for octet in value.to_bytes(4, "big")])


def looks_like_ipv6(addr: bytes) -> bool:
    """True when `addr` is `[user@]IPv6[/n]` -- decides the IPv6 line split."""
    host = addr.rpartition(b"@")[2]
    return _parse_ipv6(host.partition(b"/")[0]) is not None


def ipv6_address(addr: bytes) -> Keys:
    """`[user@]IPv6[/n]` (checked by looks_like_ipv6) -> keys."""
    user, at, host = addr.rpartition(b"@")
    text, slash, length = host.partition(b"/")
    value = _parse_ipv6(text)
    if value is None:
        raise AddressError("expected an IPv6 address")
    mapped = value >> 32 == MAPPED_PREFIX >> 32
    if not slash:
        key = _dotted(value & 0xFFFFFFFF) if mapped else ipv6_text(value)
        if at:
            return Keys((user + at + key,))
        note = None
        if text.endswith(b"::") and text != b"::":
            note = (f"{text.decode()} is a single address; write "
                    f"{text.decode()}/N for a network")
        return Keys((key,), IPV4_BITS if mapped else IPV6_BITS, True, note)
    if at:
        raise AddressError("expected a single address after 'user@' "
                           "(the lookup tries user@ only with the full address)")
    prefixlen = _prefix_length(length, IPV6_BITS, "IPv6 CIDR")
    host_bits = IPV6_BITS - prefixlen
    net = value >> host_bits << host_bits
    note = None
    if net != value:
        note = f"host bits set in {addr.decode()}: rule covers the /{prefixlen} of it"
    if prefixlen == 96 and mapped:
        raise AddressError("::ffff:0:0/96 is every IPv4 address, which IPv4 keys "
                           "cannot express: write the empty address (a line "
                           "starting with ':') or 0.0.0.0/1 and 128.0.0.0/1")
    if prefixlen > 96 and mapped:
        keys = _ipv4_prefix_keys(net.to_bytes(16, "big")[12:], prefixlen - 96)
        return Keys(keys.keys, keys.prefixlen, keys.granular, note)
    nibbles = -(-prefixlen // 4)
    count = 1 << (nibbles * 4 - prefixlen)
    return Keys(ipv6_prefix_keys(net, nibbles, count), prefixlen, count == 1, note)


def address_keys(addr: bytes) -> Keys:
    """Keys for an address found before the first colon (vanilla split)."""
    keys = _vanilla_split_keys(addr)
    if addr.endswith((b" ", b"\t")):
        # The original keeps the blank in the key, as we do (byte-identical
        # cdb): no client address or name ever ends with one.
        keys.note = _also(keys.note, f"address \"{_shown(addr)}\" ends with a blank, "
                                     "so the key never matches")
    return keys


def _also(note: str | None, more: str) -> str:
    return more if note is None else f"{note}; {more}"


def _shown(addr: bytes) -> str:
    return addr.decode("ascii", "backslashreplace").replace("\t", "\\t")


def _vanilla_split_keys(addr: bytes) -> Keys:
    if b"=" in addr or b"@" in addr:
        if b"@" in addr and b"=" not in addr and b"/" in addr:
            return Keys((addr,), note="user@ with a CIDR block never matches "
                                      "(the lookup tries user@ only with the full address)")
        return Keys((addr,))
    if b"/" in addr:
        keys = ipv4_cidr(addr)
        # The one line the original reads differently yet accepts: a dead
        # rule there comes alive here, and dies again, without a word, when
        # the file is compiled with the C tcprules.
        keys.note = _also(keys.note, f"{_shown(addr)} is an IPv4 CIDR block, an extension: "
                                     "the C tcprules stores it as a literal key that "
                                     "never matches, so this rule takes effect only when "
                                     "compiled by this tcprules (recompiling the file "
                                     "with the C tcprules silently disables it)")
        return keys
    if b"-" in addr:
        return Keys(expand_range(addr), _vanilla_prefixlen(addr))
    return Keys((addr,), _vanilla_prefixlen(addr))


def _vanilla_prefixlen(addr: bytes) -> int | None:
    """Specificity of a literal dotted key: 32 for a host, 8/16/24 for
    `a.`, `a.b.`, `a.b.c.`, 0 for the empty key, None for anything else."""
    if not addr:
        return 0
    dots = addr.count(b".")
    if addr.endswith(b".") and dots <= 3:
        return 8 * dots
    return IPV4_BITS if dots == 3 else None
