"""The SMTP state machine of qmail-smtpd, as a pure object.

Feed it client bytes; it returns actions for the I/O driver:
  (SEND, bytes)           buffer a reply
  (FLUSH,)                write buffered replies now (qmail flushes after
                          most commands; MAIL/RCPT/RSET replies wait for the
                          next blocking read, which is what pipelining needs)
  (OPEN, sender, rcpts)   start the queue; then call queue_opened(ok)
  (WRITE, bytes)          message bytes for the queue
  (ABORT,)                throw the queued-so-far message away
  (COMMIT, envelope)      finish the message; then call queue_finished(reply)
  (CLOSE, exit_code)      end the session
and those of extensions.py (STARTTLS, CHECK, DELAY, LOG).

While the queue is being opened or committed, input is only buffered.
receive() never raises: a bug answers 421 and closes instead.
"""

from smtpd_child.smtp import replies
from smtpd_child.auth.options import NO_AUTH
from smtpd_child.smtp.address import esmtp_size, parse_path
from smtpd_child.smtp.envelope import envelope_bytes, received_line
from smtpd_child.smtp.extensions import Extensions
from smtpd_child.smtp.framing import BARE_LF, END, MAX_HOPS, TOO_LONG, DataDecoder, LineReader
from smtpd_child.smtp.policy import ControlReadError, Policy

SEND, FLUSH, OPEN, WRITE, ABORT, COMMIT, CLOSE = (
    "send", "flush", "open", "write", "abort", "commit", "close")

MAX_RECIPIENTS = 100
MAX_ERRORS = 20         # Postfix's smtpd_hard_error_limit
INTERNAL_ERROR = replies.INTERNAL_ERROR

_COMMAND, _WAIT_OPEN, _DATA, _WAIT_COMMIT, _CLOSED = range(5)


class SessionConfig:
    """Everything a session needs from the outside world (built by config.py)."""

    def __init__(self, *, greeting=b"localhost", databytes=0, policy=None,
                 local_ip_host=None, is_local_ip=None, remotehost=b"unknown",
                 remoteip=b"unknown", remoteinfo=None, local=b"unknown",
                 clock=lambda: 0, max_recipients=MAX_RECIPIENTS,
                 max_errors=MAX_ERRORS, starttls=False, auth=NO_AUTH,
                 challenge=lambda: b"<0@localhost>", tarpit_count=0, tarpit_delay=0):
        self.greeting = greeting
        self.databytes = databytes
        self.policy = policy if policy is not None else Policy()
        self.local_ip_host = local_ip_host
        self.is_local_ip = is_local_ip
        self.remotehost = remotehost
        self.remoteip = remoteip
        self.remoteinfo = remoteinfo
        self.local = local
        self.clock = clock
        self.max_recipients = max_recipients
        self.max_errors = max_errors
        self.starttls = starttls            # STARTTLS can be offered (a usable certificate)
        self.auth = auth                    # auth.options.AuthOptions
        self.challenge = challenge          # a fresh CRAM-MD5 challenge, `<...@host>`
        self.tarpit_count = tarpit_count
        self.tarpit_delay = tarpit_delay


class Session(Extensions):
    def __init__(self, config: SessionConfig):
        self.config = config
        self.state = _COMMAND
        self.lines = LineReader()
        self.helo = config.remotehost    # qmail: dohelo(remotehost) at start
        self.seenmail = False
        self.sender = b""
        self.sender_is_bad = False
        self.recipients = []
        self.decoder = None
        self.stored = 0
        self.failed = False              # the queue was told to ABORT
        self.errors = 0                  # 4xx/5xx replies since the last accepted message
        self._out = []
        self._init_extensions()

    # -- entry points -------------------------------------------------------

    def greeting(self):
        return [(SEND, replies.greeting(self.config.greeting)), (FLUSH,)]

    def receive(self, data: bytes):
        """Client bytes; b"" means end of input (EOF or read error)."""
        return self._guarded(self._receive, data)

    def queue_opened(self, ok: bool):
        return self._guarded(self._queue_opened, ok)

    def queue_finished(self, reply: bytes):
        return self._guarded(self._queue_finished, reply)

    @property
    def closed(self) -> bool:
        return self.state == _CLOSED

    @property
    def waiting(self) -> bool:
        """True while the driver owes queue_opened()/queue_finished()."""
        return self.state in (_WAIT_OPEN, _WAIT_COMMIT) or self.suspended is not None

    def _guarded(self, method, argument):
        self._out = []
        if self.state == _CLOSED:
            return []
        try:
            method(argument)
        except Exception as e:   # a bug must never reach the client as a traceback
            if self.state in (_DATA, _WAIT_COMMIT) and not self.failed:
                self._out.append((ABORT,))
            self._reply(replies.OUT_OF_MEMORY if isinstance(e, MemoryError) else INTERNAL_ERROR,
                        flush=True)
            self._close(1)
        return self._out

    # -- state transitions --------------------------------------------------

    def _receive(self, data):
        if not data:
            if self.state in (_DATA, _WAIT_COMMIT) and not self.failed:
                self._out.append((ABORT,))
            self._close(1)           # qmail: EOF exits 1 with no reply
            return
        self.lines.feed(data)
        self._run()

    def _queue_opened(self, ok):
        if self.state != _WAIT_OPEN:
            return
        if not ok:
            self.state = _COMMAND
            self._reply(replies.QQT_FAILURE, flush=True)
        else:
            self.state = _DATA
            self.decoder = DataDecoder()
            self.stored = 0
            self.failed = False
            self._reply(replies.GO_AHEAD, flush=True)
            cfg = self.config
            self._out.append((WRITE, received_line(
                remotehost=cfg.remotehost, helo=self.helo, remoteinfo=self.received_remoteinfo(),
                remoteip=cfg.remoteip, local=cfg.local, unix_time=cfg.clock(),
                protocol=self.received_protocol())))
        self._run()

    def _queue_finished(self, reply):
        if self.state != _WAIT_COMMIT:
            return
        self.state = _COMMAND
        self._reply(reply, flush=True)
        if reply.startswith(b"250"):
            self.errors = 0              # as Postfix: errors count until mail is delivered
        self._run()

    def _run(self):
        while True:
            if self.state == _DATA:
                self._run_data()
            if self.state != _COMMAND or self.suspended is not None:
                return
            if self.errors >= self.config.max_errors:
                # Bounded even for a client that sends nothing but errors.
                self._reply(replies.TOO_MANY_ERRORS, flush=True)
                self._close(1)
                return
            line = self.lines.next_line()
            if line is None:
                return
            if self.exchange is not None:
                self._exchange_line(line)
            elif line is TOO_LONG:
                self._reply(replies.LINE_TOO_LONG, flush=True)
            else:
                self._command(line)

    def _run_data(self):
        pending = self.lines.take_rest()
        if not pending:
            return
        # Once the message is refused nothing more is decoded, only skipped.
        decoded, status, rest = (self.decoder.skip if self.failed else self.decoder.feed)(pending)
        self._store(decoded)
        if status == BARE_LF:
            if not self.failed:
                self._out.append((ABORT,))
            self._reply(replies.BARE_LF, flush=True)
            self._close(1)
        elif status == END:
            self.lines.feed(rest)
            self._end_of_data()

    def _store(self, decoded):
        if not decoded or self.failed:
            return
        self.stored += len(decoded)
        limit = self.config.databytes
        if (limit and self.stored > limit) or self.decoder.hops >= MAX_HOPS:
            self.failed = True       # keep reading to the dot, store nothing more
            self._out.append((ABORT,))
            return
        self._out.append((WRITE, decoded))

    def _end_of_data(self):
        self.state = _COMMAND
        if self.decoder.hops >= MAX_HOPS:
            self._fail_message(replies.TOO_MANY_HOPS)
        elif self.failed:
            self._fail_message(replies.DATABYTES)
        else:
            self.state = _WAIT_COMMIT
            self._out.append((COMMIT, envelope_bytes(self.sender, self.recipients)))

    def _fail_message(self, reply):
        if not self.failed:
            self._out.append((ABORT,))
        self._reply(reply, flush=True)

    # -- commands -----------------------------------------------------------

    def _command(self, line):
        # As qmail's C reader: the verb ends at the first space or NUL; a NUL
        # before any space leaves no argument.  MAIL and RCPT keep the rest of
        # their argument so that a NUL in or before the path is seen and refused.
        space = line.find(b" ")
        nul = line.find(b"\0", 0, space if space >= 0 else len(line))
        if nul >= 0:
            verb, arg = line[:nul], b""
        elif space < 0:
            verb, arg = line, b""
        else:
            verb, arg = line[:space], line[space:].lstrip(b" ")
        handler = _HANDLERS.get(verb.lower())
        if handler is None:
            self._reply(replies.UNIMPLEMENTED, flush=True)
        else:
            handler(self, arg)

    def _helo(self, arg):
        self.seenmail = False
        self.helo = arg.split(b"\0", 1)[0]       # a C string: the name ends at a NUL
        self._reply(replies.helo(self.config.greeting), flush=True)

    def _ehlo(self, arg):
        self.seenmail = False
        self.helo = arg.split(b"\0", 1)[0]
        self._reply(replies.ehlo(self.config.greeting, self.config.databytes,
                                 self.ehlo_extensions()), flush=True)

    def _mail(self, arg):
        refusal = self.mail_refusal()
        if refusal is not None:
            self._reply(refusal)
            return
        address = self._parse(arg)
        if address is None:
            self._reply(replies.SYNTAX)
            return
        declared = esmtp_size(arg)
        limit = self.config.databytes
        if limit and declared is not None and declared > limit:
            # Unlike a 555 (qmail leaves the transaction alone), this refusal
            # ends it: a pipelined RCPT or DATA must not join the previous one.
            self.seenmail = False
            self._reply(replies.DATABYTES)
            return
        self.sender_is_bad = self.policy.sender_is_bad(address)
        self.seenmail = True
        self.recipients = []
        self.rcpt_count = 0
        self.sender = address
        self._reply(replies.OK)

    def _rcpt(self, arg):
        if not self.seenmail:
            self._reply(replies.MAIL_FIRST)
            return
        self.tarpit()
        if len(self.recipients) >= self.config.max_recipients:
            self._reply(replies.TOO_MANY_RECIPIENTS)
            return
        address = self._parse(arg)
        if address is None:
            self._reply(replies.SYNTAX)
            return
        try:
            refusal, recipient = self.policy.check_recipient(address, self.sender_is_bad)
        except ControlReadError:
            self._reply(replies.CONTROLS, flush=True)
            self._close(1)
            return
        if refusal is not None:
            self._reply(refusal)
            return
        self.recipients.append(recipient)
        self._reply(replies.OK)

    def _data(self, arg):
        if not self.seenmail:
            self._reply(replies.MAIL_FIRST, flush=True)
            return
        if not self.recipients:
            self._reply(replies.RCPT_FIRST, flush=True)
            return
        self.seenmail = False
        self.state = _WAIT_OPEN
        self._out.append((OPEN, self.sender, list(self.recipients)))

    def _rset(self, arg):
        self.seenmail = False
        self._reply(replies.FLUSHED)

    def _noop(self, arg):
        self._reply(replies.OK, flush=True)

    def _vrfy(self, arg):
        self._reply(replies.VRFY, flush=True)

    def _help(self, arg):
        self._reply(replies.HELP, flush=True)

    def _quit(self, arg):
        self._reply(replies.quit_reply(self.config.greeting), flush=True)
        self._close(0)

    # -- helpers ------------------------------------------------------------

    def _parse(self, arg):
        return parse_path(arg, self.config.local_ip_host, self.config.is_local_ip)

    def _reply(self, text, flush=False):
        self._out.append((SEND, text))
        if text[:1] in (b"4", b"5"):
            self.errors += 1
        if flush:
            self._out.append((FLUSH,))

    def _close(self, code):
        self.state = _CLOSED
        self._out.append((CLOSE, code))


_HANDLERS = {
    b"helo": Session._helo, b"ehlo": Session._ehlo, b"mail": Session._mail,
    b"rcpt": Session._rcpt, b"data": Session._data, b"rset": Session._rset,
    b"noop": Session._noop, b"vrfy": Session._vrfy, b"help": Session._help,
    b"quit": Session._quit, b"starttls": Session._starttls, b"auth": Session._auth,
}
