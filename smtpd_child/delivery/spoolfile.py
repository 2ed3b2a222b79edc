"""The built-in spool's file format (pure).

One file per message:  the line `smtpd-spool 1` LF, then the envelope exactly
as qmail-queue reads it on fd 1 (`F<sender>\\0`, `T<recipient>\\0` for each,
then `\\0`), then the message exactly as qmail-queue reads it on fd 0 (LF line
ends, our Received line first).  Addresses never hold NUL (the parser refuses
control bytes), so the envelope's end is unambiguous.
"""

from smtpd_child.smtp.envelope import envelope_bytes, parse_envelope

MAGIC = b"smtpd-spool 1\n"


def header(sender: bytes, recipients) -> bytes:
    return MAGIC + envelope_bytes(sender, recipients)


def parse(data: bytes):
    """(sender, [recipients], message bytes), or None if not a spool file."""
    if not data.startswith(MAGIC):
        return None
    parsed = parse_envelope(data[len(MAGIC):])
    if parsed is None:
        return None
    sender, recipients, length = parsed
    return sender, recipients, data[len(MAGIC) + length:]
