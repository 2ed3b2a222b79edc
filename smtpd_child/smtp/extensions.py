"""STARTTLS, AUTH, the submission rule and the tarpit, mixed into Session (pure).

Further actions for the I/O driver (besides protocol.py's):
  (STARTTLS,)                     handshake on fd 0/1 now; then tls_started()
  (CHECK, user, secret, stamp)    run the checkpassword program; then
                                  auth_checked(ACCEPTED | REFUSED | TEMPORARY)
  (DELAY, seconds)                wait, within the session deadline
  (LOG, text)                     one line on stderr (never holds a password)
"""

from smtpd_child.auth import sasl
from smtpd_child.smtp import replies
from smtpd_child.smtp.framing import TOO_LONG, LineReader
from smtpd_child.smtp.policy import Policy

STARTTLS, CHECK, DELAY, LOG = "starttls", "check", "delay", "log"
FLUSH_ACTION = "flush"      # protocol.FLUSH (protocol.py imports this module, not back)
ACCEPTED, REFUSED, TEMPORARY = "accepted", "refused", "temporary"

AUTH_FAILURE_DELAY = 1.0    # seconds before any failed check is answered
MAX_AUTH_FAILURES = 3       # then 421 and the connection is closed

_WAIT_TLS, _WAIT_CHECK = "wait-tls", "wait-check"


class Extensions:
    """Needs from Session: config, helo, seenmail, recipients, lines,
    _out, _reply, _close, _run, _guarded."""

    def _init_extensions(self):
        self.tls = False
        self.auth_user = None           # the authenticated user name
        self.auth_failures = 0
        self.exchange = None            # an AUTH exchange waiting for a client line
        self.suspended = None           # _WAIT_TLS / _WAIT_CHECK: input is only buffered
        self.checking_user = None
        self.rcpt_count = 0             # RCPT commands in this transaction (tarpit)
        self.policy = self.config.policy

    # -- entry points for the driver ---------------------------------------

    def tls_started(self):
        """The handshake succeeded: everything is as after the greeting."""
        return self._guarded(self._tls_started, None)

    def auth_checked(self, result):
        return self._guarded(self._auth_checked, result)

    # -- EHLO and the Received line ----------------------------------------

    def ehlo_extensions(self):
        keywords = []
        if self.config.starttls and not self.tls:
            keywords.append(b"STARTTLS")
        if self._auth_usable():
            keywords.append(b"AUTH " + b" ".join(self.config.auth.mechanisms))
        return keywords

    def received_protocol(self) -> bytes:
        """RFC 3848's names; qmail's plain `SMTP` otherwise."""
        if self.tls:
            return b"ESMTPSA" if self.auth_user is not None else b"ESMTPS"
        return b"ESMTPA" if self.auth_user is not None else b"SMTP"

    def received_remoteinfo(self):
        # As qmail's auth patches: the user takes TCPREMOTEINFO's place (user@ip).
        return self.auth_user if self.auth_user is not None else self.config.remoteinfo

    # -- submission and tarpit hooks (called by MAIL and RCPT) -------------

    def mail_refusal(self):
        if self.config.auth.required and self.auth_user is None:
            return replies.AUTH_REQUIRED
        return None

    def tarpit(self):
        """Count a RCPT; past TARPITCOUNT in this transaction, delay its reply."""
        self.rcpt_count += 1
        cfg = self.config
        if cfg.tarpit_count and cfg.tarpit_delay and self.rcpt_count > cfg.tarpit_count:
            self._out += [(FLUSH_ACTION,), (DELAY, cfg.tarpit_delay)]

    # -- STARTTLS -----------------------------------------------------------

    def _starttls(self, arg):
        if not self.config.starttls or self.tls:
            self._reply(replies.UNIMPLEMENTED, flush=True)
            return
        if arg:
            self._reply(replies.TLS_NO_PARAMETERS, flush=True)
            return
        self._reply(replies.READY_FOR_TLS, flush=True)
        self.suspended = _WAIT_TLS
        self._out.append((STARTTLS,))

    def _tls_started(self, _):
        if self.suspended != _WAIT_TLS:
            return
        self.suspended = None
        # Whatever came after the STARTTLS line was sent in clear and may have
        # been injected on the way (CVE-2011-0411): it is dropped unread.
        self.lines = LineReader()
        self.tls = True
        self.helo = self.config.remotehost
        self.seenmail = False
        self.recipients = []
        self.rcpt_count = 0
        self.auth_user = None
        self.exchange = None
        self.policy = self.config.policy

    # -- AUTH ---------------------------------------------------------------

    def _auth_usable(self):
        auth = self.config.auth
        return bool(auth.mechanisms) and (self.tls or auth.without_tls)

    def _auth(self, arg):
        if not self.config.auth.mechanisms:
            self._reply(replies.UNIMPLEMENTED, flush=True)
        elif not self._auth_usable():
            self._reply(replies.AUTH_NEEDS_TLS, flush=True)
        elif self.auth_user is not None:
            self._reply(replies.AUTH_ALREADY, flush=True)
        elif self.seenmail:
            self._reply(replies.AUTH_IN_TRANSACTION, flush=True)
        else:
            words = arg.split()
            if not words or len(words) > 2:
                self._auth_failed(replies.AUTH_MALFORMED)
                return
            mechanism = words[0].upper()
            if mechanism not in self.config.auth.mechanisms:
                self._reply(replies.AUTH_UNKNOWN, flush=True)
                return
            exchange = sasl.Exchange(mechanism, b"%d" % self.config.clock(),
                                     self.config.challenge())
            self._auth_step(exchange, exchange.start(words[1] if len(words) > 1 else None))

    def _exchange_line(self, line):
        exchange, self.exchange = self.exchange, None
        if line is TOO_LONG:
            self._auth_failed(replies.AUTH_LINE_TOO_LONG)
        else:
            self._auth_step(exchange, exchange.feed(line))

    def _auth_step(self, exchange, step):
        kind = step[0]
        if kind == sasl.CHALLENGE:
            self.exchange = exchange
            self._reply(step[1], flush=True)
        elif kind == sasl.CHECK:
            self.suspended = _WAIT_CHECK
            self.checking_user = step[1]
            self._out.append((CHECK,) + tuple(step[1:]))
        else:
            self._auth_failed(step[1])

    def _auth_checked(self, result):
        if self.suspended != _WAIT_CHECK:
            return
        self.suspended = None
        user, self.checking_user = self.checking_user, None
        who = f"{sasl.printable(user)} from {sasl.printable(self.config.remoteip)}"
        if result == ACCEPTED:
            self.auth_user = user
            self.policy = _relaying(self.policy)
            self._out.append((LOG, f"auth: {who} accepted"))
            self._reply(replies.AUTH_OK, flush=True)
        else:
            temporary = result == TEMPORARY
            self._out.append((LOG, f"auth: {who} {'not checked' if temporary else 'refused'}"))
            self._auth_failed(replies.AUTH_TEMPORARY if temporary else replies.AUTH_FAILED,
                              delay=True)
        self._run()

    def _auth_failed(self, reply, delay=False):
        self.auth_failures += 1
        if delay:
            self._out += [(FLUSH_ACTION,), (DELAY, AUTH_FAILURE_DELAY)]
        self._reply(reply, flush=True)
        if self.auth_failures >= MAX_AUTH_FAILURES:
            self._out.append((LOG, f"auth: {self.auth_failures} failures from "
                                   f"{sasl.printable(self.config.remoteip)}: closing"))
            self._reply(replies.AUTH_TOO_MANY_FAILURES, flush=True)
            self._close(1)


def _relaying(policy):
    """The policy of an authenticated client: relaying exactly as with RELAYCLIENT
    (its value kept when it is set, else empty)."""
    relaying = Policy.__new__(Policy)
    for name in Policy.__slots__:
        setattr(relaying, name, getattr(policy, name))
    if relaying.relayclient is None:
        relaying.relayclient = b""
    return relaying
