"""The qmail-queue envelope and qmail-smtpd's Received line (pure; clock passed in)."""

# netqmail 1.06's received.c issafe(); notqmail later added `[` and `]`.
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.@%+/=:-")
_MONTHS = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun",
           b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec")


def envelope_bytes(sender: bytes, recipients) -> bytes:
    """`F<sender>\\0` + `T<recipient>\\0` each + `\\0` (qmail-queue's fd 1)."""
    parts = [b"F", sender, b"\0"]
    for recipient in recipients:
        parts += [b"T", recipient, b"\0"]
    parts.append(b"\0")
    return b"".join(parts)


def parse_envelope(data: bytes):
    """(sender, [recipients], length of the envelope) or None if malformed.

    Records end with NUL; the first empty record ends the envelope.  Records
    are never empty otherwise (each starts with F or T), so this is exact.
    """
    if data[:1] != b"F":
        return None
    records = []
    pos = 0
    while True:
        end = data.find(b"\0", pos)
        if end < 0:
            return None
        if end == pos:
            break
        records.append(data[pos:end])
        pos = end + 1
    recipients = []
    for record in records[1:]:
        if record[:1] != b"T":
            return None
        recipients.append(record[1:])
    return records[0][1:], recipients, pos + 1


def safe(text: bytes) -> bytes:
    """qmail's safeput(): every byte outside A-Za-z0-9 and `.@%+/=:-` becomes `?`."""
    return bytes(ch if ch in _SAFE else 0x3F for ch in text)


def date822(unix_time: int) -> bytes:
    """`24 Nov 2026 18:00:54 -0000` (UTC, no weekday, day not padded)."""
    days, seconds = divmod(int(unix_time), 86400)
    year, month, day = _civil_from_days(days)
    hh, rest = divmod(seconds, 3600)
    mm, ss = divmod(rest, 60)
    return b"%d %s %d %02d:%02d:%02d -0000" % (day, _MONTHS[month - 1], year, hh, mm, ss)


def _civil_from_days(days: int):
    # Howard Hinnant's algorithm: days since 1970-01-01 -> (year, month, day).
    days += 719468
    era = days // 146097
    doe = days - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    year = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return (year + 1 if month <= 2 else year), month, day


def received_line(*, remotehost: bytes, helo: bytes, remoteinfo, remoteip: bytes,
                  local: bytes, unix_time: int, protocol: bytes = b"SMTP") -> bytes:
    """qmail-smtpd's two-line Received header, LF line ends.

    `(HELO x)` appears only when the HELO argument differs from remotehost
    (case-insensitively); pass helo=remotehost when the client never greeted.
    remoteinfo None leaves out the `info@` part.  protocol is qmail's `SMTP`,
    or RFC 3848's ESMTPS / ESMTPA / ESMTPSA under TLS and/or AUTH.
    """
    parts = [b"Received: from ", safe(remotehost)]
    if helo.lower() != remotehost.lower():
        parts += [b" (HELO ", safe(helo), b")"]
    parts.append(b" (")
    if remoteinfo is not None:
        parts += [safe(remoteinfo), b"@"]
    parts += [safe(remoteip), b")\n  by ", safe(local), b" with ", protocol, b"; ",
              date822(unix_time), b"\n"]
    return b"".join(parts)
