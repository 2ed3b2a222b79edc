"""Unit tests of the pure rules compiler: line syntax, address forms, the
streaming compiler's bookkeeping and the shadow/specificity resolution."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpserver_py.rules.addr import AddressError, _parse_hex_groups, address_keys, \
    expand_range, ipv4_cidr, ipv6_address, ipv6_text
from tcpserver_py.rules.cover import covered_prefixes, ipv4_parent, ipv6_parent, is_prefix, \
    prefix_keys
from tcpserver_py.rules.compiler import MAX_LINE, CompileError, Compiler
from tcpserver_py.rules.keys import ipv6_key, ipv6_prefix_key
from tcpserver_py.rules.parse import RuleSyntaxError, ipv6_split, parse_instruction, \
    parse_line, show
from tcpserver_py.rules.shadow import duplicate_records, resolve


@pytest.mark.parametrize("text, value", [
    (b"allow", b""),
    (b"deny", b"D\0"),
    (b"deny,WHY=\"x\"", b"D\0+WHY=x\0"),
    (b"allow,A=\"x\",B=/y/,C='',E=:colon:", b"+A=x\0+B=y\0+C=\0+E=colon\0"),
    (b"allow,=\"v\"", b"+=v\0"),
    (b"allow,A,B=\"v\"", b"+A,B=v\0"),
    (b"allow,X=:a,b:", b"+X=a,b\0"),
    (b"allow,X=\xffa=b\xff", b"+X=a=b\0"),
])
def test_instructions(text, value):
    assert parse_instruction(text) == value


@pytest.mark.parametrize("text, reason", [
    (b"allowed", "expected ',' at column 6"),
    (b"Allow", 'expected "allow" or "deny"'),
    (b" allow", 'expected "allow" or "deny"'),
    (b"allow,X", "expected '=' after the variable name X"),
    (b"allow,X=", "expected a quote byte after '=' of X"),
    (b"allow,X=\"a\",", "expected '=' after the variable name"),
    (b"allow,X=\"abc", "unterminated value: no closing \" for X"),
    (b"allow,X=\"a\"junk", "expected ',' at column"),
    (b"allow,X=\"\"\"\"", "expected ',' at column"),
])
def test_instruction_errors_say_what_was_expected(text, reason):
    with pytest.raises(RuleSyntaxError) as caught:
        parse_instruction(text)
    assert reason in caught.value.reason


@pytest.mark.parametrize("addr, keys", [
    (b"1.2.3.37-40", [b"1.2.3.37", b"1.2.3.38", b"1.2.3.39", b"1.2.3.40"]),
    (b"10.2-3.", [b"10.2.", b"10.3."]),
    (b"1-3.", [b"1.", b"2.", b"3."]),
    (b"1.2.3.-2", [b"1.2.3.0", b"1.2.3.1", b"1.2.3.2"]),
    (b"1.2-3.4-5", [b"1.2.4-5", b"1.3.4-5"]),
    (b"04-06.", [b"4.", b"5.", b"6."]),
    (b"1.2.3.250-300", [b"1.2.3.%d" % n for n in range(250, 256)]),
    (b"1.2.3.9-5", []),
    (b"18446744073709551617-3", [b"1", b"2", b"3"]),
])
def test_ranges_like_the_original(addr, keys):
    assert list(expand_range(addr)) == keys


@pytest.mark.parametrize("addr", [b"1.2.3.a-2", b"1.2.3.1-2x", b"x-1"])
def test_range_errors(addr):
    with pytest.raises(AddressError):
        expand_range(addr)


@pytest.mark.parametrize("addr", [b"joe@1.2.3.4-5", b"=a-b.com", b"=", b"", b" 9.9.9.9",
                                  b"001.2.3.4", b"=host", b"joe@=host"])
def test_literal_addresses(addr):
    assert address_keys(addr).keys == (addr,)


@pytest.mark.parametrize("addr, keys, prefixlen, granular", [
    (b"10.0.0.0/8", [b"10."], 8, True),
    (b"10.0.0.0/16", [b"10.0."], 16, True),
    (b"10.0.0.0/9", [b"10.%d." % n for n in range(128)], 9, False),
    (b"10.128.0.0/9", [b"10.%d." % n for n in range(128, 256)], 9, False),
    (b"192.168.4.0/22", [b"192.168.%d." % n for n in range(4, 8)], 22, False),
    (b"1.2.3.4/32", [b"1.2.3.4"], 32, True),
    (b"1.2.3.4/31", [b"1.2.3.4", b"1.2.3.5"], 31, False),
    (b"128.0.0.0/1", [b"%d." % n for n in range(128, 256)], 1, False),
])
def test_ipv4_cidr_keys(addr, keys, prefixlen, granular):
    result = ipv4_cidr(addr)
    assert (list(result.keys), result.prefixlen, result.granular) == (keys, prefixlen, granular)
    assert result.note is None


def test_ipv4_cidr_host_bits_are_dropped_with_a_note():
    result = ipv4_cidr(b"10.1.2.3/24")
    assert result.keys == (b"10.1.2.",)
    assert "rule covers 10.1.2.0/24" in result.note


@pytest.mark.parametrize("addr, reason", [
    (b"10.0.0.0/0", "use the empty address"),
    (b"10.0.0.0/33", "1-32"),
    (b"10.0.0/8", "four decimal octets"),
    (b"10.0.0.256/8", "four decimal octets"),
    (b"010.0.0.0/8", "four decimal octets"),
    (b"10.0.0.0/", "1-32"),
    (b"10.0.0.0/x", "1-32"),
])
def test_ipv4_cidr_errors(addr, reason):
    with pytest.raises(AddressError) as caught:
        ipv4_cidr(addr)
    assert reason in str(caught.value)


V6_1 = b"0000:0000:0000:0000:0000:0000:0000:0001"


@pytest.mark.parametrize("addr, keys, prefixlen, granular", [
    (b"::1", [V6_1], 128, True),
    (b"2001:DB8::5", [b"2001:0DB8:0000:0000:0000:0000:0000:0005"], 128, True),
    (b"2001:db8::/32", [b"2001:0DB8:"], 32, True),
    (b"2001:db8::/36", [b"2001:0DB8:0"], 36, True),
    (b"2001:db8::/30", [b"2001:0DB8:", b"2001:0DB9:", b"2001:0DBA:", b"2001:0DBB:"], 30, False),
    (b"2001:db8:1::/47", [b"2001:0DB8:0000:", b"2001:0DB8:0001:"], 47, False),
    (b"::1/128", [V6_1], 128, True),
    (b"::ffff:1.2.3.4", [b"1.2.3.4"], 32, True),
    (b"::ffff:10.0.0.0/104", [b"10."], 8, True),
    (b"::ffff:10.0.0.0/105", [b"10.%d." % n for n in range(128)], 9, False),
])
def test_ipv6_keys(addr, keys, prefixlen, granular):
    result = ipv6_address(addr)
    assert (list(result.keys), result.prefixlen, result.granular) == (keys, prefixlen, granular)


def test_ipv6_user_and_errors():
    assert ipv6_address(b"joe@::1").keys == (b"joe@" + V6_1,)
    assert ipv6_address(b"joe@::ffff:1.2.3.4").keys == (b"joe@1.2.3.4",)
    for bad, reason in [(b"::/0", "use the empty address"), (b"::1/129", "1-128"),
                        (b"joe@2001:db8::/32", "single address")]:
        with pytest.raises(AddressError) as caught:
            ipv6_address(bad)
        assert reason in str(caught.value)
    assert "is a single address" in ipv6_address(b"2001:db8::").note


@given(st.integers(0, (1 << 128) - 1), st.integers(1, 32))
def test_ipv6_text_agrees_with_the_lookup_side(value, nibbles):
    import ipaddress
    addr = ipaddress.IPv6Address(value)
    expected = ipv6_key(addr) if nibbles == 32 else ipv6_prefix_key(addr, nibbles)
    assert ipv6_text(value, nibbles) == expected.encode()


V6_SPELLINGS = st.builds(
    lambda value, style: {
        "compressed": lambda a: a.compressed,
        "exploded": lambda a: a.exploded,
        "upper": lambda a: a.compressed.upper(),
        "unpadded": lambda a: ":".join(f"{int(g, 16):x}" for g in a.exploded.split(":")),
    }[style](__import__("ipaddress").IPv6Address(value)).encode(),
    st.one_of(st.integers(0, (1 << 128) - 1), st.integers(0, 0xFFFF),
              st.integers(0, 0xFFFF).map(lambda n: n << 112)),
    st.sampled_from(["compressed", "exploded", "upper", "unpadded"]))


@given(V6_SPELLINGS)
def test_fast_ipv6_parse_takes_every_hex_spelling(text):
    import ipaddress
    assert _parse_hex_groups(text) == int(ipaddress.IPv6Address(text.decode()))


@given(st.text("0123456789abcdefABCDEF:", max_size=45).map(str.encode))
def test_fast_ipv6_parse_never_accepts_what_ipaddress_refuses(text):
    import ipaddress
    fast = _parse_hex_groups(text)
    try:
        expected = int(ipaddress.IPv6Address(text.decode()))
    except ValueError:
        expected = None
    assert fast is None or fast == expected


def reference_ipv4_keys(network):
    """Straightforward keys of an ipaddress network: its subnets at the next
    octet boundary, written as dotted prefixes."""
    boundary = -(-network.prefixlen // 8) * 8
    keys = []
    for subnet in network.subnets(new_prefix=boundary):
        octets = str(subnet.network_address).split(".")[:boundary // 8]
        keys.append((".".join(octets) + ("." if boundary < 32 else "")).encode())
    return keys


@given(st.integers(0, (1 << 32) - 1), st.integers(1, 32))
def test_ipv4_cidr_keys_agree_with_ipaddress(value, prefixlen):
    import ipaddress
    text = f"{ipaddress.IPv4Address(value)}/{prefixlen}"
    network = ipaddress.IPv4Network(text, strict=False)
    result = ipv4_cidr(text.encode())
    assert list(result.keys) == reference_ipv4_keys(network)
    assert result.prefixlen == prefixlen
    assert result.granular == (prefixlen % 8 == 0)
    assert (result.note is not None) == (int(network.network_address) != value)


@given(st.integers(0, (1 << 128) - 1), st.integers(1, 128))
def test_ipv6_cidr_keys_agree_with_ipaddress(value, prefixlen):
    import ipaddress
    if value >> 32 == 0xFFFF and prefixlen >= 96:
        return  # IPv4-mapped blocks: tested with their IPv4 keys below
    text = f"{ipaddress.IPv6Address(value)}/{prefixlen}"
    network = ipaddress.IPv6Network(text, strict=False)
    boundary = -(-prefixlen // 4) * 4
    expected = [(ipv6_key(sub.network_address) if boundary == 128 else
                 ipv6_prefix_key(sub.network_address, boundary // 4)).encode()
                for sub in network.subnets(new_prefix=boundary)]
    result = ipv6_address(text.encode())
    assert list(result.keys) == expected
    assert (result.prefixlen, result.granular) == (prefixlen, prefixlen % 4 == 0)


@given(st.integers(0, (1 << 32) - 1), st.integers(97, 128))
def test_ipv4_mapped_cidr_keys_are_the_ipv4_keys(value, prefixlen):
    import ipaddress
    mapped = ipv6_address(f"::ffff:{ipaddress.IPv4Address(value)}/{prefixlen}".encode())
    plain = ipv4_cidr(f"{ipaddress.IPv4Address(value)}/{prefixlen - 96}".encode())
    assert (mapped.keys, mapped.prefixlen, mapped.granular) == \
        (plain.keys, plain.prefixlen, plain.granular)


def test_ipv4_mapped_slash_96_is_refused_not_a_crash():
    for addr in (b"::ffff:0.0.0.0/96", b"::ffff:10.1.2.3/96"):
        with pytest.raises(AddressError) as caught:
            ipv6_address(addr)
        assert "every IPv4 address" in str(caught.value)


@pytest.mark.parametrize("line, split", [
    (b"::1:allow", (b"::1", b"allow")),
    (b"2001:db8::1:deny", (b"2001:db8::1", b"deny")),
    (b"2001:db8:::allow,WHO=\"prefix\"", (b"2001:db8::", b"allow,WHO=\"prefix\"")),
    (b"2001:db8::2:allow,URL=\"http://x:80/\"", (b"2001:db8::2", b"allow,URL=\"http://x:80/\"")),
    (b"joe@::1:allow", (b"joe@::1", b"allow")),
    (b"2001:db8::/32:deny", (b"2001:db8::/32", b"deny")),
    (b"1.2.3.4:foo:allow", None),
    (b"1.2.3.4:allow", None),
    (b"nothing here", None),
])
def test_ipv6_split(line, split):
    assert ipv6_split(line) == split


def test_parse_line_outcomes():
    assert parse_line(b"# comment: allow").keys == ()
    assert parse_line(b"").keys == ()
    assert parse_line(b"   ").warning is None
    assert "no colon" in parse_line(b"1.2.3.4 allow").warning
    assert "carriage return" in parse_line(b"junk\r").warning
    blank = parse_line(b" 9.9.9.9:allow")
    assert blank.keys == (b" 9.9.9.9",) and "starts with a blank" in blank.warning
    assert parse_line(b"9.9.9.10:allow   \t").keys == (b"9.9.9.10",)
    v6 = parse_line(b"::1:deny,WHY=\"a:b\"")
    assert (v6.keys, v6.value) == ((V6_1,), b"D\0+WHY=a:b\0")
    with pytest.raises(RuleSyntaxError) as caught:
        parse_line(b"1.2.3.4:allow\r")
    assert "carriage return" in caught.value.reason


def test_show_escapes_and_truncates():
    assert show(b"a\\b\r\t\x00\xff") == "a\\\\b\\r\\t\\x00\\xff"
    assert show(b"x" * 500).endswith("... (500 bytes)")


def compile_all(chunks):
    records, warnings = [], []
    compiler = Compiler(lambda k, v: records.append((k, v)),
                        lambda n, t: warnings.append((n, t)))
    for chunk in chunks:
        compiler.feed(chunk)
    compiler.finish()
    return compiler, records, warnings


SOURCE = (b"# head\n1.2.3.4:allow\n\n10.0.0.0/9:deny\n5.6.7.8:allow,X=\"1\"\n"
          b"1.2.3.1-3:deny\nno colon\n 7.7.7.7:allow\n9.9.9.9:allow,X=\"1\"\n:allow")


@given(st.lists(st.integers(1, len(SOURCE) - 1), max_size=6))
def test_compiler_independent_of_chunking(cuts):
    cuts = sorted(set(cuts))
    pieces = [SOURCE[a:b] for a, b in zip([0] + cuts, cuts + [len(SOURCE)])]
    assert compile_all(pieces)[1:] == compile_all([SOURCE])[1:]


def test_compiler_records_lines_and_wide_rules():
    compiler, records, warnings = compile_all([SOURCE])
    keys = [k for k, _ in records]
    assert keys[:2] == [b"1.2.3.4", b"10.0."] and keys[128] == b"10.127."
    assert keys[129:] == [b"5.6.7.8", b"1.2.3.1", b"1.2.3.2", b"1.2.3.3", b" 7.7.7.7",
                          b"9.9.9.9", b""]
    assert compiler.records == len(records) == 136
    assert compiler.wide == [(1, 128, 9)]
    lines = [compiler.linemap.line_of(i) for i in range(len(records))]
    assert lines[:3] == [2, 4, 4] and lines[128] == 4
    assert lines[129:] == [5, 6, 6, 6, 8, 9, 10]
    assert compiler.linemap.records_of(130, len(records)) == 3
    assert [n for n, _ in warnings] == [4, 7, 8]
    assert "IPv4 CIDR block, an extension" in warnings[0][1]


LINE_ADDRESSES = [b"1.2.3.4", b"1.2.3.", b"", b"1.2.3.1-3", b"1.2.3.5-3", b"10.0.0.0/9",
                  b"10.1.2.3/24", b"10.0.0.0/0", b"1.2.3/8", b"=h.example", b"joe@1.2.3.4",
                  b"joe@1.2.0.0/16", b" 1.2.3.4", b"#1.2.3.4", b"::1", b"2001:db8::/30",
                  b"2001:db8::/129", b"joe@2001:db8::1", b"joe@2001:db8::/32",
                  b"::ffff:1.2.3.4/120", b"::ffff:1.2.3.4/96", b"2001:db8::", b"1::2::3",
                  b"a:allow@::1", b"a-b"]
GOOD_INSTRUCTIONS = [b"allow", b"deny", b"allow,X=\"1\"", b"deny,U=:a:b:", b"allow \t"]
BAD_INSTRUCTIONS = [b"allow\r", b"allowx", b"deny,X=\"open", b"Allow", b""]


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from(LINE_ADDRESSES),
                          st.sampled_from([b":"] * 6 + [b"", b"::"]),
                          # errors stop the compile: make them rarer
                          st.sampled_from(GOOD_INSTRUCTIONS * 4 + BAD_INSTRUCTIONS)),
                min_size=1, max_size=8))
def test_compiler_shortcuts_agree_with_parse_line(parts):
    """The compiler's own paths (cached instructions, ranges, CIDR, IPv6)
    give the records, warnings and errors parse_line gives, line by line."""
    lines = [addr + colon + instruction for addr, colon, instruction in parts]
    expected_records, expected_warnings, expected_error = [], [], None
    for lineno, line in enumerate(lines, 1):
        try:
            parsed = parse_line(line)
        except RuleSyntaxError as error:
            expected_error = (lineno, error.reason)
            break
        expected_records += [(key, parsed.value) for key in parsed.keys]
        if parsed.warning:
            expected_warnings.append((lineno, parsed.warning))
    records, warnings = [], []
    compiler = Compiler(lambda k, v: records.append((k, v)),
                        lambda n, t: warnings.append((n, t)))
    try:
        compiler.feed(b"\n".join(lines) + b"\n")
        error = None
    except CompileError as caught:
        error = (caught.lineno, caught.reason)
    assert (records, warnings, error) == (expected_records, expected_warnings, expected_error)


def test_compiler_errors_carry_line_numbers():
    with pytest.raises(CompileError) as caught:
        compile_all([b"1.2.3.4:allow\n# x\n1.2.3.5:allow,X=\"y\n"])
    assert caught.value.lineno == 3 and "unterminated" in caught.value.reason
    with pytest.raises(CompileError) as caught:
        compile_all([b"1.2.3.4:allow\n", b"9" * (MAX_LINE + 1)])
    assert caught.value.lineno == 2 and "longer than" in caught.value.reason


@given(st.lists(st.sampled_from([b"a", b"b", b"c", b"d", b"e"]), max_size=30))
def test_duplicate_records(keys):
    unique = list(dict.fromkeys(keys))
    seen, expected = set(), []
    for index, key in enumerate(keys):
        if key in seen:
            expected.append((index, key))
        seen.add(key)
    assert list(duplicate_records(keys, unique)) == expected


def resolved(source):
    compiler, records, _ = compile_all([source])
    keys = [k for k, _ in records]
    result = resolve(len(records), compiler.linemap, compiler.wide, lambda: iter(keys),
                     lambda: iter(dict.fromkeys(keys)), len(set(keys)))
    kept = [r for i, r in enumerate(records) if i not in result.drop]
    return kept, result


def first_value(kept, key):
    return next(v for k, v in kept if k == key)


def test_more_specific_rule_wins_wherever_it_is():
    kept, result = resolved(b"10.0.0.0/9:deny\n10.0.:allow,A=\"1\"\n10.0.0.0/12:allow,B=\"1\"\n")
    assert first_value(kept, b"10.0.") == b"+A=1\0"
    assert first_value(kept, b"10.1.") == b"+B=1\0"
    assert first_value(kept, b"10.16.") == b"D\0"
    assert result.warnings == []


def test_equal_rules_first_line_wins_and_the_other_is_reported():
    kept, result = resolved(b"10.0.0.0/16:allow,A=\"1\"\n10.0.:deny\n")
    assert first_value(kept, b"10.0.") == b"+A=1\0"
    assert result.drop == set()
    assert result.warnings == [(2, 'rule never matches: line 1 matches every address '
                                   'it covers first (key "10.0.")')]


def test_fully_covered_wide_rule_is_reported_with_both_lines():
    kept, result = resolved(b"192.168.0.0/23:deny\n192.168.1.0/24:allow\n192.168.0.0/24:allow\n")
    assert [k for k, v in kept if v == b"D\0"] == []
    assert result.warnings == [(1, 'rule never matches: lines 2 and 1 more match every '
                                   'address it covers first (key "192.168.0.")')]
    assert result.never_count == 1


def test_partly_covered_rule_is_not_reported():
    kept, result = resolved(b"1.2.3.4/31:deny\n1.2.3.4:allow\n")
    assert first_value(kept, b"1.2.3.4") == b""
    assert first_value(kept, b"1.2.3.5") == b"D\0"
    assert result.warnings == []


def test_warnings_are_capped_but_counted():
    source = b"".join(b"1.1.1.%d:allow\n" % (n % 3) for n in range(50))
    compiler, records, _ = compile_all([source])
    keys = [k for k, _ in records]
    result = resolve(len(keys), compiler.linemap, compiler.wide, lambda: iter(keys),
                     lambda: iter(dict.fromkeys(keys)), 3, limit=5)
    assert result.never_count == 47
    assert [n for n, _ in result.warnings] == [4, 5, 6, 7, 8]


@pytest.mark.parametrize("key, parent", [
    (b"10.1.2.3", b"10.1.2."), (b"10.1.2.", b"10.1."), (b"10.1.", b"10."), (b"10.", None),
    (b"10.1.2.3.", None), (b"10.01.2.3", None), (b"=a.b", None), (b"joe@1.2.3.4", None),
])
def test_ipv4_parent(key, parent):
    assert ipv4_parent(key) == parent


@pytest.mark.parametrize("key, parent", [
    (V6_1, b"0000:0000:0000:0000:0000:0000:0000:000"),
    (b"2001:0DB8:", b"2001:0DB"), (b"2001:0", b"2001:"), (b"2001:", b"200"), (b"20", b"2"),
    (b"2", None), (b"2001:db8:", None), (b"2001:0DB8", None),
])
def test_ipv6_parent(key, parent):
    assert ipv6_parent(key) == parent


def test_prefixes_covered_by_longer_keys():
    keys = ([b"10.1.2.", b"10.1.3.", b"10.1."] + [b"10.1.2.%d" % n for n in range(256)]
            + [b"10.1.3.%d" % n for n in range(255)]
            + [b"2001:0DB8:"] + [b"2001:0DB8:%X" % n for n in range(16)] + [b"=h.example"])
    prefixes = prefix_keys(keys)
    assert prefixes == ({b"10.1.2.", b"10.1.3.", b"10.1.", b"2001:0DB8:"}
                        | {b"2001:0DB8:%X" % n for n in range(16)})
    assert all(is_prefix(p) for p in prefixes)
    assert covered_prefixes(keys, prefixes) == {b"10.1.2.": b"10.1.2.0",
                                                b"2001:0DB8:": b"2001:0DB8:0"}
