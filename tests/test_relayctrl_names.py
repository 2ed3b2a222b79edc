"""The pure part of SMTP-after-POP: record names, the expiry, freshness."""

import ipaddress

import pytest
from hypothesis import example, given, strategies as st

from smtpd_child.relayctrl import names


@pytest.mark.parametrize("spelling, canonical", [
    ("192.0.2.7", "192.0.2.7"),
    ("::ffff:192.0.2.7", "192.0.2.7"),
    ("::FFFF:192.0.2.7", "192.0.2.7"),
    ("0:0:0:0:0:ffff:c000:0207", "192.0.2.7"),
    ("2001:DB8:0:0::1", "2001:db8::1"),
    ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
    ("::1", "::1"),
])
def test_one_spelling_per_address(spelling, canonical):
    assert names.canonical_address(spelling) == canonical


@pytest.mark.parametrize("hostile", [
    "", None, "../x", "/", "..", ".", "x" * 10000, "1" * 10000, "192.0.2.7/24",
    "192.0.2.7\n", " 192.0.2.7", "192.000.002.007", "192.0.2", "256.0.0.1",
    "fe80::1%eth0", "fe80::1%../../x", "::ffff:192.0.2.7/..", "1.2.3.4.5", "::g",
])
def test_hostile_addresses_are_refused(hostile):
    with pytest.raises(names.BadValue) as info:
        names.canonical_address(hostile)
    assert len(str(info.value)) < 120        # a log line, not the 10,000 bytes


@given(st.text(max_size=80))
@example("0.0.0.0")
@example("::ffff:192.0.2.7")
def test_anything_accepted_is_a_plain_file_name_and_stable(text):
    try:
        name = names.canonical_address(text)
    except names.BadValue:
        return
    assert "/" not in name and name not in (".", "..") and not name.startswith(".")
    assert names.canonical_address(name) == name
    given = ipaddress.ip_address(text)
    mapped = given.ipv4_mapped if given.version == 6 else None
    assert ipaddress.ip_address(name) in (given, mapped)


@given(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)))
def test_every_address_has_its_name(address):
    name = names.canonical_address(str(address))
    if address.version == 6 and address.ipv4_mapped:
        assert name == str(address.ipv4_mapped)
        assert names.canonical_address(address.exploded) == name
    else:
        assert ipaddress.ip_address(name) == address
    assert names.is_record_name(name)


def test_record_names_exclude_other_files():
    assert not names.is_record_name("::ffff:192.0.2.7")      # not canonical
    assert not names.is_record_name(names.TEMP_PREFIX + "123.abc")
    assert not names.is_record_name("README")


@pytest.mark.parametrize("value, seconds", [(None, 900), ("0", 0), ("60", 60),
                                            ("100000000", 10 ** 8)])
def test_expiry(value, seconds):
    assert names.parse_expiry(value) == seconds


@pytest.mark.parametrize("value", ["", "abc", "-5", "1.5", " 60", "60s", "١٢", "100000001"])
def test_bad_expiry(value):
    with pytest.raises(names.BadValue, match="RELAY_CTRL_EXPIRY"):
        names.parse_expiry(value)


def test_relayclient_value():
    assert names.parse_relayclient(None) == ""
    assert names.parse_relayclient("@relay.example") == "@relay.example"
    with pytest.raises(names.BadValue, match="control character"):
        names.parse_relayclient("x\ny")


def test_freshness_bounds():
    now = 1_000_000.0
    assert names.is_fresh(now - 900, now, 900)
    assert not names.is_fresh(now - 901, now, 900)
    assert names.is_fresh(now + names.CLOCK_SLACK, now, 900)
    assert not names.is_fresh(now + names.CLOCK_SLACK + 1, now, 900)   # planted in the future


def test_record_content_keeps_only_printable_values():
    assert names.record_content("alice", None) == b"USER=alice\n"
    assert names.record_content("a\nUSER=root", "example.org") == b"DOMAIN=example.org\n"
    assert names.record_content(None, None) == b""
