"""The lookup side: candidate keys in ucspi-tcp order, value decoding, and
agreement with the keys our compiler writes."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcpserver_py.rules.addr import ipv4_cidr, ipv6_address
from tcpserver_py.rules.keys import RuleValue, candidate_keys, canonical_ip, decode_value, \
    encode_value, text_candidate_keys, value_items


def test_order_with_everything_known():
    keys = list(candidate_keys("10.1.2.3", b"mail.example.com", b"joe"))
    assert keys == [b"joe@10.1.2.3", b"joe@=mail.example.com", b"10.1.2.3",
                    b"=mail.example.com", b"10.1.2.", b"10.1.", b"10.",
                    b"=.example.com", b"=.com", b"=", b""]


def test_order_without_host_or_info_and_empty_info():
    assert list(candidate_keys("10.1.2.3")) == [b"10.1.2.3", b"10.1.2.", b"10.1.", b"10.", b""]
    assert list(candidate_keys("10.1.2.3", None, b""))[0] == b"@10.1.2.3"


def test_ipv6_order_longest_prefix_first():
    keys = list(candidate_keys("2001:db8::1"))
    assert keys[0] == b"2001:0DB8:0000:0000:0000:0000:0000:0001"
    assert keys[1] == b"2001:0DB8:0000:0000:0000:0000:0000:000"
    assert b"2001:0DB8:" in keys and keys[-2] == b"2" and keys[-1] == b""
    assert len(keys) == 1 + 31 + 1


@pytest.mark.parametrize("text, canonical", [
    ("10.1.2.3", "10.1.2.3"), ("::ffff:10.1.2.3", "10.1.2.3"), ("::1", "::1"),
    ("2001:DB8:0::1", "2001:db8::1"), ("fe80::1%eth0", "fe80::1"),
])
def test_canonical_ip(text, canonical):
    assert canonical_ip(text) == canonical


def test_canonical_ip_rejects_text():
    with pytest.raises(ValueError):
        canonical_ip("not-an-ip")


def test_text_keys_equal_candidate_keys_for_dotted_quads():
    for ip in ("10.1.2.3", "0.0.0.0", "255.255.255.255"):
        assert list(text_candidate_keys(ip.encode(), b"h.example", b"u")) == \
            list(candidate_keys(ip, b"h.example", b"u"))


def test_text_keys_follow_the_original_for_odd_text():
    assert list(text_candidate_keys(b"a.b.")) == [b"a.b.", b"a.b.", b"a.", b""]
    assert list(text_candidate_keys(b"x", b".lead")) == [b"x", b"=.lead", b"=.lead", b"=", b""]


def test_values():
    data = b"D\0+A=1\0+B=\0+NOEQ\0Xjunk\0+C=x=y\0trailing"
    assert list(value_items(data)) == [("deny", None), ("set", (b"A", b"1")),
                                       ("set", (b"B", b"")), ("set", (b"C", b"x=y"))]
    assert decode_value(data) == RuleValue(True, ((b"A", b"1"), (b"B", b""), (b"C", b"x=y")))
    assert decode_value(b"") == RuleValue()
    assert encode_value(True, [(b"WHY", b"x")]) == b"D\0+WHY=x\0"


@given(st.integers(0, 2**32 - 1), st.integers(1, 32), st.integers(0, 2**32 - 1))
def test_every_ipv4_cidr_key_is_found_exactly_for_its_addresses(net, length, probe):
    """A client inside the block finds one of the rule's keys among its
    candidates; a client outside finds none of them."""
    import ipaddress
    text = f"{ipaddress.IPv4Address(net)}/{length}".encode()
    keys = set(ipv4_cidr(text).keys)
    inside = (probe >> (32 - length)) == (net >> (32 - length))
    found = keys & set(candidate_keys(str(ipaddress.IPv4Address(probe))))
    assert bool(found) == inside


@given(st.integers(0, 2**128 - 1), st.integers(1, 128), st.integers(0, 2**128 - 1),
       st.booleans())
def test_every_ipv6_cidr_key_is_found_exactly_for_its_addresses(net, length, probe, near):
    import ipaddress
    if near:  # make "inside" likely: keep the network bits, vary the rest
        host_bits = 128 - length
        probe = (net >> host_bits << host_bits) | (probe & ((1 << host_bits) - 1))
    mapped = ipaddress.IPv6Network("::ffff:0:0/96")
    net_addr = ipaddress.IPv6Address(net)
    probe_addr = ipaddress.IPv6Address(probe)
    if net_addr in mapped or probe_addr in mapped:
        return  # IPv4-mapped space is looked up as IPv4: covered above
    keys = set(ipv6_address(f"{net_addr}/{length}".encode()).keys)
    inside = (probe >> (128 - length)) == (net >> (128 - length))
    found = keys & set(candidate_keys(canonical_ip(str(probe_addr))))
    assert bool(found) == inside


# End to end: compile random IPv4 CIDR rule sets with our tcprules, look
# clients up the way tcpserver does, and compare with longest-prefix-match
# (first line among equal prefixes) computed directly.
@st.composite
def cidr_rules(draw):
    rules = []
    for _ in range(draw(st.integers(1, 12))):
        length = draw(st.integers(8, 32))
        net = draw(st.integers(0, 2**16 - 1)) << 16 | draw(st.integers(0, 255)) << 8
        net = (0x0A000000 | net & 0x00FFFFFF) >> (32 - length) << (32 - length)
        rules.append((net, length))
    return rules


@pytest.mark.timeout(120)
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rules=cidr_rules(), probes=st.lists(st.integers(0, 2**24 - 1), min_size=5, max_size=20))
def test_longest_prefix_wins_end_to_end(rules, probes, tmp_path):
    import ipaddress
    import subprocess

    import cdbx

    from conftest import our_program

    source = b"".join(b"%s/%d:allow,LINE=\"%d\"\n" % (str(ipaddress.IPv4Address(net)).encode(),
                                                        length, n)
                      for n, (net, length) in enumerate(rules, 1))
    cdb = tmp_path / "p.cdb"
    subprocess.run([our_program("tcprules"), str(cdb), str(tmp_path / "p.tmp")],
                   input=source, check=True, capture_output=True, timeout=60)
    with open(cdb, "rb") as handle:
        db = cdbx.CDB(handle, mmap=False)
        for probe in probes:
            ip = 0x0A000000 | probe
            # bias probes towards the rules' own blocks
            net, length = rules[probe % len(rules)]
            if probe & 1:
                ip = net | (probe & ((1 << (32 - length)) - 1))
            text = str(ipaddress.IPv4Address(ip))
            found = next((db.get(k) for k in candidate_keys(text) if db.get(k) is not None),
                         None)
            matching = [(-length, n) for n, (net, length) in enumerate(rules, 1)
                        if ip >> (32 - length) == net >> (32 - length)]
            expected = b"+LINE=%d\0" % min(matching)[1] if matching else None
            assert found == expected, (text, source)
        db.close()
