"""Reverse DNS (-h), paranoid mode (-p) and TCPLOCALHOST lookups, side by
side with the C tcpserver; both use $DNSCACHEIP=127.0.0.1, a fake server."""

import pytest

from conftest import our_program, peer_program
from fakedns import A, AAAA, NXDOMAIN, PTR, SERVFAIL, FakeDNS
from tcpserver_harness import Server, normalise_log, parse_env, write_rules_c
from tcpserver_py.net.dnswire import reverse_domain
from tcpserver_py.net.resolver import Resolver, SoftDnsError

RECORDS = {
    ("1.0.0.127.in-addr.arpa", PTR): ["Client.Example.ORG"],
    ("client.example.org", A): ["127.0.0.1"],
    ("2.0.0.127.in-addr.arpa", PTR): ["liar.example.org"],
    ("liar.example.org", A): ["127.0.0.9"],
    ("3.0.0.127.in-addr.arpa", PTR): NXDOMAIN,
    ("5.0.0.127.in-addr.arpa", PTR): SERVFAIL,
    ("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa", PTR):
        ["v6client.example.org"],
}
RULES = ('=client.example.org:allow,WHO="host"\n'
         '=.example.org:allow,WHO="domain"\n'
         ':allow,WHO="default"\n')
ENV = {"PATH": "/usr/bin:/bin", "DNSCACHEIP": "127.0.0.1"}


@pytest.fixture
def dns():
    server = FakeDNS(RECORDS)
    yield server
    server.close()


@pytest.mark.parametrize("paranoid", ["-P", "-p"])
@pytest.mark.parametrize("local", [[], ["-l", "0"]], ids=["local-lookup", "l0"])
def test_names_match_c_tcpserver(tmp_path, dns, paranoid, local):
    cdb = write_rules_c(tmp_path, RULES)
    args = ["-v", "-1", "-R", paranoid, *local, "-x", cdb, "127.0.0.1", "0", "/usr/bin/env"]
    envs, logs = {}, {}
    for name, exe in (("c", peer_program("/usr/bin/tcpserver")),
                      ("ours", our_program("tcpserver"))):
        server = Server(exe, args, tmp_path / f"{name}.log", env=ENV)
        try:
            envs[name] = {src: parse_env(server.talk(source=src))
                          for src in ("127.0.0.1", "127.0.0.2", "127.0.0.3")}
            server.wait_served(3)
            logs[name] = normalise_log(server.log())
        finally:
            server.stop()
    strip = lambda e: {k: v for k, v in e.items() if not k.endswith("PORT")}
    for src in envs["c"]:
        assert strip(envs["ours"][src]) == strip(envs["c"][src]), src
    assert logs["ours"] == logs["c"]
    ours = envs["ours"]
    assert ours["127.0.0.1"]["TCPREMOTEHOST"] == "client.example.org"    # lower-cased
    assert ours["127.0.0.1"]["WHO"] == "host"
    if paranoid == "-p":
        assert "TCPREMOTEHOST" not in ours["127.0.0.2"] and ours["127.0.0.2"]["WHO"] == "default"
    else:
        assert ours["127.0.0.2"]["TCPREMOTEHOST"] == "liar.example.org"
        assert ours["127.0.0.2"]["WHO"] == "domain"
    assert "TCPREMOTEHOST" not in ours["127.0.0.3"]
    assert ours["127.0.0.3"]["TCPLOCALHOST"] == ("0" if local else "client.example.org")


def test_ipv6_reverse_name(tmp_path, dns):
    import socket
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1")
    server = Server(our_program("tcpserver"), ["-1", "-R", "-l0", "-p", "::1", "0",
                                               "/usr/bin/env"], tmp_path / "s.log", env=ENV)
    try:
        env = parse_env(server.talk(source="::1", host="::1"))
    finally:
        server.stop()
    # the PTR exists but no AAAA confirms it: -p discards the name
    assert "TCPREMOTEHOST" not in env
    assert ("v6client.example.org", AAAA) in dns.queries


def test_resolver_soft_and_hard_failures(dns):
    quick = Resolver(["127.0.0.1"], timeouts=(0.5,))
    assert quick.name("127.0.0.1") == b"client.example.org"
    assert quick.name("127.0.0.3") is None                       # NXDOMAIN
    with pytest.raises(SoftDnsError):
        quick.name("127.0.0.5")                                  # SERVFAIL
    with pytest.raises(SoftDnsError):
        Resolver(["127.0.0.7"], timeouts=(0.2,)).name("127.0.0.1")   # nobody there
    assert quick.addresses(b"client.example.org", False) == ["127.0.0.1"]


def test_reverse_domain():
    assert reverse_domain("10.1.2.3") == b"\x013\x012\x011\x0210\x07in-addr\x04arpa\x00"
    assert reverse_domain("::1").startswith(b"\x011\x010\x010")
