"""Never an open relay: nmap's 16 probes and the classic tricks, with and without RELAYCLIENT.

Server configuration as in the reference runs: rcpthosts = example.com and
mail.example.com (the server's own name, which nmap takes from the banner),
the client 127.0.0.1 (a local address, so `[127.0.0.1]` means this host).
"""

import subprocess

import pytest

from conftest import our_program, peer_program
from smtpd_servers import c_tcpserver, make_home, run_smtpd, smtpd_mode  # noqa: F401

D = b"nmap.scanme.org"
S = b"mail.example.com"
IP = b"[127.0.0.1]"

NMAP_CASES = [
    (b"<>", b"relaytest@" + D),
    (b"antispam@" + D, b"relaytest@" + D),
    (b"antispam@" + S, b"relaytest@" + D),
    (b"antispam@" + IP, b"relaytest@" + D),
    (b"antispam@" + IP, b"relaytest%" + D + b"@" + IP),
    (b"antispam@" + IP, b"relaytest%" + D + b"@" + S),
    (b"antispam@" + IP, b'"relaytest@' + D + b'"'),
    (b"antispam@" + IP, b'"relaytest%' + D + b'"'),
    (b"antispam@" + IP, b"relaytest@" + D + b"@" + IP),
    (b"antispam@" + IP, b'"relaytest@' + D + b'"@' + IP),
    (b"antispam@" + IP, b"relaytest@" + D + b"@" + S),
    (b"antispam@" + IP, b"@" + IP + b":relaytest@" + D),
    (b"antispam@" + IP, b"@" + S + b":relaytest@" + D),
    (b"antispam@" + IP, D + b"!relaytest"),
    (b"antispam@" + IP, D + b"!relaytest@" + IP),
    (b"antispam@" + IP, D + b"!relaytest@" + S),
]

# Full RCPT arguments of spec §3.4 that must be refused unless RELAYCLIENT is set.
TRICKS_REFUSED = [
    b'TO:<"relaytest%mailradar.com">', b"TO:<relaytest@other.test@>",
    b"TO:<user%example.com@other.test>", b"TO:<user@other.test%example.com>",
    b"TO:<user@other.test@example.com>", b"TO:<user@@example.com>",
    b"TO:<user\\@other.test@example.com>", b"TO:<@example.com>",
    b"TO:<@example.com:user@other.test>", b"TO:<user@example.com.>",
    b"TO:<user@evilexample.com>", b"TO:<user@example.com.other.test>",
    b"TO:<user@[192.0.2.1]>", b"TO:<user@[IPv6:::1]>", b"TO:<user@127.0.0.1>",
    b"TO:<user@other.test >", b"user@other.test", b"TO:<>", b"TO:<relaytest@other.test>",
    # case, trailing dots, non-ASCII (only ASCII letters fold, as qmail's case_lowerb)
    b"TO:<user@EXAMPLE.COM.>", b"TO:<user@example.com..>", b"TO:<user@.example.com>",
    b"TO:<user@sub.example.com>", "TO:<user@exämple.com>".encode(),
    "TO:<user@EXAMPLE.COM。>".encode(), b"TO:<user@xn--exmple-cua.com>",
    # literals and routes pointing out, the last `@` decides
    b"TO:<user@[127.0.0.1]@other.test>", b"TO:<user@[127.0.0.1].other.test>",
    b"TO:<@[127.0.0.1],@example.com:user@other.test>", b"TO:<user@other.test (x)>",
    b'TO:<"user@other.test">', b"TO:<user@other.test\\>",
    # postmaster only without a domain, and never with relay characters
    b"TO:<postmaster@other.test>", b"TO:<postmaster%other.test>", b"TO:<postmaster!other.test>",
    b"TO:<postmaster@other.test@example.com>", b"TO:<postmaster@>",
]
# Refused whoever the client is: control bytes can never reach the envelope.
TRICKS_ALWAYS_REFUSED = [b"TO:<victim@other.test\x00Tx@example.com>",
                         b"TO:<victim@other.test\rTx@example.com>"]
# Legitimate forms that must keep working for everyone.
TRICKS_ACCEPTED = [
    b"TO:<@example.com,@other.test:user@example.com>", b"TO:<USER@EXAMPLE.COM>",
    b"TO:<user@[127.0.0.1]>", b"TO: <u@example.com>", b"TO:user@example.com extra",
    b"TO:<postmaster>", b"TO:<Postmaster>", b"TO:<POSTMASTER>", b'TO:<"postmaster">',
    b"TO:<user@Mail.Example.COM>", b'TO:<"user"@example.com>', b"TO:<user@ex\\ample.com>",
    b"TO:<user@[0.0.0.0]>",        # netqmail: 0.0.0.0 is this host, so mail.example.com
]


def probe(home, pairs, mode="exec", **env):
    """One session like nmap's: RSET, MAIL, RCPT per pair; returns (MAIL, RCPT) codes.
    mode: smtpd-child over pipes ("exec") or forked by tcpserver --preload."""
    script = b"EHLO nmap.scanme.org\r\n"
    for sender, rcpt_arg in pairs:
        script += b"RSET\r\nMAIL FROM:<" + sender + b">\r\nRCPT " + rcpt_arg + b"\r\n"
    script += b"QUIT\r\n"
    # (a real session would end after 20 refusals: the error limit is not tested here)
    environment = {"QMAILHOME": str(home), "TCPREMOTEIP": "127.0.0.1",
                   "TCPLOCALIP": "127.0.0.1", "SMTPD_ERROR_LIMIT": "100000", **env}
    out = run_smtpd(mode, script, environment, timeout=30)[0]
    replies = out.split(b"\r\n")[5:-2]     # after greeting + EHLO, before 221
    assert len(replies) == 3 * len(pairs), out
    return [(replies[3 * i + 1][:3], replies[3 * i + 2][:3]) for i in range(len(pairs))]


def probe_in(mode, home, pairs, **env):
    return probe(home, pairs, mode, **env)


def nmap_pairs():
    return [(sender.strip(b"<>"), b"TO:<" + rcpt + b">") for sender, rcpt in NMAP_CASES]


def test_nmap_cases_refused_without_relayclient(tmp_path, smtpd_mode):
    codes = probe_in(smtpd_mode, make_home(tmp_path), nmap_pairs())
    assert [rcpt for _, rcpt in codes] == [b"553"] * 16
    assert [mail for mail, _ in codes] == [b"250"] * 16


def test_nmap_cases_accepted_with_relayclient(tmp_path, smtpd_mode):
    codes = probe_in(smtpd_mode, make_home(tmp_path), nmap_pairs(), RELAYCLIENT="")
    assert codes == [(b"250", b"250")] * 16


def tricks():
    return [(b"antispam@" + IP, arg) for arg in
            TRICKS_REFUSED + TRICKS_ALWAYS_REFUSED + TRICKS_ACCEPTED]


def test_classic_tricks_without_relayclient(tmp_path, smtpd_mode):
    codes = [rcpt for _, rcpt in probe_in(smtpd_mode, make_home(tmp_path), tricks())]
    n, m = len(TRICKS_REFUSED), len(TRICKS_ALWAYS_REFUSED)
    assert all(code[:1] == b"5" for code in codes[:n + m]), codes
    assert codes[n + m:] == [b"250"] * len(TRICKS_ACCEPTED)


def test_classic_tricks_with_relayclient(tmp_path, smtpd_mode):
    codes = [rcpt for _, rcpt in probe_in(smtpd_mode, make_home(tmp_path), tricks(), RELAYCLIENT="")]
    n, m = len(TRICKS_REFUSED), len(TRICKS_ALWAYS_REFUSED)
    assert codes[:n] == [b"250"] * n
    assert codes[n:n + m] == [b"555"] * m
    assert codes[n + m:] == [b"250"] * len(TRICKS_ACCEPTED)


def test_sender_injection_refused(tmp_path, smtpd_mode):
    codes = probe_in(smtpd_mode, make_home(tmp_path), [(b"a@b\x00Tvictim@other.test", b"TO:<u@example.com>")],
                  RELAYCLIENT="")
    assert codes == [(b"555", b"503")]


def test_missing_rcpthosts_is_not_an_open_relay(tmp_path, smtpd_mode):
    codes = probe_in(smtpd_mode, make_home(tmp_path, rcpthosts=None), nmap_pairs())
    assert [rcpt for _, rcpt in codes] == [b"553"] * 16


def run_nmap(port):
    nmap = peer_program("/usr/bin/nmap")
    result = subprocess.run(
        [nmap, "-n", "-Pn", "-sT", "-p", str(port), "--script", "+smtp-open-relay",
         "--script-args", "smtp-open-relay.domain=nmap.scanme.org,smtp-open-relay.ip=127.0.0.1",
         "127.0.0.1"], capture_output=True, timeout=100, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.timeout(150)
@pytest.mark.parametrize("server", ["c", "ours", "ours-preload"])
def test_nmap_finds_no_relay_under_tcpserver_x(tmp_path, server):
    tcpserver = our_program("tcpserver") if server == "ours" else None
    preload = server == "ours-preload"
    home = make_home(tmp_path)
    with c_tcpserver(tmp_path, home, ":allow\n", tcpserver=tcpserver, preload=preload) as port:
        output = run_nmap(port)
    assert "smtp-open-relay" in output
    assert "Server doesn't seem to be an open relay, all tests failed" in output
    # The same scan against a client granted RELAYCLIENT proves the probes really ran.
    with c_tcpserver(tmp_path, home, '127.0.0.1:allow,RELAYCLIENT=""\n:allow\n',
                     tcpserver=tcpserver, preload=preload) as port:
        output = run_nmap(port)
    assert "Server is an open relay (16/16 tests)" in output


@pytest.mark.timeout(60)
@pytest.mark.parametrize("preload", [False, True], ids=["c-tcpserver", "ours-preload"])
def test_swaks_delivers_to_a_hosted_domain_into_the_spool(tmp_path, preload):
    swaks = peer_program("/usr/bin/swaks")
    home = make_home(tmp_path)
    with c_tcpserver(tmp_path, home, ":allow\n", preload=preload) as port:
        server = f"127.0.0.1:{port}"
        ok = subprocess.run([swaks, "--server", server, "-f", "sender@client.test",
                             "-t", "user@example.com", "--header", "Subject: swaks test",
                             "--body", "hello from swaks", "--pipeline"],
                            capture_output=True, timeout=30)
        refused = subprocess.run([swaks, "--server", server, "-f", "antispam@client.test",
                                  "-t", "relaytest@other.test", "--quit-after", "RCPT"],
                                 capture_output=True, timeout=30)
    assert ok.returncode == 0, ok.stdout.decode()
    assert refused.returncode == 24
    assert b"553 sorry, that domain isn't in my list of allowed rcpthosts" in refused.stdout
    [message] = list((home / "spool" / "new").iterdir())
    listed = subprocess.run([our_program("smtpd-spool"), str(home / "spool"), "list"],
                            capture_output=True, check=True).stdout
    assert b"<sender@client.test> <user@example.com>" in listed
    shown = subprocess.run([our_program("smtpd-spool"), str(home / "spool"), "show", message.name],
                           capture_output=True, check=True).stdout
    assert b"Subject: swaks test\n" in shown and b"hello from swaks\n" in shown
