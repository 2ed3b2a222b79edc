"""Log lines, byte for byte (pure)."""

import re

from hypothesis import given, strategies as st

from tcpserver_py import logfmt

P = "tcpserver"


def test_vanilla_lines():
    assert logfmt.status(P, 0, 40) == b"tcpserver: status: 0/40\n"
    assert logfmt.pid_from(P, 21308, "127.0.0.2") == b"tcpserver: pid 21308 from 127.0.0.2\n"
    assert logfmt.end(P, 21308, 25600) == b"tcpserver: end 21308 status 25600\n"
    assert (logfmt.decision(P, False, 21308, b"0", "127.0.0.1", 36725, None, "127.0.0.2", None,
                            46739)
            == b"tcpserver: deny 21308 0:127.0.0.1:36725 :127.0.0.2::46739\n")
    assert (logfmt.decision(P, True, 21634, b"client.example.org", "127.0.0.1", 37865,
                            b"client.example.org", "127.0.0.1", b"joe", 58951)
            == b"tcpserver: ok 21634 client.example.org:127.0.0.1:37865 "
               b"client.example.org:127.0.0.1:joe:58951\n")


def test_masking_and_cap():
    assert logfmt.sanitise('a:b%c"é'.encode()) == b'a?b?c"??'
    assert logfmt.sanitise(b"jo:ex") == b"jo?ex"
    assert logfmt.sanitise(b"a" * 99) == b"a" * 99
    assert logfmt.sanitise(b"a" * 100) == b"a" * 100 + b"..."
    assert logfmt.sanitise(b"b" * 150) == b"b" * 100 + b"..."
    assert logfmt.sanitise(b"\x1f \x7f~!\xe9") == b"???~!?"


def test_messages():
    assert (logfmt.dropping(P, "unable to read r.cdb: protocol error")
            == b"tcpserver: warning: dropping connection, unable to read r.cdb: protocol error\n")
    assert logfmt.fatal(P, "unable to bind: address already used") == \
        b"tcpserver: fatal: unable to bind: address already used\n"
    assert logfmt.per_ip_refused(P, 7, "::1", 3, 2) == b"tcpserver: limit 7 from ::1 count 3/2\n"


LINE = re.compile(rb"^tcpserver: (ok|deny) (\d+) ([^:]*):(\[[^]]*\]|[^:]*):(\d+) "
                  rb"([^:]*):(\[[^]]*\]|[^:]*):([^:]*):(\d+)\n$")


def test_ipv6_addresses_are_bracketed():
    line = logfmt.decision(P, True, 9, b"0", "2001:db8::1", 25, None, "::1", b"", 4000)
    assert line == b"tcpserver: ok 9 0:[2001:db8::1]:25 :[::1]::4000\n"


@given(st.binary(max_size=120), st.binary(max_size=120), st.binary(max_size=120),
       st.sampled_from(["127.0.0.1", "::1", "2001:db8::abcd", "10.0.0.1"]),
       st.integers(0, 65535))
def test_lines_always_parse_back(lhost, rhost, info, ip, port):
    line = logfmt.decision(P, True, 123, lhost, ip, 25, rhost, ip, info, port)
    match = LINE.match(line)
    assert match, line
    shown = match.group(4).strip(b"[]").decode()
    assert shown == ip and match.group(7).strip(b"[]").decode() == ip
    assert int(match.group(9)) == port


@given(st.binary(max_size=130))
def test_sanitise_masks_each_byte_as_safecats(field):
    want = bytes(63 if ch < 33 or ch > 126 or ch in (37, 58) else ch for ch in field[:100])
    assert logfmt.sanitise(field) == want + (b"..." if len(field) >= 100 else b"")
