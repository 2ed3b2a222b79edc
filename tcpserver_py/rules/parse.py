"""One rule line -> cdb records, exactly as ucspi-tcp 0.88 tcprules (pure).

Line syntax (spec §2.2): `#` starts a comment; trailing spaces, tabs and
newlines are stripped (not `\\r`, not leading blanks); the address is
everything before the first `:`; then `allow` or `deny`, then any number of
`,NAME=QVALUEQ` where Q is any single byte.  A line without a colon is
skipped by the original without a word: we warn.

IPv6 extension: the original splits at the first `:`, which no valid rule
for an IPv6 address survives.  When that split fails and the text before the
first `:allow`/`:deny` is an IPv6 address or block, we split there instead
(as Debian's ucspi-tcp-ipv6 does), so every line the original accepts still
compiles to the same bytes.

All work is on bytes: rule files are not text in any particular encoding.
"""

from __future__ import annotations

from .addr import AddressError, Keys, address_keys, ipv6_address, looks_like_ipv6

TRAILING_BLANKS = b" \t\n"
DENY_ITEM = b"D\0"
SHOWN_BYTES = 200  # longest part of a bad line echoed in a message


class RuleSyntaxError(ValueError):
    """A line the compiler refuses; `reason` says what was expected."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ParsedLine:
    """What one line contributes: records (all with the same value) and an
    optional warning.  A skipped line has no keys."""
    __slots__ = ("keys", "value", "prefixlen", "granular", "warning")

    def __init__(self, keys: tuple[bytes, ...] = (), value: bytes = b"",
                 prefixlen: int | None = None, granular: bool = True,
                 warning: str | None = None):
        self.keys = keys
        self.value = value
        self.prefixlen = prefixlen
        self.granular = granular
        self.warning = warning


SKIP = ParsedLine()


def strip_line(line: bytes) -> bytes:
    """Trailing spaces, tabs and newlines go; a `\\r` stays (as in the original)."""
    return line.rstrip(TRAILING_BLANKS)


def parse_instruction(text: bytes) -> bytes:
    """`allow|deny` followed by `,NAME=QVALUEQ` items -> encoded cdb value."""
    if text.startswith(b"allow"):
        items = []
        pos = 5
    elif text.startswith(b"deny"):
        items = [DENY_ITEM]
        pos = 4
    else:
        raise RuleSyntaxError('expected "allow" or "deny" right after the first colon')
    end = len(text)
    while pos < end:
        if text[pos] != 44:  # ","
            raise RuleSyntaxError(
                f"expected ',' at column {pos + 1} of the instruction, "
                f"found {show(text[pos:pos + 1])}")
        equals = text.find(b"=", pos + 1)
        if equals == -1:
            raise RuleSyntaxError("expected '=' after the variable name "
                                  f"{show(text[pos + 1:])}")
        if equals + 1 == end:
            raise RuleSyntaxError("expected a quote byte after '=' of "
                                  f"{show(text[pos + 1:equals])}")
        quote = text[equals + 1:equals + 2]
        close = text.find(quote, equals + 2)
        if close == -1:
            raise RuleSyntaxError(f"unterminated value: no closing {show(quote)} for "
                                  f"{show(text[pos + 1:equals])}")
        items.append(b"+" + text[pos + 1:equals] + b"=" + text[equals + 2:close] + b"\0")
        pos = close + 1
    return b"".join(items)


def parse_line(raw: bytes, known: dict[bytes, bytes] | None = None) -> ParsedLine:
    """Parse one input line (without its `\\n`); raise RuleSyntaxError.
    `known` maps instruction texts already parsed to their values."""
    if not raw or raw[0] == 35:  # "#"
        return SKIP
    line = strip_line(raw)
    colon = line.find(b":")
    if colon == -1:
        if not line:
            return SKIP
        if line == b"\r" or line.endswith(b"\r"):
            return ParsedLine(warning="line ends with a carriage return and has no "
                                      "colon: ignored (CRLF file?)")
        return ParsedLine(warning="no colon: line ignored (expected ADDRESS:allow "
                                  "or ADDRESS:deny)")
    addr, instruction = line[:colon], line[colon + 1:]
    value = known.get(instruction) if known else None
    if value is None and not instruction.startswith((b"allow", b"deny")):
        # The first-colon split fails.  An IPv6 line is the only way out:
        # its first colon is inside the address, and no `:allow`/`:deny`
        # comes before the cut ipv6_split makes, so a line the original
        # accepts never gets here.
        split = ipv6_split(line)
        if split is None:
            _instruction(line, instruction)  # raises the reason
        addr, instruction = split
        value = known.get(instruction) if known else None
        compile_address = ipv6_address
    else:
        compile_address = address_keys
    if value is None:
        value = _instruction(line, instruction)
    keys = _address(compile_address, addr)
    warning = keys.note
    if addr[:1] in (b" ", b"\t"):
        warning = "address starts with a blank, so the key never matches"
    return ParsedLine(keys.keys, value, keys.prefixlen, keys.granular, warning)


def _instruction(line: bytes, text: bytes) -> bytes:
    try:
        return parse_instruction(text)
    except RuleSyntaxError as error:
        raise _explain_cr(line, error) from None


def _address(compile_address, addr: bytes) -> Keys:
    try:
        return compile_address(addr)
    except AddressError as error:
        raise RuleSyntaxError(str(error)) from None


def _explain_cr(line: bytes, error: RuleSyntaxError) -> RuleSyntaxError:
    if line.endswith(b"\r"):
        return RuleSyntaxError("line ends with a carriage return (CRLF file? "
                               "convert it with dos2unix)")
    return error


def ipv6_split(line: bytes) -> tuple[bytes, bytes] | None:
    """(address, instruction) at the first `:allow`/`:deny` when the text
    before it is an IPv6 address or block, else None."""
    cut = -1
    for word in (b":allow", b":deny"):
        found = line.find(word)
        if found != -1 and (cut == -1 or found < cut):
            cut = found
    if cut == -1 or not looks_like_ipv6(line[:cut]):
        return None
    return line[:cut], line[cut + 1:]


def show(data: bytes) -> str:
    """Printable rendering of rule bytes for messages (never decodes UTF-8)."""
    cut = data[:SHOWN_BYTES]
    out = []
    for byte in cut:
        if byte == 92:
            out.append("\\\\")
        elif 32 <= byte < 127:
            out.append(chr(byte))
        elif byte == 13:
            out.append("\\r")
        elif byte == 9:
            out.append("\\t")
        else:
            out.append(f"\\x{byte:02x}")
    if len(data) > SHOWN_BYTES:
        out.append(f"... ({len(data)} bytes)")
    return "".join(out)
