"""qmail-smtpd's path parser (addrparse) for `MAIL FROM:` and `RCPT TO:`.

Behaviour copied from qmail: the path starts after the first `<` (ending at
the first unquoted `>`), or, without `<`, after the first `:` and its spaces
(ending at the first unquoted space); the keyword is never checked; a source
route (`@a,@b:`) is dropped; `\\` escapes and `"` quoting are removed; anything
after the path (ESMTP parameters) is ignored; `[ip]` of this host after the
last `@` becomes `localiphost`; 900 bytes or more is a syntax error.

One deliberate difference: any control byte (below 0x20, or 0x7F) in the
resulting address is a syntax error.  C qmail truncates at NUL; copying such a
byte into the envelope would let `<victim@other\\0Tx@local>` add a recipient.
"""

MAX_ADDRESS = 900      # qmail: addr.len (with its NUL) > 900 is refused


def has_control_byte(data: bytes) -> bool:
    return any(b < 0x20 or b == 0x7F for b in data)


def parse_path(arg: bytes, local_ip_host=None, is_local_ip=None):
    """The address in a MAIL/RCPT argument, or None for a syntax error.

    local_ip_host: replacement for `[d.d.d.d]` domains naming this host (None:
    never rewrite); is_local_ip(str) -> bool decides which addresses are ours.
    """
    nul = arg.find(b"\0")
    if nul >= 0:
        # qmail reads the argument as a C string, up to the NUL.  A NUL after
        # the path changes nothing; one that changes the path is refused.
        address = _parse(arg, local_ip_host, is_local_ip)
        if address != _parse(arg[:nul], local_ip_host, is_local_ip):
            return None
        return address
    return _parse(arg, local_ip_host, is_local_ip)


def _parse(arg, local_ip_host, is_local_ip):
    terminator = b">"
    lt = arg.find(b"<")
    if lt >= 0:
        rest = arg[lt + 1:]
    else:  # "partner should go read rfc 821"
        terminator = b" "
        colon = arg.find(b":")
        rest = arg[colon + 1:] if colon >= 0 else b""
        rest = rest.lstrip(b" ")
    if rest[:1] == b"@":
        colon = rest.find(b":")
        rest = rest[colon + 1:] if colon >= 0 else b""
    address = _unquote(rest, terminator)
    if local_ip_host is not None and is_local_ip is not None:
        address = _rewrite_local_literal(address, local_ip_host, is_local_ip)
    if len(address) + 1 > MAX_ADDRESS or has_control_byte(address):
        return None
    return address


def _unquote(rest: bytes, terminator: bytes) -> bytes:
    # Fast path: nothing to unquote.
    if b"\\" not in rest and b'"' not in rest:
        end = rest.find(terminator)
        return rest if end < 0 else rest[:end]
    out = bytearray()
    escaped = quoted = False
    term = terminator[0]
    for ch in rest:
        if escaped:
            out.append(ch)
            escaped = False
        elif not quoted and ch == term:
            break
        elif ch == 0x5C:        # backslash
            escaped = True
        elif ch == 0x22:        # double quote
            quoted = not quoted
        else:
            out.append(ch)
    return bytes(out)


def _rewrite_local_literal(address: bytes, local_ip_host: bytes, is_local_ip) -> bytes:
    at = address.rfind(b"@")
    if at < 0:
        return address
    domain = address[at + 1:]
    if len(domain) < 9 or domain[:1] != b"[" or domain[-1:] != b"]":
        return address
    ip = ipv4_text(domain[1:-1])
    if ip is None or not is_local_ip(ip):
        return address
    return address[:at + 1] + local_ip_host


def ipv4_text(text: bytes):
    """Canonical dotted quad for `d.d.d.d`, or None if it is not one.

    As qmail's ip_scan(): each part is one or more digits, stored in a byte,
    so `0127` is 127 and `257` is 1.
    """
    parts = text.split(b".")
    if len(parts) != 4:
        return None
    numbers = []
    for part in parts:
        if not part or not part.isdigit() or not part.isascii():
            return None
        numbers.append(str(int(part) % 256))
    return ".".join(numbers)


def split_address(address: bytes):
    """(local part, domain) at the last `@`; domain is None without `@`."""
    at = address.rfind(b"@")
    if at < 0:
        return address, None
    return address[:at], address[at + 1:]


def esmtp_size(arg: bytes):
    """The SIZE=n parameter after the path of a MAIL argument, or None."""
    gt = arg.find(b">")
    if gt < 0:
        return None
    for word in arg[gt + 1:].split(b" "):
        if word[:5].upper() == b"SIZE=" and word[5:].isdigit() and len(word) < 30:
            return int(word[5:])
    return None
