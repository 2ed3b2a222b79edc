"""What the administrator turned on: SMTPAUTH, FORCETLS, TLS protocol names; pure.

SMTPAUTH takes the values of Erwin Hoffmann's qmail-authentication patch:
  unset or ""    PLAIN and LOGIN
  "+cram"        PLAIN, LOGIN and CRAM-MD5
  "cram"         CRAM-MD5 only
  "-" or "0"     AUTH not offered
and a leading "!" makes AUTH required before MAIL (a submission port).
"""

from smtpd_child.auth.sasl import CRAM_MD5, LOGIN, PLAIN

_MECHANISMS = {b"": (PLAIN, LOGIN), b"+cram": (PLAIN, LOGIN, CRAM_MD5), b"cram": (CRAM_MD5,),
               b"-": (), b"0": ()}


class AuthOptions:
    """mechanisms: offered in this order (empty: AUTH is not offered);
    required: MAIL before AUTH is refused (530);
    without_tls: AUTH is also offered on an unencrypted connection."""

    __slots__ = ("mechanisms", "required", "without_tls")

    def __init__(self, mechanisms=(), required=False, without_tls=False):
        self.mechanisms = tuple(mechanisms)
        self.required = required
        self.without_tls = without_tls


NO_AUTH = AuthOptions()


def parse_smtpauth(value, have_checker: bool):
    """(AuthOptions, warnings) from SMTPAUTH's bytes (None when unset)."""
    warnings = []
    value = value or b""
    required = value.startswith(b"!")
    rest = value[1:] if required else value
    mechanisms = _MECHANISMS.get(rest.lower())
    if mechanisms is None:
        warnings.append(f"SMTPAUTH={value.decode(errors='replace')!r} is not understood:"
                        " offering PLAIN and LOGIN")
        mechanisms = (PLAIN, LOGIN)
    if not have_checker:
        mechanisms = ()
    if required and not mechanisms:
        warnings.append("SMTPAUTH requires AUTH but no checkpassword program is given"
                        " (or AUTH is turned off): every MAIL is refused")
    return AuthOptions(mechanisms, required), warnings


TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")


def parse_tlsprotocols(text: bytes):
    """(sorted allowed version names, warnings) from control/tlsprotocols:
    names separated by spaces, commas or lines; only TLSv1.2 and TLSv1.3."""
    names = text.replace(b",", b" ").split()
    allowed, warnings = set(), []
    for name in names:
        spelled = name.decode(errors="replace")
        match = [v for v in TLS_VERSIONS if v.lower() == spelled.lower()]
        if match:
            allowed.add(match[0])
        else:
            warnings.append(f"control/tlsprotocols: {spelled!r} ignored"
                            " (only TLSv1.2 and TLSv1.3 are allowed)")
    return sorted(allowed), warnings
