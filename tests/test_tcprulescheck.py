"""Our tcprulescheck against Debian's: the same output for vanilla cdbs
(spec §2.6), and our CIDR and IPv6 keys understood."""

import subprocess

import pytest

from conftest import our_program, peer_program

RULES = (b"# tcp.smtp\n127.:allow,RELAYCLIENT=\"\"\n10.0.0.5:allow,RELAYCLIENT=\"\",DATABYTES=\"0\"\n"
         b"192.168.1.37-40:allow,RELAYCLIENT=\"\"\n10.2-3.:deny\n"
         b"=mx.example.com:allow,RBLSMTPD=\"\"\n=.spam.example:deny\n"
         b"joe@127.0.0.1:allow,SMTPUSER=\"joe\"\n@10.0.0.9:deny\n"
         b"5.6.7.8:allow,FIRST=\"1\"\n5.6.7.8:deny\n1.2.3.5:deny,WHY=\"listed\"\n"
         b"joe@=h.example.net:allow,WHO=\"joe at h\"\n=:allow,ANYNAME=\"1\"\n:allow\n")

CLIENTS = [
    {"TCPREMOTEIP": "127.0.0.1"},
    {"TCPREMOTEIP": "127.0.0.1", "TCPREMOTEINFO": "joe"},
    {"TCPREMOTEIP": "10.3.4.5"},
    {"TCPREMOTEIP": "8.8.8.8", "TCPREMOTEHOST": "a.b.spam.example"},
    {"TCPREMOTEIP": "8.8.8.8", "TCPREMOTEHOST": "mx.example.com"},
    {"TCPREMOTEIP": "8.8.8.8", "TCPREMOTEHOST": "h.example.net", "TCPREMOTEINFO": "joe"},
    {"TCPREMOTEIP": "8.8.8.8", "TCPREMOTEHOST": "other.example"},
    {"TCPREMOTEIP": "8.8.8.8"},
    {"TCPREMOTEIP": "10.0.0.9", "TCPREMOTEINFO": ""},
    {"TCPREMOTEIP": "192.168.1.39"},
    {"TCPREMOTEIP": "5.6.7.8"},
    {"TCPREMOTEIP": "1.2.3.5"},
    {},
    {"TCPREMOTEIP": "junk.text."},
]


def compile_rules(tmp_path, source, name="rules"):
    cdb = tmp_path / f"{name}.cdb"
    subprocess.run([our_program("tcprules"), str(cdb), str(tmp_path / f"{name}.tmp")],
                   input=source, check=True, capture_output=True, timeout=60)
    return cdb


def check(program, cdb, env, *extra):
    return subprocess.run([program, str(cdb), *extra], env=env, capture_output=True,
                          timeout=60)


@pytest.mark.parametrize("env", CLIENTS, ids=lambda e: ",".join(f"{k}={v}" for k, v in e.items()))
def test_same_output_as_the_original(env, tmp_path):
    cdb = compile_rules(tmp_path, RULES)
    theirs = check(peer_program("/usr/bin/tcprulescheck"), cdb, env)
    ours = check(our_program("tcprulescheck"), cdb, env)
    assert (ours.returncode, ours.stdout, ours.stderr) == \
        (theirs.returncode, theirs.stdout, theirs.stderr)


def test_transcripts_from_the_spec(tmp_path):
    cdb = compile_rules(tmp_path, RULES)
    ours = our_program("tcprulescheck")
    assert check(ours, cdb, {"TCPREMOTEIP": "127.0.0.1"}).stdout == \
        b"rule 127.:\nset environment variable RELAYCLIENT=\nallow connection\n"
    assert check(ours, cdb, {"TCPREMOTEIP": "10.3.4.5"}).stdout == \
        b"rule 10.3.:\ndeny connection\n"
    assert check(ours, cdb, {"TCPREMOTEIP": "5.6.7.8"}).stdout == \
        b"rule 5.6.7.8:\nset environment variable FIRST=1\nallow connection\n"
    assert check(ours, cdb, {"TCPREMOTEIP": "8.8.8.8"}).stdout == b"rule :\nallow connection\n"
    no_default = compile_rules(tmp_path, b"10.:deny\n", "nodefault")
    assert check(ours, no_default, {"TCPREMOTEIP": "11.1.1.1"}).stdout == \
        b"default:\nallow connection\n"


def test_odd_values_printed_like_the_original(tmp_path):
    # `+` items without `=` and unknown items: the original prints the first
    # and skips the second; hand-made cdb via tinycdb.
    data = b"+NOEQ\0Xjunk\0+A=b\0"
    cdb = tmp_path / "odd.cdb"
    subprocess.run([peer_program("cdb"), "-c", str(cdb)],
                   input=b"+7,%d:1.2.3.4->%s\n\n" % (len(data), data), check=True, timeout=30)
    env = {"TCPREMOTEIP": "1.2.3.4"}
    theirs = check(peer_program("/usr/bin/tcprulescheck"), cdb, env)
    ours = check(our_program("tcprulescheck"), cdb, env)
    assert ours.stdout == theirs.stdout == (b"rule 1.2.3.4:\nset environment variable NOEQ\n"
                                            b"set environment variable A=b\nallow connection\n")


def test_errors_like_the_original(tmp_path):
    for args in ([], [str(tmp_path / "missing.cdb")]):
        theirs = subprocess.run([peer_program("/usr/bin/tcprulescheck"), *args], env={},
                                capture_output=True, timeout=60)
        ours = subprocess.run([our_program("tcprulescheck"), *args], env={},
                              capture_output=True, timeout=60)
        assert (ours.returncode, ours.stdout, ours.stderr) == \
            (theirs.returncode, theirs.stdout, theirs.stderr)
    corrupt = tmp_path / "corrupt.cdb"
    corrupt.write_bytes(b"\xff" * 100)
    ours = check(our_program("tcprulescheck"), corrupt, {"TCPREMOTEIP": "1.2.3.4"})
    assert ours.returncode == 111
    assert ours.stderr.startswith(f"tcprulescheck: fatal: unable to read {corrupt}: ".encode())


def test_address_argument_replaces_the_environment(tmp_path):
    cdb = compile_rules(tmp_path, RULES)
    ours = check(our_program("tcprulescheck"), cdb, {"TCPREMOTEIP": "8.8.8.8"}, "10.2.0.1")
    assert ours.stdout == b"rule 10.2.:\ndeny connection\n"


CIDR_RULES = (b"10.0.0.0/9:deny,WHY=\"wide\"\n10.0.0.0/16:allow,WHO=\"sixteen\"\n"
              b"192.168.4.0/22:allow,WHO=\"lan\"\n172.16.5.4/31:deny\n"
              b"2001:db8::/32:allow,WHO=\"doc\"\n2001:db8:1::/48:deny\n"
              b"2001:db8:2::/47:allow,WHO=\"47\"\n::1:allow,WHO=\"v6 loopback\"\n"
              b"::ffff:198.51.100.0/120:deny\n:allow,WHO=\"default\"\n")


@pytest.mark.parametrize("ip, expected", [
    ("10.0.200.1", b"rule 10.0.:\nset environment variable WHO=sixteen\nallow connection\n"),
    ("10.127.0.1", b"rule 10.127.:\ndeny connection\n"),
    ("10.128.0.1", b"rule :\nset environment variable WHO=default\nallow connection\n"),
    ("192.168.7.255", b"rule 192.168.7.:\nset environment variable WHO=lan\nallow connection\n"),
    ("192.168.8.1", b"rule :\nset environment variable WHO=default\nallow connection\n"),
    ("172.16.5.5", b"rule 172.16.5.5:\ndeny connection\n"),
    ("172.16.5.6", b"rule :\nset environment variable WHO=default\nallow connection\n"),
    ("198.51.100.77", b"rule 198.51.100.:\ndeny connection\n"),
    ("::ffff:198.51.100.77", b"rule 198.51.100.:\ndeny connection\n"),
    ("2001:db8:5::1", b"rule 2001:0DB8::\nset environment variable WHO=doc\nallow connection\n"),
    ("2001:db8:1:ff::1", b"rule 2001:0DB8:0001::\ndeny connection\n"),
    ("2001:DB8:3::9", b"rule 2001:0DB8:0003::\nset environment variable WHO=47\n"
                      b"allow connection\n"),
    ("::1", b"rule 0000:0000:0000:0000:0000:0000:0000:0001:\n"
            b"set environment variable WHO=v6 loopback\nallow connection\n"),
])
def test_cidr_and_ipv6_rules(ip, expected, tmp_path):
    cdb = compile_rules(tmp_path, CIDR_RULES)
    assert check(our_program("tcprulescheck"), cdb, {}, ip).stdout == expected
    assert check(our_program("tcprulescheck"), cdb, {"TCPREMOTEIP": ip}).stdout == expected


@pytest.mark.parametrize("ip", ["10.0.200.1", "10.127.0.1", "192.168.7.255", "172.16.5.5",
                                "198.51.100.77", "8.8.8.8"])
def test_original_honours_our_ipv4_cidr_keys(ip, tmp_path):
    cdb = compile_rules(tmp_path, CIDR_RULES)
    env = {"TCPREMOTEIP": ip}
    theirs = check(peer_program("/usr/bin/tcprulescheck"), cdb, env)
    ours = check(our_program("tcprulescheck"), cdb, env)
    assert theirs.stdout == ours.stdout
