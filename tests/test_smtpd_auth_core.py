"""The pure side of STARTTLS, AUTH, the submission rule and the tarpit:
SASL decoding, SMTPAUTH parsing, and session transcripts (no sockets)."""

import base64

import pytest
from hypothesis import given, settings, strategies as st

from smtpd_child.auth import sasl
from smtpd_child.auth.options import AuthOptions, parse_smtpauth, parse_tlsprotocols
from smtpd_child.smtp import replies
from smtpd_child.smtp.extensions import (ACCEPTED, AUTH_FAILURE_DELAY, CHECK, DELAY, LOG,
                                         MAX_AUTH_FAILURES, REFUSED, STARTTLS, TEMPORARY)
from smtpd_child.smtp.policy import Policy
from smtpd_child.smtp.protocol import CLOSE, OPEN, SEND, WRITE, Session, SessionConfig


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


# -- the SASL decoder -------------------------------------------------------

def test_plain_with_and_without_initial_response():
    exchange = sasl.Exchange(b"plain", b"1700000000")
    assert exchange.start(b64(b"\0alice\0pw")) == (sasl.CHECK, b"alice", b"pw", b"1700000000")
    exchange = sasl.Exchange(b"PLAIN", b"7")
    assert exchange.start(None) == (sasl.CHALLENGE, b"334 \r\n")
    assert exchange.feed(b64(b"alice\0alice\0pw")) == (sasl.CHECK, b"alice", b"pw", b"7")


@pytest.mark.parametrize("message", [b"alice\0pw", b"\0\0pw", b"\0alice\0", b"bob\0alice\0pw",
                                     b"\0al\0ice\0pw", b""])
def test_plain_malformed_messages_are_refused(message):
    assert sasl.Exchange(b"PLAIN", b"1").start(b64(message) or b"=") == (
        sasl.REFUSE, replies.AUTH_MALFORMED)


def test_login_with_prompts_and_with_initial_user():
    exchange = sasl.Exchange(b"LOGIN", b"5")
    assert exchange.start(None) == (sasl.CHALLENGE, b"334 VXNlcm5hbWU6\r\n")
    assert exchange.feed(b64(b"alice")) == (sasl.CHALLENGE, b"334 UGFzc3dvcmQ6\r\n")
    assert exchange.feed(b64(b"pass word")) == (sasl.CHECK, b"alice", b"pass word", b"5")
    exchange = sasl.Exchange(b"login", b"5")
    assert exchange.start(b64(b"bob")) == (sasl.CHALLENGE, b"334 UGFzc3dvcmQ6\r\n")
    assert exchange.feed(b64(b"x")) == (sasl.CHECK, b"bob", b"x", b"5")


def test_cram_md5_passes_digest_and_challenge():
    challenge = b"<1.2@mail.example.com>"
    exchange = sasl.Exchange(b"CRAM-MD5", b"5", challenge)
    kind, reply = exchange.start(None)
    assert kind == sasl.CHALLENGE and base64.b64decode(reply[4:-2]) == challenge
    digest = b"B913A602C7EDA7A495B4E6E7334D3890"
    assert exchange.feed(b64(b"tim " + digest)) == (sasl.CHECK, b"tim", digest.lower(), challenge)
    assert sasl.Exchange(b"CRAM-MD5", b"5", challenge).start(b"eA==")[0] == sasl.REFUSE
    exchange.start(None)
    assert exchange.feed(b64(b"tim nothex")) == (sasl.REFUSE, replies.AUTH_MALFORMED)


@pytest.mark.parametrize("line", [b"not base64!", b"YWJj=", b"YW\0Jj", b"Y", b"===="])
def test_bad_base64_is_malformed(line):
    exchange = sasl.Exchange(b"LOGIN", b"5")
    exchange.start(None)
    assert exchange.feed(line) == (sasl.REFUSE, replies.AUTH_MALFORMED)


def test_star_cancels_and_unknown_mechanism():
    exchange = sasl.Exchange(b"LOGIN", b"5")
    exchange.start(None)
    assert exchange.feed(b"*") == (sasl.REFUSE, replies.AUTH_CANCELLED)
    assert sasl.Exchange(b"GSSAPI", b"5").start(None) == (sasl.REFUSE, replies.AUTH_UNKNOWN)


def test_nul_in_login_fields_and_oversized_fields_are_refused():
    exchange = sasl.Exchange(b"LOGIN", b"5")
    assert exchange.start(b64(b"al\0ice"))[0] == sasl.REFUSE
    assert sasl.Exchange(b"PLAIN", b"5").start(b64(b"\0u\0" + b"p" * 2000))[0] == sasl.REFUSE


@settings(max_examples=400)
@given(st.sampled_from([b"PLAIN", b"LOGIN", b"CRAM-MD5", b"plain", b"XOAUTH2", b""]),
       st.one_of(st.none(), st.binary(max_size=80)),
       st.lists(st.one_of(st.binary(max_size=80),
                          st.binary(max_size=40).map(base64.b64encode)), max_size=4))
def test_decoder_never_raises(mechanism, initial, lines):
    exchange = sasl.Exchange(mechanism, b"1", b"<c@h>")
    step = exchange.start(initial)
    for line in lines:
        assert step[0] in (sasl.CHALLENGE, sasl.CHECK, sasl.REFUSE)
        if step[0] != sasl.CHALLENGE:
            break
        step = exchange.feed(line)
    if step[0] == sasl.CHECK:
        assert b"\0" not in step[1] + step[2] and step[1] and step[2]


@given(st.binary(max_size=60))
def test_printable_escapes_every_control_byte(name):
    text = sasl.printable(name)
    assert all(0x20 <= ord(ch) < 0x7F for ch in text)
    assert text.encode().decode("unicode_escape").encode("latin-1") == name


def test_smtpauth_values():
    cases = {None: ((b"PLAIN", b"LOGIN"), False), b"": ((b"PLAIN", b"LOGIN"), False),
             b"!": ((b"PLAIN", b"LOGIN"), True), b"+cram": ((b"PLAIN", b"LOGIN", b"CRAM-MD5"), False),
             b"!cram": ((b"CRAM-MD5",), True), b"-": ((), False), b"0": ((), False)}
    for value, (mechanisms, required) in cases.items():
        options, warnings = parse_smtpauth(value, True)
        assert (options.mechanisms, options.required, warnings) == (mechanisms, required, [])
    options, warnings = parse_smtpauth(b"!", False)
    assert options.mechanisms == () and options.required and "every MAIL is refused" in warnings[0]
    options, warnings = parse_smtpauth(b"bogus", True)
    assert options.mechanisms == (b"PLAIN", b"LOGIN") and warnings


def test_tlsprotocols():
    assert parse_tlsprotocols(b"TLSv1.3\n") == (["TLSv1.3"], [])
    allowed, notes = parse_tlsprotocols(b"tlsv1.2, TLSv1 SSLv3")
    assert allowed == ["TLSv1.2"] and len(notes) == 2


# -- session transcripts ------------------------------------------------------

NOW = 1795543254


def config(**overrides):
    values = dict(greeting=b"mail.example.com", policy=Policy(rcpthosts=[b"example.com"]),
                  remoteip=b"192.0.2.7", local=b"mail.example.com", clock=lambda: NOW,
                  starttls=True, auth=AuthOptions((b"PLAIN", b"LOGIN")),
                  challenge=lambda: b"<1.2@mail.example.com>")
    values.update(overrides)
    return SessionConfig(**values)


class Run:
    """Drives a Session like main.py does; the checker knows one user."""

    def __init__(self, cfg=None, result=None):
        self.session = Session(cfg or config())
        self.result = result
        self.events = []        # ("send", bytes) / ("delay", s) / ("log", text) / ("check", ...)
        self.message = None
        self.code = None
        self.perform(self.session.greeting())

    def perform(self, actions):
        index = 0
        while index < len(actions):
            action = actions[index]
            index += 1
            kind = action[0]
            if kind == SEND:
                self.events.append(("send", action[1]))
            elif kind in (DELAY, LOG):
                self.events.append(action)
            elif kind == CHECK:
                self.events.append(action)
                ok = action[1:3] == (b"alice", b"right")
                actions += self.session.auth_checked(
                    self.result or (ACCEPTED if ok else REFUSED))
            elif kind == STARTTLS:
                self.events.append(("starttls",))
                actions += self.session.tls_started()
            elif kind == OPEN:
                self.message = bytearray()
                actions += self.session.queue_opened(True)
            elif kind == WRITE:
                self.message += action[1]
            elif kind == CLOSE:
                self.code = action[1]

    def send(self, *lines):
        """Each line in its own read, as a client waiting for every reply sends them."""
        for line in lines:
            self.perform(self.session.receive(line + b"\r\n"))
        return self

    def replies(self):
        return b"".join(e[1] for e in self.events if e[0] == "send")

    def take(self):
        out = self.replies()
        self.events = []
        return out


PLAIN_OK = b"AUTH PLAIN " + b64(b"\0alice\0right")
PLAIN_BAD = b"AUTH PLAIN " + b64(b"\0alice\0wrong")


def test_starttls_and_auth_offered_only_where_allowed():
    run = Run().send(b"EHLO c")
    assert b"250-STARTTLS\r\n" in run.replies() and b"AUTH" not in run.replies()
    run.take()
    run.send(PLAIN_OK, b"STARTTLS", b"EHLO c")
    assert run.take().startswith(replies.AUTH_NEEDS_TLS + replies.READY_FOR_TLS)
    run.send(b"EHLO c")
    ehlo = run.take()
    assert b"STARTTLS" not in ehlo and b"250-AUTH PLAIN LOGIN\r\n250 SIZE 0\r\n" in ehlo
    run.send(b"STARTTLS")
    assert run.take() == replies.UNIMPLEMENTED
    without = Run(config(auth=AuthOptions((b"PLAIN",), without_tls=True), starttls=False))
    assert b"250-AUTH PLAIN\r\n" in without.send(b"EHLO c").replies()
    nothing = Run(config(auth=AuthOptions(), starttls=False)).send(b"EHLO c", b"AUTH PLAIN",
                                                                     b"STARTTLS")
    assert nothing.replies().endswith(replies.UNIMPLEMENTED * 2)


def test_pipelined_commands_after_starttls_are_dropped_and_state_reset():
    run = Run().send(b"EHLO c", b"MAIL FROM:<a@b.test>")
    run.take()
    run.perform(run.session.receive(b"STARTTLS\r\nRCPT TO:<u@example.com>\r\nNOOP\r\n"))
    assert run.take() == replies.READY_FOR_TLS
    run.send(b"RCPT TO:<u@example.com>", b"STARTTLS x")
    assert run.take() == replies.MAIL_FIRST + replies.UNIMPLEMENTED
    assert Run().send(b"STARTTLS x").replies().endswith(replies.TLS_NO_PARAMETERS)


def test_auth_success_relays_and_marks_received_line():
    run = Run().send(b"STARTTLS", b"EHLO c", PLAIN_OK, b"MAIL FROM:<a@b.test>",
                     b"RCPT TO:<x@other.test>", b"DATA", b"hi", b".")
    out = run.replies()
    assert replies.AUTH_OK + replies.OK + replies.OK + replies.GO_AHEAD in out
    assert bytes(run.message).startswith(
        b"Received: from unknown (HELO c) (alice@192.0.2.7)\n  by mail.example.com with ESMTPSA; ")
    assert ("log", "auth: alice from 192.0.2.7 accepted") in run.events
    assert [e for e in run.events if e[0] == CHECK] == [(CHECK, b"alice", b"right", b"%d" % NOW)]


def test_received_protocol_names():
    tls = Run().send(b"STARTTLS", b"EHLO c", b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>",
                     b"DATA", b"hi", b".")
    assert b"(192.0.2.7)\n  by mail.example.com with ESMTPS; " in tls.message
    plain = Run(config(auth=AuthOptions((b"PLAIN",), without_tls=True))).send(
        b"EHLO c", PLAIN_OK, b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>", b"DATA", b"x",
        b".")
    assert b"(alice@192.0.2.7)\n  by mail.example.com with ESMTPA; " in plain.message


def test_failures_are_delayed_never_logged_with_password_and_limited():
    run = Run().send(b"STARTTLS", b"EHLO c")
    run.take()
    run.send(PLAIN_BAD, b"MAIL FROM:<a@b.test>", b"RCPT TO:<x@other.test>")
    kinds = [e[0] for e in run.events]
    assert kinds.index(DELAY) < kinds.index("send")
    assert (DELAY, AUTH_FAILURE_DELAY) in run.events and AUTH_FAILURE_DELAY >= 1
    assert run.take() == replies.AUTH_FAILED + replies.OK + replies.NOGATEWAY
    run.send(b"RSET", b"AUTH LOGIN", b64(b"al\x01ice"), b64(b"wrong"))
    assert ("log", "auth: al\\x01ice from 192.0.2.7 refused") in run.events
    run.take()
    run.send(b"AUTH LOGIN", b"*", b"NOOP")
    assert run.replies() == (b"334 VXNlcm5hbWU6\r\n" + replies.AUTH_CANCELLED
                             + replies.AUTH_TOO_MANY_FAILURES)
    assert run.code == 1 and MAX_AUTH_FAILURES == 3
    logs = " ".join(e[1] for e in run.events if e[0] == "log")
    assert "wrong" not in logs


def test_temporary_failure_and_auth_sequence_errors():
    run = Run(result=TEMPORARY).send(b"STARTTLS", b"EHLO c", PLAIN_OK)
    assert run.replies().endswith(replies.AUTH_TEMPORARY)
    run = Run().send(b"STARTTLS", b"EHLO c", b"MAIL FROM:<a@b.test>", PLAIN_OK, b"RSET",
                     PLAIN_OK, PLAIN_OK, b"AUTH", b"AUTH XOAUTH2")
    assert run.replies().endswith(replies.OK + replies.AUTH_IN_TRANSACTION + replies.FLUSHED
                                  + replies.AUTH_OK + replies.AUTH_ALREADY
                                  + replies.AUTH_ALREADY * 2)


def test_overlong_exchange_line():
    run = Run().send(b"STARTTLS", b"EHLO c", b"AUTH LOGIN", b"A" * 600, b"NOOP")
    assert run.replies().endswith(b"334 VXNlcm5hbWU6\r\n" + replies.AUTH_LINE_TOO_LONG
                                  + replies.OK)


def test_submission_requires_auth_before_mail():
    cfg = config(auth=AuthOptions((b"PLAIN", b"LOGIN"), required=True))
    run = Run(cfg).send(b"EHLO c", b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>",
                        b"STARTTLS", b"EHLO c", b"MAIL FROM:<a@b.test>", PLAIN_OK,
                        b"MAIL FROM:<a@b.test>")
    out = run.replies()
    assert replies.AUTH_REQUIRED + replies.MAIL_FIRST + replies.READY_FOR_TLS in out
    assert out.count(replies.AUTH_REQUIRED) == 2
    assert out.endswith(replies.AUTH_REQUIRED + replies.AUTH_OK + replies.OK)


def test_tarpit_delays_rcpt_replies_past_the_count():
    run = Run(config(tarpit_count=2, tarpit_delay=3)).send(
        b"MAIL FROM:<a@b.test>", *[b"RCPT TO:<u%d@example.com>" % i for i in range(4)],
        b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>")
    sends_before_delays = []
    count = 0
    for event in run.events:
        if event[0] == "send":
            count += 1
        elif event[0] == DELAY:
            assert event[1] == 3
            sends_before_delays.append(count)
    # greeting + MAIL + 2 RCPTs answered before the first delay, one more before the second;
    # the new transaction starts counting again.
    assert sends_before_delays == [4, 5]


def test_starttls_forgets_an_earlier_auth():
    cfg = config(auth=AuthOptions((b"PLAIN",), without_tls=True))
    run = Run(cfg).send(b"EHLO c", PLAIN_OK, b"STARTTLS", b"EHLO c", b"MAIL FROM:<a@b.test>",
                        b"RCPT TO:<x@other.test>", PLAIN_OK)
    assert run.replies().endswith(replies.OK + replies.NOGATEWAY + replies.AUTH_IN_TRANSACTION)


@settings(max_examples=200)
@given(st.binary(min_size=1, max_size=30).filter(lambda u: b"\0" not in u and b"S3" not in u),
       st.binary(min_size=1, max_size=30).filter(lambda p: b"\0" not in p),
       st.sampled_from([ACCEPTED, REFUSED, TEMPORARY]))
def test_no_log_line_holds_the_password(user, password, result):
    secret = b"S3cret:" + password
    run = Run(config(auth=AuthOptions((b"PLAIN", b"LOGIN"), without_tls=True)), result=result)
    run.send(b"AUTH PLAIN " + b64(b"\0" + user + b"\0" + secret),
             b"AUTH LOGIN " + b64(user), b64(secret))
    for event in run.events:
        if event[0] == LOG:
            assert "S3cret" not in event[1] and secret.decode("latin-1") not in event[1]


def test_config_reads_tarpit_auth_and_tls_settings(tmp_path):
    from smtpd_child.session import config as smtpd_config
    from smtpd_servers import make_home
    home = make_home(tmp_path, tarpitcount="5\n", tarpitdelay="2\n")
    settings = smtpd_config.load({"QMAILHOME": str(home)})
    session = settings.session
    assert (session.tarpit_count, session.tarpit_delay) == (5, 2)
    assert session.auth.mechanisms == () and settings.tls_cert is None
    settings = smtpd_config.load({"QMAILHOME": str(home), "TARPITCOUNT": "0",
                                  "TARPITDELAY": "x", "SMTPAUTH": "!+cram", "FORCETLS": "0"},
                                 auth_checker=True)
    session = settings.session
    assert session.tarpit_count == 0 and session.tarpit_delay == 0
    assert any("TARPITDELAY='x'" in w for w in settings.warnings)
    assert session.auth.mechanisms == (b"PLAIN", b"LOGIN", b"CRAM-MD5")
    assert session.auth.required and session.auth.without_tls
    first, second = session.challenge(), session.challenge()
    assert first != second and first.startswith(b"<") and first.endswith(b"@mail.example.com>")
    (home / "control" / "servercert.pem").write_text("x")
    (home / "control" / "tlsprotocols").write_text("TLSv1.3\n")
    settings = smtpd_config.load({"QMAILHOME": str(home)})
    assert settings.tls_cert == str(home / "control" / "servercert.pem")
    assert settings.tls_protocols == b"TLSv1.3\n"
