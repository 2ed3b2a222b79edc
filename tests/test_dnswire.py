"""DNS packet building and parsing (pure)."""

import struct

import pytest
from hypothesis import given, strategies as st

from tcpserver_py.net.dnswire import (TYPE_A, TYPE_PTR, BadPacket, build_query, encode_name,
                                  parse_answer, reverse_domain, to_dotted)

Q = reverse_domain("127.0.0.1")


def answer(qid, question, qtype, records, rcode=0, flags=0x8180):
    header = struct.pack(">HHHHHH", qid, flags | rcode, 1, len(records), 0, 0)
    body = b""
    for rtype, rdata in records:
        body += struct.pack(">HHHIH", 0xC00C, rtype, 1, 60, len(rdata)) + rdata
    return header + question + struct.pack(">HH", qtype, 1) + body


def test_query_layout():
    packet = build_query(0x1234, Q, TYPE_PTR)
    assert packet[:12] == b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    assert packet[12:] == Q + b"\x00\x0c\x00\x01"


def test_ptr_answer_lowercased_first_wins():
    pkt = answer(7, Q, TYPE_PTR, [(TYPE_PTR, encode_name(b"Mail.Example.ORG")),
                                  (TYPE_PTR, encode_name(b"other.example"))])
    assert parse_answer(pkt, 7, Q, TYPE_PTR) == (0, [b"mail.example.org", b"other.example"])


def test_compressed_ptr_and_a_records():
    # PTR data pointing back into the question name
    pkt = answer(9, Q, TYPE_PTR, [(TYPE_PTR, b"\x04host\xc0\x0c")])
    assert parse_answer(pkt, 9, Q, TYPE_PTR)[1] == [b"host.1.0.0.127.in-addr.arpa"]
    name = encode_name(b"h.example")
    pkt = answer(3, name, TYPE_A, [(TYPE_A, bytes([10, 0, 0, 1])), (5, b"\x00")])
    assert parse_answer(pkt, 3, name, TYPE_A) == (0, [b"10.0.0.1"])


def test_unusual_bytes_escaped_like_djbdns():
    assert to_dotted([b"A b", b"c.d"]) == b"a\\040b.c\\056d"
    assert to_dotted([]) == b"."


def test_wrong_answers_rejected():
    pkt = answer(7, Q, TYPE_PTR, [])
    with pytest.raises(BadPacket):
        parse_answer(pkt, 8, Q, TYPE_PTR)                         # other id
    with pytest.raises(BadPacket):
        parse_answer(pkt, 7, reverse_domain("127.0.0.2"), TYPE_PTR)   # other question
    with pytest.raises(BadPacket):
        parse_answer(answer(7, Q, TYPE_PTR, [], flags=0x0100), 7, Q, TYPE_PTR)   # a query
    assert parse_answer(answer(7, Q, TYPE_PTR, [], rcode=3), 7, Q, TYPE_PTR) == (3, [])


@given(st.binary(max_size=300))
def test_garbage_never_crashes(data):
    try:
        parse_answer(data, 7, Q, TYPE_PTR)
    except BadPacket:
        pass


@given(st.binary(min_size=0, max_size=80))
def test_truncated_real_answers(tail):
    pkt = answer(7, Q, TYPE_PTR, [(TYPE_PTR, encode_name(b"a.b"))])
    for cut in range(len(pkt)):
        try:
            parse_answer(pkt[:cut] + tail, 7, Q, TYPE_PTR)
        except BadPacket:
            pass
