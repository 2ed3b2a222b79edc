"""Hypothesis over every parser that reads what a stranger sends.

Each target is (name, strategy, check): check(value) raises AssertionError
when an invariant breaks and lets any unexpected exception escape, which
hypothesis then shrinks to a smallest example.  Parsers that land later (the
PROXY header, the AUTH decoder) join with register(); `make stress` runs
every registered target with STRESS_EXAMPLES examples, `make test` a few
hundred.  Memory: the process RSS is read before and after each target.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple

from hypothesis import HealthCheck, given, settings, strategies as st

from smtpd_child.auth import sasl
from smtpd_child.smtp import replies
from smtpd_child.smtp.address import esmtp_size, parse_path
from smtpd_child.smtp.envelope import received_line, safe
from smtpd_child.smtp.framing import MAX_COMMAND_LINE, DataDecoder
from smtpd_child.smtp.policy import Policy
from smtpd_child.smtp.protocol import (COMMIT, INTERNAL_ERROR, OPEN, SEND, Session,
                                       SessionConfig)
from tcpserver_py import logfmt
from tcpserver_py.net import dnswire, proxy
from tcpserver_py.net.lookup import IDENT_VALUE_LIMIT, parse_ident_reply
from tcpserver_py.rules.parse import RuleSyntaxError, parse_line

from .common import Result


class Target(NamedTuple):
    name: str
    strategy: object
    check: Callable


TARGETS: list = []


def register(name: str, strategy, check: Callable) -> None:
    """Add a parser: `check(example)` must raise only on a broken invariant."""
    TARGETS.append(Target(name, strategy, check))


def _joined(pieces, max_size=40):
    """Byte strings made of protocol-looking pieces and random bytes."""
    return st.lists(st.one_of(st.sampled_from(pieces), st.binary(max_size=8)),
                    max_size=max_size).map(b"".join)


# -- rules --------------------------------------------------------------------

RULE_PIECES = [b"1", b"127", b".", b":", b"::", b"allow", b"deny", b",", b"=", b'"', b"'",
               b"/", b"24", b"[", b"]", b"@", b"X", b"RELAYCLIENT", b"\\", b"\r", b"\0",
               b"ffff", b"=", b"#", b" ", b"\t", b"10.0.0.0/9", b"2001:db8::/32"]


def check_rule_line(raw: bytes) -> None:
    try:
        parsed = parse_line(raw)
    except RuleSyntaxError:
        return
    for key in parsed.keys:
        assert isinstance(key, bytes)


register("rules parser", _joined(RULE_PIECES), check_rule_line)

# -- SMTP protocol core -------------------------------------------------------

SMTP_PIECES = [b"HELO ", b"EHLO x", b"MAIL FROM:<", b"RCPT TO:<", b">", b"a@example.org",
               b"b@other.test", b"DATA", b"\r\n", b"\n", b"\r", b".", b".\r\n", b"RSET",
               b"NOOP", b"QUIT", b"VRFY", b" SIZE=", b"999999999999", b"\0", b"@", b"\"",
               b"\\", b"Received: x\r\n", b"[127.0.0.1]", b" ", b"x" * 600]


class _Queue:
    """Answers the session's queue actions at once, as main.py's driver does."""

    def __init__(self, session):
        self.session = session
        self.sent = []

    def perform(self, actions):
        index = 0
        while index < len(actions):
            action = actions[index]
            index += 1
            if action[0] == SEND:
                self.sent.append(action[1])
            elif action[0] == OPEN:
                actions += self.session.queue_opened(True)
            elif action[0] == COMMIT:
                actions += self.session.queue_finished(b"250 ok 1 qp 1\r\n")


def check_session(chunks: list) -> None:
    config = SessionConfig(greeting=b"stress.test", databytes=10000,
                           policy=Policy([b"example.org"], None, None, []))
    session = Session(config)
    queue = _Queue(session)
    queue.perform(session.greeting())
    largest = 0
    for chunk in chunks + [b""]:
        largest = max(largest, len(chunk))
        queue.perform(session.receive(chunk))
        # At most one line's worth plus one read: nothing piles up across reads.
        assert len(session.lines.buffer) <= MAX_COMMAND_LINE + largest, "unbounded buffer"
    assert INTERNAL_ERROR not in queue.sent, "the session hit an internal error"
    assert replies.OUT_OF_MEMORY not in queue.sent
    for reply in queue.sent:
        assert reply.endswith(b"\r\n") and b"\n" not in reply[:-2].replace(b"\r\n", b""), reply


register("SMTP protocol core", st.lists(_joined(SMTP_PIECES, 12), max_size=12), check_session)

# -- addresses ----------------------------------------------------------------

ADDRESS_PIECES = [b"<", b">", b":", b"@", b",", b"\"", b"\\", b" ", b"\0", b"\r", b"\n",
                  b"a", b"example.org", b"[127.0.0.1]", b"[1.2.3.4]", b"SIZE=12", b"%", b"!"]


def check_address(arg: bytes) -> None:
    address = parse_path(arg, b"localhost", lambda ip: ip == "127.0.0.1")
    if address is not None:
        assert len(address) < 900
        assert not any(b < 0x20 or b == 0x7F for b in address), address
    size = esmtp_size(arg)
    assert size is None or size >= 0


register("address parser", _joined(ADDRESS_PIECES), check_address)

# -- DNS answers --------------------------------------------------------------

QUERY_NAME = dnswire.reverse_domain("192.0.2.7")


def _dns_packet():
    header = st.builds(lambda flags, an, tail: (b"\x12\x34" + flags + b"\x00\x01" + an
                                                + b"\x00\x00\x00\x00" + QUERY_NAME
                                                + b"\x00\x0c\x00\x01" + tail),
                       st.sampled_from([b"\x81\x80", b"\x81\x83", b"\x80\x00", b"\xff\xff"]),
                       st.binary(min_size=2, max_size=2),
                       st.lists(st.one_of(st.binary(max_size=20),
                                          st.sampled_from([b"\xc0\x0c", b"\xc0\xff", b"\x3f",
                                                           b"\x00\x0c\x00\x01",
                                                           b"\x00\x00\x0e\x10"])),
                                max_size=20).map(b"".join))
    return st.one_of(st.binary(max_size=300), header)


def check_dns(packet: bytes) -> None:
    try:
        _, found = dnswire.parse_answer(packet, 0x1234, QUERY_NAME, dnswire.TYPE_PTR)
    except dnswire.BadPacket:
        return
    for name in found:
        assert all(33 <= b <= 126 for b in name), name     # escaped, printable


register("DNS answer parser", _dns_packet(), check_dns)

# -- ident replies ------------------------------------------------------------

IDENT_PIECES = [b"1", b",", b"2", b":", b"USERID", b"UNIX", b"ERROR", b" ", b"\t", b"\r",
                b"\n", b"\0", b"\x1b[31m", b"RELAYCLIENT=", b"x" * 300]


def check_ident(line: bytes) -> None:
    value = parse_ident_reply(line)
    assert len(value) <= IDENT_VALUE_LIMIT
    assert not set(value) & {9, 10, 13, 32}, value
    line_out = logfmt.decision("tcpserver", True, 1, b"l", "127.0.0.1", 25, b"r",
                               "127.0.0.1", value, 1)
    assert all(33 <= b <= 126 or b == 32 for b in line_out[:-1]) and line_out.count(b"\n") == 1
    received = received_line(remotehost=b"r", helo=b"h", remoteinfo=value, remoteip=b"1",
                             local=b"l", unix_time=0)
    assert received.count(b"\n") == 2 and safe(value) in received


register("ident reply parser", _joined(IDENT_PIECES), check_ident)

# -- the DATA decoder ---------------------------------------------------------

DATA_PIECES = [b"\r\n", b"\n", b"\r", b".", b".\r\n", b"\r\n.\r\n", b"Received: x",
               b"Delivered-To: y", b"x" * 70000, b"\0", b"\r\n" * 150]


def check_data(chunks: list) -> None:
    decoder = DataDecoder()
    for chunk in chunks:
        _, status, _ = decoder.feed(chunk)
        assert len(decoder.partial) <= 70000 + len(chunk)
        if status != "more":
            return


register("DATA decoder", st.lists(_joined(DATA_PIECES, 10), max_size=8), check_data)


# -- the PROXY protocol header ------------------------------------------------

PROXY_PIECES = [proxy.V1_PREFIX, proxy.V2_SIGNATURE, b"TCP4 ", b"TCP6 ", b"UNKNOWN",
                b"127.0.0.5 ", b"::1 ", b"65535 ", b"99999 ", b"\r\n", b"\n", b"\x21",
                b"\x20", b"\x11", b"\x21\x00\x0c", b"\xff\xff", b"\0" * 12, b"x" * 120]


def check_proxy(data: bytes) -> None:
    """Never anything but a header, a request for a bounded number of bytes
    more, or ProxyError; a header never claims more bytes than it was given."""
    try:
        found = proxy.parse(data)
    except proxy.ProxyError:
        return
    if isinstance(found, proxy.Need):
        assert 0 < found.count <= proxy.V2_FIXED + proxy.MAX_V2_LENGTH
    else:
        assert isinstance(found, proxy.Header) and 0 < found.length <= len(data)


register("PROXY header parser", _joined(PROXY_PIECES, 12), check_proxy)

# -- the AUTH decoder -----------------------------------------------------------

SASL_MECHANISMS = [b"PLAIN", b"LOGIN", b"CRAM-MD5", b"plain", b"X", b""]
SASL_PIECES = [b"AHVzZXIAcGFzcw==", b"dXNlcg==", b"*", b"=", b"====", b"\0", b"\r",
               b"\xff", b"A" * 2000, b"dXNlcgBwYXNz", b"ab", b"0123456789abcdef"]


def check_sasl(steps) -> None:
    """Every step answers a known kind; a CHECK carries user and password
    within MAX_FIELD, with no NUL; the reply texts are whole lines."""
    mechanism, initial, lines = steps
    exchange = sasl.Exchange(mechanism, b"1700000000", b"<1.2.3@localhost>")
    step = exchange.start(initial)
    for line in [None] + lines:
        if line is not None:
            step = exchange.feed(line)
        kind = step[0]
        if kind == sasl.CHECK:
            user, password = step[1], step[2]
            assert 0 < len(user) <= sasl.MAX_FIELD and b"\0" not in user
            assert len(password) <= sasl.MAX_FIELD and b"\0" not in password
            return
        assert kind in (sasl.CHALLENGE, sasl.REFUSE), step
        assert step[1].endswith(b"\r\n") and step[1].count(b"\n") == 1
        if kind == sasl.REFUSE:
            return


register("AUTH decoder", st.tuples(st.sampled_from(SASL_MECHANISMS),
                                   st.none() | _joined(SASL_PIECES, 4),
                                   st.lists(_joined(SASL_PIECES, 4), max_size=4)), check_sasl)


# -- running ------------------------------------------------------------------

def _rss_kb() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


REPLAY_KEEP, REPLAY_ROUNDS = 50, 40


def _property(target: Target, examples: int, tried: list, kept: list):
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(target.strategy)
    def prop(value):
        tried[0] += 1
        if len(kept) < REPLAY_KEEP:
            kept.append(value)
        else:
            kept[tried[0] % REPLAY_KEEP] = value
        target.check(value)
    return prop


def _replay_growth(target: Target, kept: list) -> int:
    """RSS growth (kB) over REPLAY_ROUNDS replays of the last examples.

    Hypothesis itself keeps a tree of every choice it made, so the RSS of a
    run says little about the parsers; replaying examples without it does:
    a parser that keeps anything per input shows here."""
    for value in kept:                     # warm-up: caches, interned names
        target.check(value)
    before = _rss_kb()
    for _ in range(REPLAY_ROUNDS):
        for value in kept:
            target.check(value)
    return _rss_kb() - before


def run_fuzz(examples: int, targets=None) -> Result:
    result = Result(f"hypothesis, {examples} examples per parser")
    started = time.monotonic()
    growth = {}
    for target in targets or TARGETS:
        tried, kept = [0], []
        try:
            _property(target, examples, tried, kept)()
            growth[target.name] = _replay_growth(target, kept)
        except Exception as exc:           # hypothesis adds the shrunk example as a note
            notes = " ".join(getattr(exc, "__notes__", []))
            result.fail(f"{target.name}: {type(exc).__name__}: {exc} {notes}"[:3000])
        result.inputs += tried[0]
    worst = max(growth.values(), default=0)
    result.check(worst < 1024, f"RSS grew by {worst} kB replaying one parser's examples")
    result.detail = (f"{len(targets or TARGETS)} parsers; RSS growth over "
                     f"{REPLAY_ROUNDS} replays of {REPLAY_KEEP} examples each: at most "
                     f"{worst} kB")
    result.seconds = time.monotonic() - started
    return result
