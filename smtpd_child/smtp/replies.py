"""Every SMTP reply the child can send, as exact bytes (CRLF included).

The texts are qmail-smtpd's (netqmail 1.06) wherever qmail has one, so that
clients, log parsers and fingerprinting tools see a qmail server.  The few
replies qmail never sends belong to the documented safe-by-default additions
(see docs/smtpd.md) and are marked below.  Tests import these names instead of
repeating the texts.
"""

CRLF = b"\r\n"


def greeting(text: bytes) -> bytes:
    return b"220 " + text + b" ESMTP\r\n"


def helo(text: bytes) -> bytes:
    return b"250 " + text + CRLF


def ehlo(text: bytes, databytes: int, extensions=()) -> bytes:
    # qmail's three lines, the extensions on offer (STARTTLS, AUTH ...),
    # then SIZE last (RFC 1870; 0 means no limit).
    return (b"250-" + text + b"\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
            + b"".join(b"250-" + keyword + CRLF for keyword in extensions)
            + b"250 SIZE " + str(databytes).encode() + CRLF)


def quit_reply(text: bytes) -> bytes:
    return b"221 " + text + CRLF


def accepted(unix_time: int, qp: int) -> bytes:
    return b"250 ok " + str(unix_time).encode() + b" qp " + str(qp).encode() + CRLF


def queue_failure(code: bytes) -> bytes:
    """`code` is qmail's qq status: first byte D (permanent) or Z (temporary)."""
    return (b"554 " if code[:1] == b"D" else b"451 ") + code[1:] + CRLF


OK = b"250 ok\r\n"
FLUSHED = b"250 flushed\r\n"
GO_AHEAD = b"354 go ahead\r\n"
VRFY = b"252 send some mail, i'll try my best\r\n"
HELP = b"214 netqmail home page: http://qmail.org/netqmail\r\n"
UNIMPLEMENTED = b"502 unimplemented (#5.5.1)\r\n"
MAIL_FIRST = b"503 MAIL first (#5.5.1)\r\n"
RCPT_FIRST = b"503 RCPT first (#5.5.1)\r\n"
SYNTAX = b"555 syntax error (#5.5.4)\r\n"
BADMAILFROM = b"553 sorry, your envelope sender is in my badmailfrom list (#5.7.1)\r\n"
NOGATEWAY = b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n"
QQT_FAILURE = b"451 qqt failure (#4.3.0)\r\n"
TOO_MANY_HOPS = b"554 too many hops, this message is looping (#5.4.6)\r\n"
DATABYTES = b"552 sorry, that message size exceeds my databytes limit (#5.3.4)\r\n"
BARE_LF = b"451 See http://pobox.com/~djb/docs/smtplf.html.\r\n"
TIMEOUT = b"451 timeout (#4.4.2)\r\n"
CONTROLS = b"421 unable to read controls (#4.3.0)\r\n"
OUT_OF_MEMORY = b"421 out of memory (#4.3.0)\r\n"

# Additions of this implementation (qmail sends none of these).
LINE_TOO_LONG = b"500 command line too long (#5.5.2)\r\n"
TOO_MANY_RECIPIENTS = b"452 too many recipients (#4.5.3)\r\n"
# The text of sagredo's rejectrelaytest patch: `@ % !` in the local part.
NO_RELAY = b"553 we don't relay (#5.7.1)\r\n"
NEEDS_DOMAIN = b"553 sorry, that address needs a domain (#5.1.3)\r\n"
SESSION_DEADLINE = b"451 session time limit exceeded (#4.4.2)\r\n"
TOO_MANY_ERRORS = b"421 too many errors (#4.7.0)\r\n"
INTERNAL_ERROR = b"421 internal error (#4.3.0)\r\n"      # a bug, never a traceback

# qmail-queue status strings (first byte D = permanent, Z = temporary),
# keyed by the queue program's exit code, as qmail.c's qmail_close().
QQ_EXIT_TEXTS = {
    11: b"Denvelope address too long for qq (#5.1.3)",
    31: b"Dmail server permanently rejected message (#5.3.0)",
    51: b"Zqq out of memory (#4.3.0)",
    52: b"Zqq timeout (#4.3.0)",
    53: b"Zqq write error or disk full (#4.3.0)",
    54: b"Zqq read error (#4.3.0)",
    55: b"Zqq unable to read configuration (#4.3.0)",
    56: b"Zqq trouble making network connection (#4.3.0)",
    61: b"Zqq trouble in home directory (#4.3.0)",
    63: b"Zqq trouble creating files in queue (#4.3.0)",
    64: b"Zqq trouble creating files in queue (#4.3.0)",
    65: b"Zqq trouble creating files in queue (#4.3.0)",
    66: b"Zqq trouble creating files in queue (#4.3.0)",
    62: b"Zqq trouble creating files in queue (#4.3.0)",
    71: b"Zmail server temporarily rejected message (#4.3.0)",
    72: b"Zconnection to mail server timed out (#4.4.1)",
    73: b"Zconnection to mail server rejected (#4.4.1)",
    74: b"Zcommunication with mail server failed (#4.4.2)",
    81: b"Zqq internal bug (#4.3.0)",
    91: b"Zqq internal bug (#4.3.0)",
    115: b"Denvelope address too long for qq (#5.1.3)",
    120: b"Zunable to exec qq (#4.3.0)",
}
QQ_PERMANENT = b"Dqq permanent problem (#5.3.0)"
QQ_TEMPORARY = b"Zqq temporary problem (#4.3.0)"
QQ_READ_ERROR = b"Zqq read error (#4.3.0)"
QQ_CRASHED = b"Zqq crashed (#4.3.0)"
QQ_WAITPID = b"Zqq waitpid surprise (#4.3.0)"


def qq_status(exit_code: int) -> bytes:
    """qmail's qq status string for a queue program's exit code (not 0)."""
    text = QQ_EXIT_TEXTS.get(exit_code)
    if text is not None:
        return text
    if 11 <= exit_code <= 40:
        return QQ_PERMANENT
    return QQ_TEMPORARY

# STARTTLS (RFC 3207) and SMTP AUTH (RFC 4954): the texts of the qmail TLS
# patch and of Erwin Hoffmann's qmail-authentication where they have one.
READY_FOR_TLS = b"220 ready for tls\r\n"
TLS_NO_PARAMETERS = b"501 Syntax error (no parameters allowed) (#5.5.4)\r\n"
AUTH_OK = b"235 ok, go ahead (#2.0.0)\r\n"
AUTH_FAILED = b"535 authentication failed (#5.7.1)\r\n"
AUTH_TEMPORARY = b"454 temporary authentication failure (#4.3.0)\r\n"
AUTH_ALREADY = b"503 you're already authenticated (#5.5.0)\r\n"
AUTH_IN_TRANSACTION = b"503 no auth during mail transaction (#5.5.0)\r\n"
AUTH_UNKNOWN = b"504 auth type unimplemented (#5.5.1)\r\n"
AUTH_CANCELLED = b"501 auth exchange canceled (#5.0.0)\r\n"
AUTH_MALFORMED = b"501 malformed auth input (#5.5.4)\r\n"
AUTH_NEEDS_TLS = b"538 auth not available without TLS (#5.3.3)\r\n"
AUTH_LINE_TOO_LONG = b"500 auth exchange line too long (#5.5.6)\r\n"
AUTH_REQUIRED = b"530 authentication required (#5.7.1)\r\n"
AUTH_TOO_MANY_FAILURES = b"421 too many authentication failures (#4.7.0)\r\n"
