"""qmail's path parser, plus the refusal of control bytes."""

import pytest
from hypothesis import given, strategies as st

from smtpd_child.smtp.address import esmtp_size, ipv4_text, parse_path, split_address

LOCAL_HOST = b"mail.example.com"


def parse(arg):
    return parse_path(arg, LOCAL_HOST, lambda ip: ip in {"127.0.0.1", "10.0.0.7"})


@pytest.mark.parametrize("arg,expected", [
    (b"FROM:<user@example.com>", b"user@example.com"),
    (b"TO:<user@example.com> NOTIFY=NEVER SIZE=10", b"user@example.com"),
    (b"FROM:<>", b""),
    (b"", b""),                                     # MAIL with no argument: null sender
    (b"<u@example.com>", b"u@example.com"),          # keyword never checked
    (b"TO:u@example.com extra", b"u@example.com"),   # no <: stops at a space
    (b"TO: u@example.com", b"u@example.com"),        # spaces after the colon skipped
    (b"u@example.com", b""),                         # no < and no colon: empty
    (b"TO:<@a,@b:user@host>", b"user@host"),         # source route dropped
    (b"TO:<@example.com>", b""),                     # lone route: empty
    (b'TO:<"user@other"@local>', b"user@other@local"),
    (b'TO:<"us>er"@example.com>', b"us>er@example.com"),
    (b"TO:<user\\@other.test@example.com>", b"user@other.test@example.com"),
    (b"TO:<user@example.com", b"user@example.com"),   # missing terminator is fine
    (b"TO:<user@example.com >", b"user@example.com "),
    (b"TO:<TUSER@Mail.Example.Com>", b"TUSER@Mail.Example.Com"),  # spelling kept
    (b"TO:<u@[127.0.0.1]>", b"u@mail.example.com"),  # this host's IP literal
    (b"TO:<u@[10.0.0.7]>", b"u@mail.example.com"),
    (b"TO:<u@[192.0.2.1]>", b"u@[192.0.2.1]"),
    (b"TO:<u@[IPv6:::1]>", b"u@[IPv6:::1]"),
    (b"TO:<a@[127.0.0.1]@[127.0.0.1]>", b"a@[127.0.0.1]@mail.example.com"),  # last @ only
    (b"TO:<u@127.0.0.1>", b"u@127.0.0.1"),
    # qmail's ip_scan: any number of digits, each part kept modulo 256
    (b"TO:<u@[0127.0.0.1]>", b"u@mail.example.com"),
    (b"TO:<u@[127.0.0.257]>", b"u@mail.example.com"),
    (b"TO:<u@[127.0.0.1 ]>", b"u@[127.0.0.1 ]"),
    (b"TO:<u@[127.0.0.1]x>", b"u@[127.0.0.1]x"),
    (b"TO:<u@[127.0.0]>", b"u@[127.0.0]"),
    (b"TO:<u@[127.0.0.+1]>", b"u@[127.0.0.+1]"),
])
def test_qmail_parsing(arg, expected):
    assert parse(arg) == expected


def test_900_byte_limit():
    assert parse(b"<" + b"a" * 887 + b"@example.com>") is not None   # 899 bytes
    assert parse(b"<" + b"a" * 888 + b"@example.com>") is None       # 900 bytes
    assert parse(b"<" + b"a" * 890 + b"@example.com>") is None


@pytest.mark.parametrize("byte", [0, 1, 9, 10, 13, 27, 31, 127])
def test_control_bytes_refused(byte):
    assert parse(b"<a" + bytes([byte]) + b"b@example.com>") is None
    assert parse(b"<a\\" + bytes([byte]) + b"b@example.com>") is None


def test_control_bytes_after_the_path_are_ignored():
    assert parse(b"<a@example.com> X=\x00") == b"a@example.com"


def test_without_local_ip_host_no_rewrite():
    assert parse_path(b"<u@[127.0.0.1]>") == b"u@[127.0.0.1]"


@given(st.binary(max_size=300))
def test_parser_never_raises_and_never_returns_control_bytes(arg):
    result = parse(arg)
    assert result is None or not any(b < 32 or b == 127 for b in result)


def test_helpers():
    assert split_address(b"a@b@c") == (b"a@b", b"c")
    assert split_address(b"postmaster") == (b"postmaster", None)
    assert ipv4_text(b"127.000.0.1") == "127.0.0.1"
    assert ipv4_text(b"256.0.0.1") == "0.0.0.1" and ipv4_text(b"1.2.3") is None
    assert ipv4_text(b"1.2.3.4.") is None and ipv4_text(b"1..3.4") is None
    assert esmtp_size(b"FROM:<a@b> BODY=8BITMIME size=1234") == 1234
    assert esmtp_size(b"FROM:<a@b> SIZE=x") is None
    assert esmtp_size(b"FROM:a@b SIZE=5") is None


def test_nul_after_the_path_is_ignored_but_not_inside_or_before_it():
    assert parse(b"TO:<u@example.com>\x00x") == b"u@example.com"
    assert parse(b"TO:u@example.com \x00x") == b"u@example.com"
    assert parse(b"TO:u@example.com\x00<x@example.com>") is None
    assert parse(b"TO:\x00<x@example.com>") is None
