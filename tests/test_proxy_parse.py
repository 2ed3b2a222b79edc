"""The PROXY protocol parser (tcpserver_py/net/proxy.py): pure, bounded."""

import ipaddress
import struct

import pytest
from hypothesis import given, settings, strategies as st

from tcpserver_py.net.proxy import (MAX_V2_LENGTH, V1_MAX, V2_SIGNATURE, Header, Need,
                                    ProxyError, parse, parse_sources, trusted)


def v2(command: int, family_transport: int, body: bytes, version: int = 2) -> bytes:
    return (V2_SIGNATURE + bytes([version << 4 | command, family_transport])
            + struct.pack(">H", len(body)) + body)


def v2_inet(src: str, sport: int, dst: str, dport: int, tlvs: bytes = b"") -> bytes:
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    family = 0x11 if a.version == 4 else 0x21
    return v2(1, family, a.packed + b.packed + struct.pack(">HH", sport, dport) + tlvs)


def test_v1_tcp4():
    data = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\nEHLO x\r\n"
    header = parse(data)
    assert header == Header(44, 1, ("192.0.2.7", 40000, "198.51.100.1", 25))
    assert data[header.length:] == b"EHLO x\r\n"


def test_v1_tcp6_compressed_and_mapped():
    header = parse(b"PROXY TCP6 2001:0db8:0:0::7 ::ffff:192.0.2.9 1 65535\r\n")
    assert header.addresses == ("2001:db8::7", 1, "192.0.2.9", 65535)


def test_v1_unknown_keeps_socket_addresses():
    assert parse(b"PROXY UNKNOWN\r\n") == Header(15, 1, None)
    assert parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").addresses is None


@pytest.mark.parametrize("line", [
    b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\n",          # LF only
    b"PROXY TCP4 192.0.2.7 198.51.100.1 40000\r\n",           # a field missing
    b"PROXY TCP4  192.0.2.7 198.51.100.1 40000 25\r\n",       # double space
    b"PROXY TCP4 2001:db8::1 198.51.100.1 40000 25\r\n",      # wrong family
    b"PROXY TCP4 192.0.2.07 198.51.100.1 40000 25\r\n",       # leading zero
    b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 25\r\n",        # port too large
    b"PROXY TCP4 192.0.2.7 198.51.100.1 040 25\r\n",
    b"PROXY TCP5 192.0.2.7 198.51.100.1 40 25\r\n",
    b"EHLO example.org\r\n",
])
def test_v1_malformed(line):
    with pytest.raises(ProxyError):
        parse(line)


def test_v1_incomplete_asks_for_the_line_only():
    wanted = parse(b"PROXY TCP4 192.0.2.7")
    assert wanted == Need(V1_MAX - 20, line=True)
    assert parse(b"PRO") == Need(12)


def test_v1_longer_than_107_bytes_is_refused():
    with pytest.raises(ProxyError, match="107"):
        parse(b"PROXY UNKNOWN " + b"x" * 100)


def test_v2_inet_and_inet6_and_tlvs_skipped():
    data = v2_inet("192.0.2.7", 40000, "198.51.100.1", 25, tlvs=b"\x04\x00\x01z") + b"rest"
    header = parse(data)
    assert header.addresses == ("192.0.2.7", 40000, "198.51.100.1", 25)
    assert data[header.length:] == b"rest"
    assert parse(v2_inet("2001:db8::7", 1, "2001:db8::1", 2)).addresses == (
        "2001:db8::7", 1, "2001:db8::1", 2)


def test_v2_local_and_unspec_keep_socket_addresses():
    assert parse(v2(0, 0x00, b"")).addresses is None
    assert parse(v2(0, 0x11, b"\0" * 12)).addresses is None     # LOCAL ignores addresses
    assert parse(v2(1, 0x00, b"")).addresses is None


def test_v2_needs_exact_counts():
    data = v2_inet("192.0.2.7", 1, "192.0.2.8", 2)
    assert parse(data[:15]) == Need(1)
    assert parse(data[:16]) == Need(12)
    assert parse(data[:20]) == Need(8)


@pytest.mark.parametrize("data", [
    v2(1, 0x11, b"\0" * 11),                     # addresses truncated
    v2(1, 0x12, b"\0" * 12),                     # UDP
    v2(2, 0x11, b"\0" * 12),                     # unknown command
    v2(1, 0x11, b"\0" * 12, version=1),          # version 1 in a v2 header
    v2(1, 0x41, b"\0" * 12),                     # unknown family
])
def test_v2_malformed(data):
    with pytest.raises(ProxyError):
        parse(data)


def test_v2_length_is_capped_before_reading():
    head = V2_SIGNATURE + b"\x21\x11" + struct.pack(">H", MAX_V2_LENGTH + 1)
    with pytest.raises(ProxyError, match="longer"):
        parse(head)        # refused on the 16 fixed bytes: nothing more is read


def test_sources():
    nets = parse_sources("10.0.0.0/8, 192.0.2.1,2001:db8::/32")
    assert trusted("10.9.8.7", nets) and trusted("192.0.2.1", nets)
    assert trusted("::ffff:10.1.1.1", nets)
    assert trusted("2001:db8::5", nets)
    assert not trusted("192.0.2.2", nets) and not trusted("127.0.0.1", nets)
    for bad in ("", "10.0.0.0/33", "example.org", "10.0.0.0/8,"):
        with pytest.raises(ValueError):
            parse_sources(bad)


def _feed(data: bytes):
    """Drive the parser as the reader does: only what it asks for."""
    got = b""
    while True:
        result = parse(got)
        if isinstance(result, Header):
            return result, got
        assert 0 < result.count <= 16 + MAX_V2_LENGTH
        chunk = data[len(got):len(got) + result.count]
        if result.line and b"\n" in chunk:
            chunk = chunk[:chunk.index(b"\n") + 1]
        if not chunk:
            return None, got
        got += chunk


prefixes = st.sampled_from([b"", b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ", b"PROXY UNKNOWN",
                            V2_SIGNATURE, V2_SIGNATURE + b"\x21\x11", V2_SIGNATURE + b"\x20"])


@settings(max_examples=1500, deadline=None)
@given(prefixes, st.binary(max_size=300))
def test_fuzz_no_exception_escapes_and_reads_are_bounded(prefix, tail):
    data = prefix + tail
    try:
        header, consumed = _feed(data)
    except ProxyError:
        return
    if header is not None:
        assert header.length == len(consumed) <= max(V1_MAX, 16 + MAX_V2_LENGTH)
        if header.version == 1:
            assert consumed.endswith(b"\r\n") and len(consumed) <= V1_MAX
        assert data.startswith(consumed)


@settings(max_examples=500, deadline=None)
@given(st.ip_addresses(v=4), st.ip_addresses(v=4), st.integers(0, 65535),
       st.integers(0, 65535), st.booleans())
def test_fuzz_round_trip(src, dst, sport, dport, version_one):
    if version_one:
        data = b"PROXY TCP4 %s %s %d %d\r\n" % (str(src).encode(), str(dst).encode(),
                                                 sport, dport)
    else:
        data = v2_inet(str(src), sport, str(dst), dport)
    assert parse(data + b"tail").addresses == (str(src), sport, str(dst), dport)


# The reader (net/proxyio.py) over a real socket, the bytes arriving in
# arbitrary pieces: it must take the header and leave every later byte.

import socket  # noqa: E402  (the tests above need no I/O)

from tcpserver_py.net.proxyio import HeaderReader  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([
    b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\n",
    b"PROXY UNKNOWN\r\n",
    v2_inet("2001:db8::7", 1, "2001:db8::1", 2, tlvs=b"\x04\x00\x03abc"),
    v2(0, 0x00, b""),
]), st.binary(max_size=40), st.lists(st.integers(1, 30), max_size=12))
def test_reader_leaves_the_clients_bytes(header, after, cuts):
    data = header + after
    ours, theirs = socket.socketpair()
    with ours, theirs:
        reader = HeaderReader(ours)
        position = 0
        found = None
        for cut in cuts + [len(data)]:
            theirs.sendall(data[position:position + cut])
            position = min(len(data), position + cut)
            found = reader.step()
            if found is not None:
                break
        assert found is not None and found.length == len(header)
        theirs.sendall(data[position:])
        theirs.shutdown(socket.SHUT_WR)
        rest = b""
        while chunk := ours.recv(4096):
            rest += chunk
        assert rest == after


def test_reader_eof_mid_header_is_truncated():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(b"PROXY TCP4 192.0.2.7 1")
        theirs.close()
        reader = HeaderReader(ours)
        with pytest.raises(ProxyError, match="truncated"):
            while reader.step() is None:
                pass
