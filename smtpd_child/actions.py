"""The I/O behind the session's extension actions (smtp/extensions.py):
STARTTLS handshakes, checkpassword runs, delays and log lines.

main.Driver hands them here.  Every wait is bounded by the session deadline,
and a client that closes its side during a delay (tarpit, failed AUTH) ends
the session at once: it costs nothing more.
"""

import select
import time

from smtpd_child.smtp import replies
from smtpd_child.smtp.extensions import CHECK, DELAY, LOG, STARTTLS

KINDS = frozenset((STARTTLS, CHECK, DELAY, LOG))


class Extras:
    """What the extension actions need beyond the driver: the checkpassword
    command (None: AUTH is not offered) and the TLS context (None: no STARTTLS)."""

    def __init__(self, checker=None, context=None, log=print, environ=None):
        self.checker = checker
        self.context = context
        self.log = log
        self.environ = environ or {}      # the checkpassword program's environment


def setup(settings, checker, log, environ) -> Extras:
    """Load the TLS context if there is a certificate and a socket to use it on;
    a certificate problem is logged here, once, and only turns STARTTLS off."""
    context = None
    if settings.tls_cert is not None:
        try:
            from smtpd_child import tls     # ssl's import is paid only here
        except ImportError as e:
            log(f"STARTTLS not offered: {e}")
        else:
            if tls.fd0_is_the_socket():
                context, notes = tls.server_context(settings.tls_cert, settings.tls_ciphers,
                                                    settings.tls_protocols)
                for note in notes:
                    log(note)
    settings.session.starttls = context is not None
    return Extras(checker, context, log, environ)


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
        return driver.session.auth_checked(result)
    if kind == STARTTLS:
        from smtpd_child import tls
        driver.output.flush()
        channel, reason = tls.start(extras.context, min(driver.settings.timeout,
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
    watch.register(0, select.POLLRDHUP)     # POLLHUP, POLLERR and POLLNVAL come anyway
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
