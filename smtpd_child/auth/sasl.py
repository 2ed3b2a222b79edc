"""SASL exchanges of SMTP AUTH (RFC 4954): PLAIN, LOGIN, CRAM-MD5; pure.

An Exchange is started by the AUTH command and fed the client's further
lines.  Every step returns one of
  (CHALLENGE, reply bytes)                 send it and feed the next line
  (CHECK, user, secret, stamp)             ask the checkpassword program
  (REFUSE, reply bytes)                    the exchange failed (no check)
Nothing here ever raises on client input, and no result carries the secret
anywhere but the CHECK tuple, so a password can only reach the checker.
"""

import binascii

from smtpd_child.smtp import replies

CHALLENGE, CHECK, REFUSE = "challenge", "check", "refuse"

PLAIN, LOGIN, CRAM_MD5 = b"PLAIN", b"LOGIN", b"CRAM-MD5"
MAX_FIELD = 1024            # bytes of a user name or password (fd 3 stays one pipe write)

_USERNAME = b"334 VXNlcm5hbWU6\r\n"      # "Username:"
_PASSWORD = b"334 UGFzc3dvcmQ6\r\n"      # "Password:"
_EMPTY = b"334 \r\n"
_BAD_INPUT = (REFUSE, replies.AUTH_MALFORMED)


def b64decode(text: bytes):
    """Strict base64 (RFC 4648 alphabet, padding required), or None."""
    text = text.strip(b" ")
    if len(text) % 4:
        return None
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        return None


def b64encode(data: bytes) -> bytes:
    return binascii.b2a_base64(data, newline=False)


def printable(text: bytes) -> str:
    """A user name for the log: bytes outside printable ASCII and `\\` become \\xNN."""
    return "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else f"\\x{b:02x}" for b in text)


def _valid_field(value: bytes) -> bool:
    return 0 < len(value) <= MAX_FIELD and b"\0" not in value


class Exchange:
    """One AUTH exchange.  `stamp` is what follows the password on fd 3 for
    PLAIN and LOGIN (a timestamp); `challenge` is the CRAM-MD5 challenge."""

    def __init__(self, mechanism: bytes, stamp: bytes, challenge: bytes = b""):
        self.mechanism = mechanism.upper()
        self.stamp = stamp
        self.challenge = challenge
        self.user = None

    def start(self, initial):
        """initial: the initial response (bytes after the mechanism) or None."""
        if self.mechanism == PLAIN:
            if initial is None:
                return CHALLENGE, _EMPTY
            return self._plain(initial)
        if self.mechanism == LOGIN:
            if initial is None:
                return CHALLENGE, _USERNAME
            return self._login_user(initial)
        if self.mechanism == CRAM_MD5:
            if initial is not None:          # RFC 2195: the server speaks first
                return _BAD_INPUT
            return CHALLENGE, b"334 " + b64encode(self.challenge) + replies.CRLF
        return REFUSE, replies.AUTH_UNKNOWN

    def feed(self, line: bytes):
        """A client line of the exchange (line end removed)."""
        if line == b"*":
            return REFUSE, replies.AUTH_CANCELLED
        if self.mechanism == PLAIN:
            return self._plain(line)
        if self.mechanism == LOGIN:
            if self.user is None:
                return self._login_user(line)
            password = b64decode(line)
            if password is None or not _valid_field(password):
                return _BAD_INPUT
            return CHECK, self.user, password, self.stamp
        return self._cram(line)

    def _plain(self, text):
        # `=` is an empty initial response (RFC 4954), which PLAIN cannot use.
        message = b"" if text == b"=" else b64decode(text)
        if message is None:
            return _BAD_INPUT
        parts = message.split(b"\0")
        if len(parts) != 3:
            return _BAD_INPUT
        authzid, user, password = parts
        # Acting for another user (authzid) is not offered: only oneself.
        if authzid and authzid != user:
            return _BAD_INPUT
        if not (_valid_field(user) and _valid_field(password)):
            return _BAD_INPUT
        return CHECK, user, password, self.stamp

    def _login_user(self, text):
        user = b64decode(text)
        if user is None or not _valid_field(user):
            return _BAD_INPUT
        self.user = user
        return CHALLENGE, _PASSWORD

    def _cram(self, text):
        response = b64decode(text)
        if response is None:
            return _BAD_INPUT
        user, _, digest = response.rpartition(b" ")
        if not _valid_field(user) or len(digest) != 32 or not _is_hex(digest):
            return _BAD_INPUT
        return CHECK, user, digest.lower(), self.challenge


def _is_hex(text: bytes) -> bool:
    return all(ch in b"0123456789abcdefABCDEF" for ch in text)
