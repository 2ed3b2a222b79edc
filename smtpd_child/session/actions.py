"""The I/O behind the session's extension actions (smtp/extensions.py):
STARTTLS handshakes, checkpassword runs, delays and log lines.

driver.Driver hands them here.  Every wait is bounded by the session deadline,
and a client that closes its side during a delay (tarpit, failed AUTH) ends
the session at once: it costs nothing more.
"""

import os
import select
import stat
import time

from smtpd_child.smtp import replies
from smtpd_child.smtp.extensions import CHECK, DELAY, LOG, STARTTLS

KINDS = frozenset((STARTTLS, CHECK, DELAY, LOG))


class Extras:
    """What the extension actions need beyond the driver: the checkpassword
    command (None: AUTH is not offered) and the STARTTLS offer."""

    def __init__(self, checker=None, offer=None, log=print, environ=None):
        self.checker = checker
        self.offer = offer
        self.log = log
        self.environ = environ or {}      # the checkpassword program's environment


class TlsOffer:
    """True when STARTTLS can be offered.  The certificate is loaded, and ssl
    imported (some 20 ms of CPU), at the first question, i.e. the first EHLO:
    sessions that never say EHLO pay nothing.  A problem is logged once."""

    def __init__(self, settings, log):
        self.settings = settings
        self.log = log
        self.context = None
        self.asked = False

    def __bool__(self):
        if not self.asked:
            self.asked = True
            try:
                from smtpd_child.session import tls     # ssl's import is paid only here
            except ImportError as e:
                self.log(f"STARTTLS not offered: {e}")
                return False
            self.context, notes = tls.server_context(
                self.settings.tls_cert, self.settings.tls_ciphers, self.settings.tls_protocols)
            for note in notes:
                self.log(note)
        return self.context is not None


def setup(settings, checker, log, environ) -> Extras:
    """STARTTLS is considered when there is a certificate and a socket to use it on."""
    offer = None
    if settings.tls_cert is not None and _fd0_is_the_socket():
        offer = TlsOffer(settings, log)
    settings.session.starttls = offer if offer is not None else False
    return Extras(checker, offer, log, environ)


def _fd0_is_the_socket() -> bool:
    """STARTTLS needs the client's socket on fd 0, and the same one on fd 1."""
    try:
        first, second = os.fstat(0), os.fstat(1)
    except OSError:
        return False
    return (stat.S_ISSOCK(first.st_mode)
            and (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino))


def perform(driver, action):
    """Carry out one action; returns the session's further actions."""
    kind = action[0]
    extras = driver.extras
    if kind == LOG:
        extras.log(action[1])
        return []
    if kind == DELAY:
        _delay(driver, action[1])
        return []
    if kind == CHECK:
        from smtpd_child.auth import checkpassword
        left = driver.time_left()
        if extras.checker is None:      # cannot happen: AUTH is only offered with one
            result = "temporary"
        else:
            result = checkpassword.check(extras.checker, extras.environ, action[1], action[2],
                                         action[3], min(checkpassword.CHECK_TIMEOUT, left),
                                         extras.log)
        if result == checkpassword.ACCEPTED:
            # As qmail's auth patches: the queue program (a filter) learns who it was.
            user = os.fsdecode(action[1])
            extras.environ["SMTPAUTHUSER"] = extras.environ["SMTP_AUTH_USER"] = user
        return driver.session.auth_checked(result)
    if kind == STARTTLS:
        from smtpd_child.session import tls
        driver.output.flush()
        channel, reason = tls.start(extras.offer.context, min(driver.settings.timeout,
                                                        driver.time_left()))
        if channel is None:
            extras.log(f"TLS handshake failed: {reason}")
            driver.end(1)
        driver.channel = driver.output.channel = channel
        return driver.session.tls_started()
    raise ValueError(f"unknown action {kind!r}")


def _delay(driver, seconds):
    left = driver.time_left()
    wait, at_deadline = (seconds, False) if seconds < left else (left, True)
    end = time.monotonic() + wait
    watch = select.poll()
    # POLLRDHUP (Linux): the peer closed its side; POLLHUP, POLLERR, POLLNVAL come anyway.
    watch.register(0, getattr(select, "POLLRDHUP", 0))
    while True:
        left = end - time.monotonic()
        if left <= 0:
            break
        try:
            if watch.poll(max(1, int(left * 1000 + 0.999))):
                driver.end(1)               # the client went away: no reply, nothing more
        except InterruptedError:
            continue
    if at_deadline:
        driver.fail(replies.SESSION_DEADLINE)
