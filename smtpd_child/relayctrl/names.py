"""SMTP-after-POP decisions, pure: record names, the expiry, freshness.

A record is a file in $RELAY_CTRL_DIR named after the client's address, as
relay-ctrl names it.  The name must be one canonical spelling per address,
or a client recorded by the POP server under one spelling would not be found
by relay-ctrl-check under another: IPv4 is a plain dotted quad (an
IPv4-mapped IPv6 address ::ffff:a.b.c.d is recorded as a.b.c.d), IPv6 is
Python's compressed lower-case form (RFC 5952).  Anything else is refused,
so a hostile TCPREMOTEIP (`../x`, `/`, empty, very long) never becomes a
path: a canonical address holds only hex digits, dots and colons.
"""

DEFAULT_EXPIRY = 900            # seconds, relay-ctrl's default
MAX_EXPIRY = 10 ** 8            # about three years; beyond it a typo, not a policy
CLOCK_SLACK = 60                # a record this far in the future still counts (clock steps)
MAX_ADDRESS_TEXT = 64           # longer than any address spelling with a scope
TEMP_PREFIX = ".relay-ctrl."    # temporary files; never a canonical address
MAX_SHOWN = 40                  # characters of a bad value repeated in a log line
MAX_RECORD_VALUE = 255

_ADDRESS_CHARS = frozenset("0123456789abcdefABCDEF.:")


class BadValue(ValueError):
    """A variable's value that cannot be used; str() is the reason for the log."""


def shown(value: str) -> str:
    """A bad value as a log line may repeat it: bounded and printable."""
    text = value[:MAX_SHOWN].encode("ascii", "backslashreplace").decode("ascii")
    text = "".join(c if " " <= c <= "~" else "?" for c in text)
    return repr(text) + ("..." if len(value) > MAX_SHOWN else "")


def _dotted_quad(text: str):
    """The text itself when it is already a canonical dotted quad, else None."""
    parts = text.split(".")
    if len(parts) != 4:
        return None
    for part in parts:
        if not part.isdigit() or not part.isascii() or len(part) > 3:
            return None
        if (len(part) > 1 and part[0] == "0") or int(part) > 255:
            return None
    return text


def canonical_address(text) -> str:
    """The one spelling an address is recorded and looked up under.

    Raises BadValue for anything that is not a numeric IPv4 or IPv6 address.
    """
    if text is None or text == "":
        raise BadValue("empty address")
    if len(text) > MAX_ADDRESS_TEXT or not set(text) <= _ADDRESS_CHARS:
        raise BadValue(f"not an IP address: {shown(text)}")
    quad = _dotted_quad(text)
    if quad is not None:
        return quad                 # the usual case, without importing ipaddress
    if ":" not in text:
        raise BadValue(f"not an IP address: {shown(text)}")
    import ipaddress               # only for IPv6: a few ms of start-up otherwise
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        raise BadValue(f"not an IP address: {shown(text)}") from None
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def is_record_name(name: str) -> bool:
    try:
        return canonical_address(name) == name
    except BadValue:
        return False


def parse_expiry(value) -> int:
    """$RELAY_CTRL_EXPIRY: unset means 900 s; anything but digits is refused."""
    if value is None:
        return DEFAULT_EXPIRY
    if not value.isascii() or not value.isdigit():
        raise BadValue(f"RELAY_CTRL_EXPIRY is not a number of seconds: {shown(value)}")
    seconds = int(value)
    if seconds > MAX_EXPIRY:
        raise BadValue(f"RELAY_CTRL_EXPIRY is over {MAX_EXPIRY} seconds: {shown(value)}")
    return seconds


def parse_relayclient(value) -> str:
    """$RELAY_CTRL_RELAYCLIENT: the value RELAYCLIENT gets (default empty).

    qmail-smtpd appends RELAYCLIENT to every recipient, so control characters
    in it would reach the envelope: refused.
    """
    if value is None:
        return ""
    if any(c < " " or c == "\x7f" for c in value):
        raise BadValue(f"RELAY_CTRL_RELAYCLIENT holds a control character: {shown(value)}")
    return value


def is_fresh(recorded: float, now: float, expiry: int) -> bool:
    """A record written at `recorded` still lets its client relay at `now`."""
    age = now - recorded
    return -CLOCK_SLACK <= age <= expiry


def record_content(user, domain) -> bytes:
    """What a record holds: who logged in, for abuse handling (relay-ctrl
    keeps $USER and $DOMAIN there too).  Only the file's time decides."""
    lines = []
    for key, value in (("USER", user), ("DOMAIN", domain)):
        if value and len(value) <= MAX_RECORD_VALUE and value.isprintable():
            lines.append(f"{key}={value}\n")
    return "".join(lines).encode("utf-8", "surrogateescape")
