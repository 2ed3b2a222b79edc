"""Transcript tests of the SMTP state machine (no sockets, no processes).

Every transcript runs twice: the client's bytes delivered whole, and one byte
at a time; the replies and the queued messages must be the same.
"""

import pytest
from hypothesis import given, settings, strategies as st

from smtpd_child.smtp import replies
from smtpd_child.smtp.policy import Policy
from smtpd_child.smtp.protocol import (ABORT, CLOSE, COMMIT, FLUSH, INTERNAL_ERROR, OPEN, SEND,
                                  WRITE, Session, SessionConfig)

NOW = 1795543254   # 24 Nov 2026 18:00:54 UTC


class FakeQueue:
    def __init__(self, open_ok=True, reply=b"250 ok 1795543254 qp 4242\r\n"):
        self.open_ok = open_ok
        self.reply = reply
        self.current = None
        self.committed = []     # (sender, recipients, message bytes)
        self.aborted = 0


def make_config(**overrides):
    values = dict(greeting=b"mail.example.com",
                  policy=Policy(rcpthosts=[b"example.com", b"mail.example.com", b".example.net"],
                                badmailfrom=[b"spammer@bad.test", b"@evil.test"]),
                  remoteip=b"127.0.0.1", local=b"mail.example.com", clock=lambda: NOW,
                  local_ip_host=b"mail.example.com", is_local_ip=lambda ip: ip == "127.0.0.1")
    values.update(overrides)
    return SessionConfig(**values)


def drive(client: bytes, config=None, queue=None, bytewise=False):
    """Run a session; returns (reply bytes, queue, exit code or None)."""
    session = Session(config or make_config())
    queue = queue or FakeQueue()
    sent = bytearray()
    exit_code = None

    def perform(actions):
        nonlocal exit_code
        index = 0
        while index < len(actions):
            action = actions[index]
            index += 1
            if action[0] == SEND:
                sent.extend(action[1])
            elif action[0] == OPEN:
                if queue.open_ok:
                    queue.current = [action[1], action[2], bytearray()]
                actions += session.queue_opened(queue.open_ok)
            elif action[0] == WRITE:
                queue.current[2].extend(action[1])
            elif action[0] == ABORT:
                queue.aborted += 1
                queue.current = None
            elif action[0] == COMMIT:
                sender, recipients, message = queue.current
                queue.committed.append((sender, recipients, bytes(message)))
                queue.current = None
                actions += session.queue_finished(queue.reply)
            elif action[0] == CLOSE:
                exit_code = action[1]

    perform(session.greeting())
    pieces = [client[i:i + 1] for i in range(len(client))] if bytewise else [client]
    for piece in pieces:
        if session.closed:
            break
        perform(session.receive(piece))
    if not session.closed:
        perform(session.receive(b""))
    return bytes(sent), queue, exit_code


def lines(*items):
    return b"".join(item + b"\r\n" for item in items)


GREET = replies.greeting(b"mail.example.com")
BYE = b"221 mail.example.com\r\n"
RECEIVED = (b"Received: from unknown (HELO client.test) (127.0.0.1)\n"
            b"  by mail.example.com with SMTP; 24 Nov 2026 18:00:54 -0000\n")

# (name, client lines, expected replies after the greeting)
TRANSCRIPTS = [
    ("helo-quit", lines(b"HELO client.test", b"QUIT"),
     b"250 mail.example.com\r\n" + BYE),
    ("ehlo", lines(b"EHLO client.test", b"QUIT"),
     b"250-mail.example.com\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 0\r\n" + BYE),
    ("verbs-case-insensitive", lines(b"hElO x", b"noop", b"Quit now"),
     b"250 mail.example.com\r\n250 ok\r\n" + BYE),
    ("noop-vrfy-help", lines(b"NOOP x", b"VRFY root", b"HELP", b"QUIT"),
     replies.OK + replies.VRFY + replies.HELP + BYE),
    ("unknown-verbs", lines(b"EXPN x", b"", b" HELO x", b"MAIL\tFROM:<a@b>", b"STARTTLS",
                            b"AUTH PLAIN", b"BDAT 10", b"QUIT"),
     replies.UNIMPLEMENTED * 7 + BYE),
    ("sequence-errors", lines(b"RCPT TO:<u@example.com>", b"DATA", b"MAIL FROM:<a@b.test>",
                              b"DATA", b"QUIT"),
     replies.MAIL_FIRST * 2 + replies.OK + replies.RCPT_FIRST + BYE),
    ("no-helo-needed-and-rset", lines(b"MAIL FROM:<a@b.test>", b"RSET",
                                      b"RCPT TO:<u@example.com>", b"QUIT"),
     replies.OK + replies.FLUSHED + replies.MAIL_FIRST + BYE),
    ("helo-clears-mail", lines(b"MAIL FROM:<a@b.test>", b"HELO x", b"RCPT TO:<u@example.com>",
                               b"QUIT"),
     replies.OK + b"250 mail.example.com\r\n" + replies.MAIL_FIRST + BYE),
    ("nested-mail-restarts", lines(b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>",
                                   b"MAIL FROM:<c@d.test>", b"DATA", b"QUIT"),
     replies.OK * 3 + replies.RCPT_FIRST + BYE),
    ("mail-no-argument-is-null-sender", lines(b"MAIL", b"RCPT TO:<u@example.com>", b"QUIT"),
     replies.OK * 2 + BYE),
    ("two-spaces", lines(b"MAIL  FROM:<a@b.test>", b"QUIT"), replies.OK + BYE),
    ("rcpthosts", lines(b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>",
                        b"RCPT TO:<u@sub.example.com>", b"RCPT TO:<u@a.example.net>",
                        b"RCPT TO:<u@example.net>", b"RCPT TO:<TUSER@Mail.Example.Com>",
                        b"RCPT TO:<u@evilexample.com>", b"QUIT"),
     replies.OK * 2 + replies.NOGATEWAY + replies.OK + replies.NOGATEWAY + replies.OK
     + replies.NOGATEWAY + BYE),
    ("badmailfrom", lines(b"MAIL FROM:<x@EVIL.test>", b"RCPT TO:<u@example.com>",
                          b"MAIL FROM:<x@sub.evil.test>", b"RCPT TO:<u@example.com>", b"QUIT"),
     replies.OK + replies.BADMAILFROM + replies.OK * 2 + BYE),
    ("syntax-control-bytes", lines(b"MAIL FROM:<a\x00b@c.test>", b"MAIL FROM:<a@b.test>",
                                   b"RCPT TO:<victim@other.test\x00Tx@example.com>",
                                   b"RCPT TO:<u\x7f@example.com>", b"QUIT"),
     replies.SYNTAX + replies.OK + replies.SYNTAX * 2 + BYE),
    ("line-too-long", lines(b"NOOP " + b"x" * 600, b"NOOP", b"MAIL FROM:<" + b"a" * 505 + b">",
                            b"QUIT"),
     replies.LINE_TOO_LONG + replies.OK + replies.LINE_TOO_LONG + BYE),
    ("line-limit-boundary", lines(b"NOOP " + b"x" * 505, b"NOOP " + b"x" * 506, b"QUIT"),
     replies.OK + replies.LINE_TOO_LONG + BYE),
    ("bare-lf-ends-a-command", b"HELO x\nQUIT\n", b"250 mail.example.com\r\n" + BYE),
    ("safe-refusals", lines(b"MAIL FROM:<a@b.test>", b"RCPT TO:<relaytest%other.test@example.com>",
                            b"RCPT TO:<other.test!u@example.com>", b"RCPT TO:<u@other.test@example.com>",
                            b"RCPT TO:<u>", b"RCPT TO:<Postmaster>", b"RCPT TO:<>", b"QUIT"),
     replies.OK + replies.NO_RELAY * 3 + replies.NEEDS_DOMAIN + replies.OK
     + replies.NEEDS_DOMAIN + BYE),
    ("declared-size", lines(b"EHLO x", b"MAIL FROM:<a@b.test> SIZE=5000", b"RCPT TO:<u@example.com>",
                            b"MAIL FROM:<a@b.test> SIZE=100", b"QUIT"),
     b"250-mail.example.com\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 1000\r\n"
     + replies.DATABYTES + replies.MAIL_FIRST + replies.OK + BYE),
    # qmail's command reader is C: a NUL ends the verb (and the argument when it
    # comes before any space), so `NOOP\0junk` is NOOP and `MAIL\0...` a null sender.
    ("nul-ends-the-verb", lines(b"NOOP\x00junk", b"MAIL\x00FROM:<a@b.test>",
                                b"RCPT TO:<u@example.com>\x00junk", b"QUIT\x00now"),
     replies.OK * 3 + BYE),
    # A NUL that changes what qmail would see as the path is refused, never ignored.
    ("nul-before-the-path", lines(b"MAIL FROM:<a@b.test>",
                                  b"RCPT TO:victim@other.test\x00<x@example.com>",
                                  b"RCPT TO:<u@example.com>", b"QUIT"),
     replies.OK + replies.SYNTAX + replies.OK + BYE),
    # A refused declared size ends the transaction: a pipelined RCPT/DATA must not
    # join the previous one.
    ("declared-size-ends-transaction", lines(b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>",
                                             b"MAIL FROM:<c@d.test> SIZE=5000",
                                             b"RCPT TO:<u@example.com>", b"DATA", b"QUIT"),
     replies.OK * 2 + replies.DATABYTES + replies.MAIL_FIRST * 2 + BYE),
]


def config_for(name):
    if name.startswith("declared-size"):
        return make_config(databytes=1000)
    return make_config()


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("name,client,expected", TRANSCRIPTS, ids=[t[0] for t in TRANSCRIPTS])
def test_transcript(name, client, expected, bytewise):
    sent, queue, code = drive(client, config_for(name), bytewise=bytewise)
    assert sent == GREET + expected
    assert code == 0
    assert queue.committed == []


MESSAGE = lines(b"HELO client.test", b"MAIL FROM:<a@b.test> BODY=8BITMIME",
                b"RCPT TO:<u@example.com>", b"RCPT TO:<v@a.example.net>", b"DATA",
                b"Subject: hi", b"", b"..dotted", b".x", b"bare\rcr", b".", b"QUIT")


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_message_is_decoded_and_queued(bytewise):
    sent, queue, code = drive(MESSAGE, bytewise=bytewise)
    assert sent == (GREET + b"250 mail.example.com\r\n" + replies.OK * 3 + replies.GO_AHEAD
                    + b"250 ok 1795543254 qp 4242\r\n" + BYE)
    assert queue.committed == [(b"a@b.test", [b"u@example.com", b"v@a.example.net"],
                                RECEIVED + b"Subject: hi\n\n.dotted\nx\nbare\rcr\n")]
    assert code == 0


def test_received_without_helo_and_with_empty_helo():
    client = lines(b"MAIL FROM:<>", b"RCPT TO:<u@example.com>", b"DATA", b".",
                   b"HELO", b"MAIL FROM:<>", b"RCPT TO:<u@example.com>", b"DATA", b".", b"QUIT")
    _, queue, _ = drive(client, make_config(remotehost=b"Client.Test", remoteinfo=b"id user"))
    first, second = (message for _, _, message in queue.committed)
    assert first.startswith(b"Received: from Client.Test (id?user@127.0.0.1)\n")
    assert second.startswith(b"Received: from Client.Test (HELO ) (id?user@127.0.0.1)\n")
    assert queue.committed[0][:2] == (b"", [b"u@example.com"])


def test_received_uses_netqmail_safe_characters_and_nul_ends_helo():
    # netqmail 1.06's received.c keeps only A-Za-z0-9 and . @ % + / = : - ;
    # brackets of an address literal become `?` (notqmail later kept them).
    client = lines(b"HELO [192.0.2.9]", b"MAIL FROM:<>", b"RCPT TO:<u@example.com>", b"DATA",
                   b".", b"HELO client.test\x00junk", b"MAIL FROM:<>",
                   b"RCPT TO:<u@example.com>", b"DATA", b".", b"QUIT")
    _, queue, _ = drive(client, make_config(remotehost=b"[x]_#", remoteip=b"[::1]"))
    first, second = (message for _, _, message in queue.committed)
    assert first.startswith(b"Received: from ?x??? (HELO ?192.0.2.9?) (?::1?)\n")
    assert second.startswith(b"Received: from ?x??? (HELO client.test) (?::1?)\n")


def test_second_data_needs_mail_again():
    client = lines(b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>", b"DATA", b"x", b".",
                   b"DATA", b"RCPT TO:<u@example.com>", b"QUIT")
    sent, queue, _ = drive(client)
    assert sent.endswith(b"250 ok 1795543254 qp 4242\r\n" + replies.MAIL_FIRST * 2 + BYE)
    assert len(queue.committed) == 1


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("smuggle", [b"a\n.\r\n", b"a\r\n.\nMAIL", b"x\nb"])
def test_bare_lf_in_data_is_fatal(smuggle, bytewise):
    client = lines(b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>", b"DATA") + smuggle \
        + b"\r\n.\r\nQUIT\r\n"
    sent, queue, code = drive(client, bytewise=bytewise)
    assert sent.endswith(replies.GO_AHEAD + replies.BARE_LF)
    assert queue.committed == [] and queue.aborted == 1
    assert code == 1


def test_dot_cr_quirk_and_empty_message():
    client = lines(b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>", b"DATA") \
        + b".\rkept\r\n.\r\n" + lines(b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>",
                                      b"DATA", b".", b"QUIT")
    _, queue, _ = drive(client)
    assert queue.committed[0][2] == RECEIVED.replace(b" (HELO client.test)", b"") + b".\rkept\n"
    assert queue.committed[1][2] == RECEIVED.replace(b" (HELO client.test)", b"")


@pytest.mark.parametrize("body,accepted", [(b"012345678", True), (b"0123456789", False),
                                           (b"0123456789012345678901", False)])
def test_databytes_counts_stored_bytes(body, accepted):
    client = lines(b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>", b"DATA", body, b".",
                   b"NOOP", b"QUIT")
    sent, queue, code = drive(client, make_config(databytes=10))
    if accepted:
        assert queue.committed and queue.committed[0][2].endswith(b"\n012345678\n")
    else:
        assert queue.committed == [] and queue.aborted == 1
        assert sent.endswith(replies.GO_AHEAD + replies.DATABYTES + replies.OK + BYE)
    assert code == 0


def test_hop_count():
    header = lines(*([b"Received: x"] * 50 + [b"delivered-to: y"] * 50))
    client = lines(b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>", b"DATA") \
        + header + lines(b"", b".", b"QUIT")
    sent, queue, _ = drive(client)
    assert sent.endswith(replies.GO_AHEAD + replies.TOO_MANY_HOPS + BYE)
    assert queue.committed == []
    # 99 in the header and more in the body is fine.
    body_hops = lines(*([b"RECEIVED"] * 99), b"", *([b"Received: z"] * 5))
    client = lines(b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>", b"DATA") \
        + body_hops + lines(b".", b"QUIT")
    _, queue, _ = drive(client)
    assert len(queue.committed) == 1


def test_recipient_limit():
    client = lines(b"MAIL FROM:<a@b.test>", *[b"RCPT TO:<u%d@example.com>" % i for i in range(101)],
                   b"DATA", b".", b"QUIT")
    sent, queue, _ = drive(client)
    assert sent == (GREET + replies.OK * 101 + replies.TOO_MANY_RECIPIENTS + replies.GO_AHEAD
                    + b"250 ok 1795543254 qp 4242\r\n" + BYE)
    assert len(queue.committed[0][1]) == 100


def test_relayclient_appends_and_skips_rcpthosts():
    policy = Policy(rcpthosts=[b"example.com"], relayclient=b"@fixup.test",
                    badmailfrom=[b"@evil.test"])
    client = lines(b"MAIL FROM:<>", b"RCPT TO:<user@other.test>", b"RCPT TO:<>", b"DATA", b".",
                   b"MAIL FROM:<x@evil.test>", b"RCPT TO:<user@other.test>", b"QUIT")
    sent, queue, _ = drive(client, make_config(policy=policy))
    assert queue.committed[0][1] == [b"user@other.test@fixup.test", b"@fixup.test"]
    assert sent.endswith(replies.OK + replies.BADMAILFROM + BYE)


def test_local_ip_literal_is_rewritten():
    client = lines(b"MAIL FROM:<a@[127.0.0.1]>", b"RCPT TO:<u@[127.0.0.1]>",
                   b"RCPT TO:<u@[192.0.2.1]>", b"DATA", b".", b"QUIT")
    sent, queue, _ = drive(client)
    assert queue.committed[0][:2] == (b"a@mail.example.com", [b"u@mail.example.com"])
    assert replies.NOGATEWAY in sent


def test_queue_open_failure_and_queue_reply():
    client = lines(b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>", b"DATA", b"QUIT")
    sent, _, _ = drive(client, queue=FakeQueue(open_ok=False))
    assert sent.endswith(replies.QQT_FAILURE + BYE)
    failure = replies.queue_failure(replies.qq_status(71))
    client = lines(b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>", b"DATA", b"x", b".",
                   b"QUIT")
    sent, _, _ = drive(client, queue=FakeQueue(reply=failure))
    assert sent.endswith(replies.GO_AHEAD + b"451 mail server temporarily rejected message "
                         b"(#4.3.0)\r\n" + BYE)


def test_eof_mid_data_queues_nothing():
    client = lines(b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>", b"DATA", b"partial")
    sent, queue, code = drive(client)
    assert sent.endswith(replies.GO_AHEAD)
    assert queue.committed == [] and queue.aborted == 1 and code == 1


def test_pipelined_replies_are_flushed_together():
    session = Session(make_config())
    session.greeting()
    actions = session.receive(lines(b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>",
                                    b"RCPT TO:<u@other.test>", b"RSET"))
    # MAIL, RCPT and RSET replies are buffered for the next blocking read.
    assert actions == [(SEND, replies.OK), (SEND, replies.OK), (SEND, replies.NOGATEWAY),
                       (SEND, replies.FLUSHED)]
    assert session.receive(b"NOOP\r\n") == [(SEND, replies.OK), (FLUSH,)]


def test_long_data_line_passes_in_pieces():
    big = b"y" * 300_000
    client = lines(b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>", b"DATA", b"." + big, b".",
                   b"QUIT")
    _, queue, _ = drive(client)
    assert queue.committed[0][2].endswith(b"\n" + big + b"\n")


commands = st.sampled_from([b"HELO x", b"EHLO", b"MAIL FROM:<a@b.test>", b"MAIL FROM:<a@b>SIZE=9",
                            b"RCPT TO:<u@example.com>", b"RCPT TO:<\"x\\", b"DATA", b".", b"RSET",
                            b"..", b"QUIT", b"", b"\r", b"\n", b"\r\n.\n", b"RCPT <@a:b@c>"])
chunks = st.lists(st.one_of(st.binary(max_size=40), commands.map(lambda c: c + b"\r\n")),
                  max_size=30)


@settings(max_examples=300, deadline=None)
@given(chunks, st.booleans(), st.integers(min_value=0, max_value=30))
def test_protocol_never_raises(pieces, open_ok, databytes):
    session = Session(make_config(databytes=databytes))
    outputs = list(session.greeting())
    for piece in pieces + [b""]:
        actions = session.receive(piece)
        while True:
            outputs += actions
            if session.waiting and any(a[0] == OPEN for a in actions):
                actions = session.queue_opened(open_ok)
            elif session.waiting:
                actions = session.queue_finished(b"250 ok 1 qp 1\r\n")
            else:
                break
        if session.closed:
            break
    assert (SEND, INTERNAL_ERROR) not in outputs
    assert session.closed


# -- the DATA decoder against a byte-by-byte transcription of qmail's blast() --

def qmail_blast(data: bytes):
    """qmail-smtpd's blast() state machine, one byte at a time (the reference)."""
    out = bytearray()
    state, hops = 1, 0
    in_header, pos, maybe_x, maybe_y, maybe_z = True, 0, True, True, True
    for index, ch in enumerate(data):
        if in_header:
            if pos < 9:
                if ch != b"delivered"[pos] and ch != b"DELIVERED"[pos]:
                    maybe_z = False
                if maybe_z and pos == 8:
                    hops += 1
                if pos < 8 and ch != b"received"[pos] and ch != b"RECEIVED"[pos]:
                    maybe_x = False
                if maybe_x and pos == 7:
                    hops += 1
                if pos < 2 and ch != b"\r\n"[pos]:
                    maybe_y = False
                if maybe_y and pos == 1:
                    in_header = False
                pos += 1
            if ch == 0x0A:
                pos, maybe_x, maybe_y, maybe_z = 0, True, True, True
        if state == 0:
            if ch == 0x0A:
                return bytes(out), "bare-lf", hops, b""
            if ch == 0x0D:
                state = 4
                continue
        elif state == 1:
            if ch == 0x0A:
                return bytes(out), "bare-lf", hops, b""
            if ch == 0x2E:
                state = 2
                continue
            if ch == 0x0D:
                state = 4
                continue
            state = 0
        elif state == 2:
            if ch == 0x0A:
                return bytes(out), "bare-lf", hops, b""
            if ch == 0x0D:
                state = 3
                continue
            state = 0
        elif state == 3:
            if ch == 0x0A:
                return bytes(out), "end", hops, data[index + 1:]
            out += b".\r"
            if ch == 0x0D:
                state = 4
                continue
            state = 0
        elif state == 4:
            if ch == 0x0A:
                state = 1
            elif ch != 0x0D:
                out += b"\r"
                state = 0
        out.append(ch)
    raise AssertionError("input must contain an end")


pieces = st.sampled_from([b"\r", b"\n", b".", b"a", b"\r\n", b".\r\n", b"..", b"received",
                          b"DELIVERED: x", b"Received", b"\r\n\r\n", b".\r", b"\rx", b"x" * 20])


@settings(max_examples=400, deadline=None)
@given(st.lists(pieces, max_size=40), st.lists(st.integers(min_value=1, max_value=30),
                                                  min_size=1, max_size=20))
def test_data_decoder_matches_qmail(parts, cuts):
    import smtpd_child.smtp.framing as framing
    data = b"".join(parts) + b"\r\n.\r\nNEXT"
    expected = qmail_blast(data)
    saved = framing.DATA_PIECE
    framing.DATA_PIECE = 12          # exercise the long-line path with short lines
    try:
        decoder = framing.DataDecoder()
        out, status, rest, position = b"", framing.MORE, b"", 0
        for cut in cuts * (len(data) // sum(cuts) + 1):
            chunk = data[position:position + cut]
            position += cut
            decoded, status, rest = decoder.feed(chunk)
            out += decoded
            if status != framing.MORE or position >= len(data):
                break
    finally:
        framing.DATA_PIECE = saved
    if expected[1] == "bare-lf":
        assert status == framing.BARE_LF     # the message is thrown away: output irrelevant
        return
    assert status == framing.END
    assert (out, status, decoder.hops, rest + data[position:]) == expected


def test_out_of_memory_is_qmails_421():
    class Exhausted(Policy):
        def check_recipient(self, address, sender_is_bad):
            raise MemoryError
    client = lines(b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>", b"QUIT")
    sent, queue, code = drive(client, make_config(policy=Exhausted(rcpthosts=[b"example.com"])))
    assert sent == GREET + replies.OK + replies.OUT_OF_MEMORY and code == 1
