"""Our tcprules against Debian's C tcprules: byte-identical cdbs for every
input the original accepts, the same exit codes for the inputs it rejects,
and tinycdb's `cdb -d` dumps as recorded from the original (spec §2.4)."""

import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import our_program, peer_program

CORPUS_A = b"""# tcp.smtp for qmail-smtpd
127.:allow,RELAYCLIENT=""
10.0.0.5:allow,RELAYCLIENT="",DATABYTES="0"
192.168.1.37-40:allow,RELAYCLIENT=""
10.2-3.:deny
=mx.example.com:allow,RBLSMTPD=""
=.spam.example:deny
joe@127.0.0.1:allow,SMTPUSER="joe"
:allow
"""
DUMP_A = (b"+4,14:127.->+RELAYCLIENT=\0\n"
          b"+8,27:10.0.0.5->+RELAYCLIENT=\0+DATABYTES=0\0\n"
          b"+12,14:192.168.1.37->+RELAYCLIENT=\0\n"
          b"+12,14:192.168.1.38->+RELAYCLIENT=\0\n"
          b"+12,14:192.168.1.39->+RELAYCLIENT=\0\n"
          b"+12,14:192.168.1.40->+RELAYCLIENT=\0\n"
          b"+5,2:10.2.->D\0\n"
          b"+5,2:10.3.->D\0\n"
          b"+15,11:=mx.example.com->+RBLSMTPD=\0\n"
          b"+14,2:=.spam.example->D\0\n"
          b"+13,14:joe@127.0.0.1->+SMTPUSER=joe\0\n"
          b"+0,0:->\n\n")

CORPUS_B = (b"1.2.3.4:allow,A=\"x\",B=/y/,C='',D=#has \"quotes\", and a comma#,E=:colon:\n"
            b"1.2.3.5:deny,WHY=\"listed\"\n")
DUMP_B = (b"+7,52:1.2.3.4->+A=x\0+B=y\0+C=\0+D=has \"quotes\", and a comma\0+E=colon\0\n"
          b"+7,14:1.2.3.5->D\0+WHY=listed\0\n\n")

# Dump C of the spec without its fake-CIDR line (we compile that one).
CORPUS_C = (b"5.6.7.8:allow,FIRST=\"1\"\n5.6.7.8:deny\n 9.9.9.9:allow\n"
            b"9.9.9.10:allow   \t\nthis line has no colon and is silently ignored\n"
            b"1.2.3.250-300:allow\n1.2.3.9-5:allow\n")
DUMP_C = (b"+7,9:5.6.7.8->+FIRST=1\0\n+7,2:5.6.7.8->D\0\n+8,0: 9.9.9.9->\n"
          b"+8,0:9.9.9.10->\n"
          + b"".join(b"+9,0:1.2.3.%d->\n" % n for n in range(250, 256)) + b"\n")

# Every other construct of spec §2.2/2.3, each accepted by the original.
CORPUS_MORE = [
    b"1.2.3.-2:allow",            # empty lower bound counts as 0
    b"1-3.:deny",
    b"1-2:allow",
    b"1.2-3.4-5:allow",           # only the first range expands
    b"04-06.:allow",              # re-printed in decimal
    b"001.2.3.4:allow",           # kept verbatim
    b"joe@1.2.3.4-5:allow",       # no ranges with @
    b"=a-b.com:allow",            # no ranges with =
    b"1.2.3.4:allow,X=:a,b:",
    b"1.2.3.4:deny,X=\"1\"",
    b"1.2.3.4:allow,=\"v\"",      # empty name
    b"1.2.3.4:allow,A,B=\"v\"",   # name with a comma
    b"1.2.3.4:allow,X=\"\"",
    b"1.2.3.4:allow,X=\x01bin\xff\x01",  # any byte as quote, non-UTF-8
    b"\xc3\x28\xff:allow,X=\"\xe9t\xe9\"",
    b"18446744073709551617-3:allow",   # 64-bit wrap of the original's scan_ulong
    b"1.2.3.0-999999:deny",
    b"a\x00b:allow",
    b"#1.2.3.4:deny",
    b"",
    b"   ",
    b"1.2.3.4:deny   ",
    b":deny,WHY=\"default\"",
    b"=:allow",
    b"@1.2.3.4:allow",
    b"1.2#3.4:deny",              # '#', blanks inside an address: literal keys
    b"1.2 3.4:allow",
    b"1.2\t3.4:allow",
    b"1.2.3.4 :deny",
]

REJECTED = [
    b"1.2.3.4:allow\r",
    b"1.2.3.4:denyx", b":allowed", b":Allow", b": allow",
    b"1.2.3.4:allow,X=\"unterminated",
    b"1.2.3.4:allow,X", b"1.2.3.4:allow,X=", b"1.2.3.4:allow,X=\"a\",",
    b"1.2.3.4:allow X=\"a\"", b"1.2.3.4:allow,X=\"a\"junk", b"1.2.3.4:allow,X=\"\"\"\"",
    b"1.2.3.a-2:allow", b"1.2.3.1-2x:allow",
]


def compile_with(program, source, tmp_path, name):
    cdb = tmp_path / f"{name}.cdb"
    proc = subprocess.run([program, str(cdb), str(tmp_path / f"{name}.tmp")],
                          input=source, capture_output=True, timeout=60)
    return proc, (cdb.read_bytes() if cdb.exists() else None)


def both(source, tmp_path):
    theirs = compile_with(peer_program("/usr/bin/tcprules"), source, tmp_path, "c")
    ours = compile_with(our_program("tcprules"), source, tmp_path, "py")
    return theirs, ours


def dump(cdb_bytes, tmp_path):
    path = tmp_path / "dump.cdb"
    path.write_bytes(cdb_bytes)
    return subprocess.run([peer_program("cdb"), "-d", str(path)], capture_output=True,
                          check=True, timeout=30).stdout


@pytest.mark.parametrize("source, expected", [(CORPUS_A, DUMP_A), (CORPUS_B, DUMP_B),
                                              (CORPUS_C, DUMP_C)], ids=["A", "B", "C"])
def test_spec_corpora_identical_and_dump_as_recorded(source, expected, tmp_path):
    (theirs, c_cdb), (ours, py_cdb) = both(source, tmp_path)
    assert theirs.returncode == ours.returncode == 0
    assert py_cdb == c_cdb
    assert dump(py_cdb, tmp_path) == expected


def test_every_construct_identical(tmp_path):
    source = b"\n".join(CORPUS_MORE) + b"\n" + CORPUS_A + CORPUS_B + CORPUS_C
    (theirs, c_cdb), (ours, py_cdb) = both(source, tmp_path)
    assert theirs.returncode == ours.returncode == 0
    assert py_cdb == c_cdb
    assert dump(py_cdb, tmp_path) == dump(c_cdb, tmp_path)


def test_last_line_without_newline_and_empty_input(tmp_path):
    for source in (b"1.2.3.4:allow,X=\"1\"", b"", b"# only a comment\n"):
        (theirs, c_cdb), (ours, py_cdb) = both(source, tmp_path)
        assert theirs.returncode == ours.returncode == 0
        assert py_cdb == c_cdb


@pytest.mark.parametrize("line", REJECTED)
def test_rejected_like_the_original(line, tmp_path):
    (theirs, c_cdb), (ours, py_cdb) = both(b"1.1.1.1:allow\n" + line + b"\n", tmp_path)
    assert theirs.returncode == ours.returncode == 100
    assert c_cdb is None and py_cdb is None
    assert ours.stderr.startswith(b"tcprules: fatal: unable to parse line 2: ")


def test_fake_cidr_is_the_one_deliberate_difference(tmp_path):
    # The original stores 10.0.0.0/8 as a key that can never match; we
    # compile it to the prefix key the lookup really tries.
    (theirs, c_cdb), (ours, py_cdb) = both(b"10.0.0.0/8:deny\n", tmp_path)
    assert theirs.returncode == ours.returncode == 0
    assert dump(c_cdb, tmp_path) == b"+10,2:10.0.0.0/8->D\0\n\n"
    assert dump(py_cdb, tmp_path) == b"+3,2:10.->D\0\n\n"


def test_fake_cidr_line_is_named_in_a_warning(tmp_path):
    # A dead line under the C tcprules comes alive here: say so, naming the
    # line, and that recompiling with the C tcprules kills it again.
    source = b"# relays\n127.:allow\n192.168.0.0/16:allow,RELAYCLIENT=\"\"\n:allow\n"
    (theirs, c_cdb), (ours, py_cdb) = both(source, tmp_path)
    assert theirs.returncode == ours.returncode == 0
    assert theirs.stderr == b""
    lines = ours.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("tcprules: warning: line 3: 192.168.0.0/16 is an IPv4 CIDR "
                               "block, an extension: the C tcprules stores it as a literal "
                               "key that never matches")
    assert "recompiling the file with the C tcprules silently disables it" in lines[0]
    assert b"192.168.0.0/16" in dump(c_cdb, tmp_path)  # the dead literal key


@pytest.mark.parametrize("line", [b"1.2.3.4 :deny", b"1.2.3.4\t:deny", b"1.2.3. :deny",
                                  b"=mail.example.com :allow", b"joe@1.2.3.4 \t:deny",
                                  b"1.2.3.4  :allow,X=\"1\""])
def test_blank_before_the_colon_warns_and_stays_identical(line, tmp_path):
    (theirs, c_cdb), (ours, py_cdb) = both(b"5.6.7.8:allow\n" + line + b"\n", tmp_path)
    assert theirs.returncode == ours.returncode == 0
    assert py_cdb == c_cdb
    address = line.partition(b":")[0].decode().replace("\t", "\\t")
    assert ours.stderr.decode() == (f'tcprules: warning: line 2: address "{address}" '
                                    "ends with a blank, so the key never matches\n")


# Vanilla rule lines built from the pieces that matter to the parser.
ADDRESS_PARTS = st.sampled_from([b"1", b"2", b"10", b"255", b"300", b".", b"-", b"=",
                                 b"@", b"joe", b"a", b" ", b"\xff", b"#", b"04"])
QUOTES = st.sampled_from([b'"', b"'", b"/", b"#", b":", b",", b"=", b"\x00", b"\xe9"])
VALUE_BYTES = st.binary(max_size=6).map(lambda v: v.replace(b"\n", b""))


@st.composite
def rule_line(draw):
    address = b"".join(draw(st.lists(ADDRESS_PARTS, max_size=7)))
    instruction = draw(st.sampled_from([b"allow", b"deny", b"allo", b"denyy"]))
    items = []
    for _ in range(draw(st.integers(0, 3))):
        quote = draw(QUOTES)
        value = draw(VALUE_BYTES)
        if draw(st.booleans()):
            value = value.replace(quote, b"")
        name = draw(st.sampled_from([b"X", b"RELAYCLIENT", b"", b"A,B", b"N"]))
        items.append(b"," + name + b"=" + quote + value + quote)
    tail = draw(st.sampled_from([b"", b"", b"  ", b"\t", b"\r", b","]))
    colon = draw(st.sampled_from([b":", b":", b":", b""]))
    return address + colon + instruction + b"".join(items) + tail


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(rule_line(), min_size=1, max_size=8))
def test_property_identical_to_the_original(lines, tmp_path):
    source = b"\n".join(lines) + b"\n"
    (theirs, c_cdb), (ours, py_cdb) = both(source, tmp_path)
    for path in tmp_path.iterdir():
        path.unlink()
    assert ours.returncode == theirs.returncode, (source, ours.stderr)
    if theirs.returncode == 0:
        assert py_cdb == c_cdb, source
