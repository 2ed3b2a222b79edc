"""STARTTLS, SMTP AUTH, the submission port and the tarpit, end to end:
smtpd-child under the C tcpserver and ours, with swaks and smtplib as clients,
a certificate made by openssl at test time and a shell-script checkpassword."""

import os
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from conftest import our_program, peer_program
from smtpd_servers import Client, c_tcpserver, make_home
from smtpd_child.smtp import replies

# A checkpassword program as qmail's patches call it: user\0password\0stamp\0 on
# fd 3; it records user and stamp (never the password) and execs its arguments.
CHECKPASSWORD = r"""#!/bin/sh
{ read -r user; read -r pass; read -r stamp; } <<END
$(tr '\0' '\n' <&3)
END
printf '%s %s\n' "$user" "$stamp" >> "$0.calls"
[ -n "$CHECK_SLEEP" ] && sleep "$CHECK_SLEEP"
[ "$user" = alice ] && [ "$pass" = "right pass" ] || exit 1
exec "$@"
"""
USER, PASSWORD, WRONG = "alice", "right pass", "wrong pass"
KINDS = pytest.mark.parametrize("kind", ["c", "ours", "ours-preload"],
                                ids=["c-tcpserver", "our-tcpserver", "our-tcpserver-preload"])


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """servercert.pem text: a fresh self-signed certificate and its key."""
    folder = tmp_path_factory.mktemp("cert")
    subprocess.run([peer_program("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-days", "2", "-subj", "/CN=mail.example.com",
                    "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem")],
                   check=True, capture_output=True, timeout=60)
    return (folder / "cert.pem").read_text() + (folder / "key.pem").read_text()


def tls_home(tmp_path, certificate, **controls):
    home = make_home(tmp_path, **controls)
    (home / "control" / "servercert.pem").write_text(certificate)
    checker = tmp_path / "checkpassword"
    checker.write_text(CHECKPASSWORD)
    checker.chmod(0o755)
    return home, [str(checker), "/bin/true"]


def server(kind, tmp_path, home, checker, rules=":allow\n", stderr=subprocess.DEVNULL):
    return c_tcpserver(tmp_path, home, rules, child_args=checker, stderr=stderr,
                       tcpserver=None if kind == "c" else our_program("tcpserver"),
                       preload=kind == "ours-preload")


def client_context():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def spooled(home):
    return [m.read_bytes() for m in sorted((home / "spool" / "new").iterdir())]


@pytest.mark.timeout(60)
@KINDS
def test_smtplib_starttls_login_relays_only_after_a_good_password(tmp_path, certificate, kind):
    home, checker = tls_home(tmp_path, certificate)
    with server(kind, tmp_path, home, checker) as port:
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as smtp:
            smtp.ehlo("client.test")
            assert smtp.has_extn("starttls") and not smtp.has_extn("auth")
            assert smtp.docmd("AUTH", "PLAIN") == (538, replies.AUTH_NEEDS_TLS[4:-2])
            smtp.mail("a@client.test")
            assert smtp.rcpt("x@other.test")[0] == 553            # before AUTH: no relay
            smtp.rset()
            smtp.starttls(context=client_context())
            smtp.ehlo("client.test")
            assert smtp.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
            started = time.monotonic()
            with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
                smtp.login(USER, WRONG)
            assert refused.value.smtp_code == 535
            assert time.monotonic() - started >= 1.0               # each failure waits
            smtp.mail("a@client.test")
            assert smtp.rcpt("x@other.test")[0] == 553            # wrong password: no relay
            smtp.rset()
            assert smtp.login(USER, PASSWORD)[0] == 235
            assert smtp.sendmail("a@client.test", ["x@other.test"], b"Subject: t\r\n\r\nhi\r\n") == {}
    [message] = spooled(home)
    assert b"Tx@other.test\0" in message
    assert b"(HELO client.test) (alice@127.0.0.1)\n  by 0 with ESMTPSA; " in message
    calls = (tmp_path / "checkpassword.calls").read_text().split("\n")
    assert calls[0].split(" ")[0] == USER and calls[0].split(" ")[1].isdigit()


@pytest.mark.timeout(90)
@KINDS
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_swaks_tls_auth(tmp_path, certificate, kind, mechanism):
    swaks = peer_program("swaks")
    home, checker = tls_home(tmp_path, certificate)
    log = tmp_path / "stderr"
    with open(log, "wb") as stderr, server(kind, tmp_path, home, checker, stderr=stderr) as port:
        def run(*auth):
            return subprocess.run(
                [swaks, "--server", f"127.0.0.1:{port}", "--tls", *auth, "--from",
                 "a@client.test", "--to", "x@other.test", "--helo", "client.test"],
                capture_output=True, timeout=60)
        refused = run()
        assert refused.returncode == 24, refused.stdout      # no recipient accepted
        bad = run("--auth", mechanism, "--auth-user", USER, "--auth-password", WRONG)
        assert bad.returncode == 28, bad.stdout               # authentication failed
        assert b"<~* 535 authentication failed" in bad.stdout
        good = run("--auth", mechanism, "--auth-user", USER, "--auth-password", PASSWORD)
        assert good.returncode == 0, good.stdout
        assert b"<~  235 ok, go ahead" in good.stdout or b"<~* 235" in good.stdout
    [message] = spooled(home)
    assert b"with ESMTPSA; " in message and b"(alice@127.0.0.1)" in message
    text = log.read_bytes()
    assert b"smtpd-child: auth: alice from 127.0.0.1 refused" in text
    assert b"smtpd-child: auth: alice from 127.0.0.1 accepted" in text
    assert WRONG.encode() not in text and PASSWORD.encode() not in text


@pytest.mark.timeout(60)
@KINDS
def test_command_pipelined_behind_starttls_is_never_answered(tmp_path, certificate, kind):
    home, checker = tls_home(tmp_path, certificate)
    log = tmp_path / "stderr"
    with open(log, "wb") as stderr, server(kind, tmp_path, home, checker, stderr=stderr) as port:
        client = Client(port)
        try:
            client.reply()
            client.command(b"EHLO client.test")
            client.sock.sendall(b"STARTTLS\r\nMAIL FROM:<a@b.test>\r\nNOOP\r\n")
            assert client.reply() == replies.READY_FOR_TLS
            tls = client_context().wrap_socket(client.sock)
            stream = tls.makefile("rb")
            tls.sendall(b"RCPT TO:<u@example.com>\r\nEHLO again.test\r\n")
            # The injected MAIL was dropped (RCPT needs MAIL first); NOOP never answered.
            assert stream.readline() == replies.MAIL_FIRST
            assert stream.readline() == b"250-mail.example.com\r\n"
            ehlo = b"".join(stream.readline() for _ in range(4))
            assert b"STARTTLS" not in ehlo and b"250-AUTH PLAIN LOGIN\r\n" in ehlo
            tls.sendall(b"QUIT\r\n")
            assert stream.readline() == b"221 mail.example.com\r\n"
        finally:
            client.close()
        # Plain text sent after the 220, before the handshake: no reply, only a log line.
        client = Client(port)
        try:
            client.reply()
            client.sock.sendall(b"STARTTLS\r\n")
            assert client.reply() == replies.READY_FOR_TLS
            client.sock.sendall(b"NOOP\r\n")
            try:
                rest = client.sock.recv(4096)
            except ConnectionResetError:
                rest = b""
            assert b"250" not in rest      # at most a TLS alert, then the close
        finally:
            client.close()
    deadline = time.monotonic() + 10
    while b"TLS handshake failed" not in log.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert b"smtpd-child: TLS handshake failed: " in log.read_bytes()


@pytest.mark.timeout(60)
@KINDS
def test_submission_port_refuses_mail_before_auth(tmp_path, certificate, kind):
    home, checker = tls_home(tmp_path, certificate)
    with server(kind, tmp_path, home, checker, rules=':allow,SMTPAUTH="!"\n') as port:
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as smtp:
            smtp.ehlo("client.test")
            assert smtp.mail("a@client.test") == (530, replies.AUTH_REQUIRED[4:-2])
            smtp.starttls(context=client_context())
            smtp.ehlo("client.test")
            assert smtp.mail("a@client.test") == (530, replies.AUTH_REQUIRED[4:-2])
            smtp.login(USER, PASSWORD)
            assert smtp.mail("a@client.test")[0] == 250
            assert smtp.rcpt("x@other.test")[0] == 250


@pytest.mark.timeout(60)
@KINDS
def test_tarpit_delays_the_third_and_fourth_rcpt(tmp_path, certificate, kind):
    home, checker = tls_home(tmp_path, certificate)
    with server(kind, tmp_path, home, checker,
                rules=':allow,TARPITCOUNT="2",TARPITDELAY="1"\n') as port:
        client = Client(port)
        try:
            client.reply()
            assert client.command(b"MAIL FROM:<a@b.test>") == replies.OK
            waited = []
            for n in range(4):
                started = time.monotonic()
                assert client.command(b"RCPT TO:<u%d@example.com>" % n) == replies.OK
                waited.append(time.monotonic() - started)
            assert waited[2] >= 1.0 and waited[3] >= 1.0
        finally:
            client.close()


@pytest.mark.timeout(60)
def test_bad_certificate_is_logged_and_the_session_still_works(tmp_path, certificate):
    for problem, expected in (("garbage", b"unable to read"), ("directory", b"Is a directory")):
        folder = tmp_path / problem
        home, checker = tls_home(folder, certificate)
        cert = home / "control" / "servercert.pem"
        cert.unlink()
        if problem == "garbage":
            cert.write_text("not a certificate\n")
        else:
            cert.mkdir()
        log = folder / "stderr"
        with open(log, "wb") as stderr, c_tcpserver(folder, home, ":allow\n", child_args=checker,
                                                     stderr=stderr) as port:
            client = Client(port)
            try:
                client.reply()
                assert b"STARTTLS" not in client.command(b"EHLO client.test")
                assert client.command(b"STARTTLS") == replies.UNIMPLEMENTED
                assert client.command(b"MAIL FROM:<a@b.test>") == replies.OK
                assert client.command(b"RCPT TO:<u@example.com>") == replies.OK
                assert client.command(b"QUIT") == b"221 mail.example.com\r\n"
            finally:
                client.close()
        text = log.read_bytes()
        assert text.count(b"STARTTLS not offered") == 1, text
        assert str(cert).encode() in text and expected in text


def run_piped(home, client, args=(), **env):
    environment = {"PATH": "/usr/bin:/bin", "QMAILHOME": str(home), "TCPREMOTEIP": "127.0.0.1",
                   **env}
    return subprocess.run([our_program("smtpd-child"), *args], input=client,
                          capture_output=True, env=environment, timeout=30)


@pytest.mark.timeout(60)
def test_over_pipes_no_starttls_and_auth_only_with_forcetls_0(tmp_path, certificate):
    home, checker = tls_home(tmp_path, certificate)
    session = b"EHLO c\r\nAUTH PLAIN AGFsaWNlAHJpZ2h0IHBhc3M=\r\nQUIT\r\n"
    result = run_piped(home, session, checker)
    assert b"STARTTLS" not in result.stdout and b"AUTH" not in result.stdout
    assert replies.AUTH_NEEDS_TLS in result.stdout and result.stderr == b""
    result = run_piped(home, session + b"MAIL FROM:<a@b>\r\n", checker, FORCETLS="0")
    assert b"250-AUTH PLAIN LOGIN\r\n" in result.stdout
    assert result.stdout.endswith(replies.AUTH_OK + b"221 mail.example.com\r\n")
    # Without a checkpassword command, AUTH does not exist, as before.
    result = run_piped(home, session, FORCETLS="0")
    assert b"AUTH" not in result.stdout.split(b"\r\n502")[0]
    assert replies.UNIMPLEMENTED in result.stdout
    result = run_piped(home, session, checker[:1])
    assert result.returncode == 100 and b"usage: smtpd-child" in result.stderr


@pytest.mark.timeout(60)
def test_a_slow_checkpassword_is_bounded_by_the_session_deadline(tmp_path, certificate):
    home, checker = tls_home(tmp_path, certificate)
    with c_tcpserver(tmp_path, home, ':allow,FORCETLS="0",SMTPD_DEADLINE="2"\n',
                     child_args=checker, extra_env={"CHECK_SLEEP": "30"},
                     tcpserver=our_program("tcpserver")) as port:
        client = Client(port)
        try:
            client.reply()
            started = time.monotonic()
            reply = client.command(b"AUTH PLAIN AGFsaWNlAHJpZ2h0IHBhc3M=")
            assert reply == replies.SESSION_DEADLINE
            assert time.monotonic() - started < 25
        finally:
            client.close()


# A CRAM-MD5 checkpassword: the "password" field is the client's digest, the
# stamp the challenge; the expected digest is HMAC-MD5(password, challenge).
CRAM_CHECKPASSWORD = r"""#!/bin/sh
{ read -r user; read -r digest; read -r challenge; } <<END
$(tr '\0' '\n' <&3)
END
printf '%s %s\n' "$user" "$challenge" >> "$0.calls"
expected=$(printf '%s' "$challenge" | openssl dgst -md5 -hmac "right pass" | sed 's/^.*= //')
[ "$user" = alice ] && [ "$digest" = "$expected" ] || exit 1
exec "$@"
"""


@pytest.mark.timeout(60)
def test_cram_md5_only_when_turned_on(tmp_path, certificate):
    peer_program("openssl")
    home, checker = tls_home(tmp_path, certificate)
    (tmp_path / "checkpassword").write_text(CRAM_CHECKPASSWORD)
    with c_tcpserver(tmp_path, home, ':allow,SMTPAUTH="+cram"\n', child_args=checker,
                     tcpserver=our_program("tcpserver")) as port:
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as smtp:
            smtp.starttls(context=client_context())
            smtp.ehlo("client.test")
            assert smtp.esmtp_features["auth"].split() == ["PLAIN", "LOGIN", "CRAM-MD5"]
            smtp.user, smtp.password = USER, PASSWORD
            assert smtp.auth("CRAM-MD5", smtp.auth_cram_md5)[0] == 235
            assert smtp.sendmail("a@client.test", ["x@other.test"], b"\r\nhi\r\n") == {}
    user, challenge = (tmp_path / "checkpassword.calls").read_text().split()
    assert user == USER and challenge.startswith("<") and challenge.endswith("@mail.example.com>")


@pytest.mark.timeout(60)
def test_client_gone_during_tarpit_frees_the_slot(tmp_path, certificate):
    """With one connection at a time (-c 1), the next client is served as soon as
    a tarpitted client hangs up, not after the 30 s delays it asked for."""
    home, checker = tls_home(tmp_path, certificate)
    env = {"PATH": "/usr/bin:/bin", "QMAILHOME": str(home), "TARPITCOUNT": "1",
           "TARPITDELAY": "30"}
    proc = subprocess.Popen([our_program("tcpserver"), "-1", "-HRl0", "-c", "1", "127.0.0.1",
                             "0", our_program("smtpd-child")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        port = int(proc.stdout.readline())
        first = Client(port)
        first.reply()
        first.sock.sendall(b"MAIL FROM:<a@b.test>\r\n" + b"RCPT TO:<u@example.com>\r\n" * 3)
        assert first.reply() == replies.OK and first.reply() == replies.OK
        first.close()               # while the second RCPT's reply is being delayed
        second = Client(port)
        second.sock.settimeout(20)
        assert second.reply() == b"220 mail.example.com ESMTP\r\n"
        second.close()
    finally:
        proc.kill()
        proc.wait()


def test_tls_context_refinements(tmp_path, certificate):
    from smtpd_child.session import tls
    cert = tmp_path / "servercert.pem"
    cert.write_text(certificate)
    context, notes = tls.server_context(str(cert))
    assert notes == [] and context.minimum_version == ssl.TLSVersion.TLSv1_2
    context, notes = tls.server_context(str(cert), protocols=b"TLSv1.3\nSSLv3\n")
    assert context.minimum_version == context.maximum_version == ssl.TLSVersion.TLSv1_3
    assert len(notes) == 1 and "SSLv3" in notes[0]
    context, notes = tls.server_context(str(cert), protocols=b"TLSv1\n")
    assert context is None and "allows no version" in notes[-1]
    context, notes = tls.server_context(str(cert), ciphers=b"NO-SUCH-CIPHER")
    assert context is None and "control/tlsciphers" in notes[0]
    cert.write_text(certificate.split("-----BEGIN PRIVATE KEY-----")[0])   # no key
    context, notes = tls.server_context(str(cert))
    assert context is None and str(cert) in notes[0]


@pytest.mark.timeout(60)
def test_queue_program_learns_the_authenticated_user(tmp_path, certificate):
    home, checker = tls_home(tmp_path, certificate)
    queue = tmp_path / "queue"
    queue.write_text('#!/bin/sh\ncat >/dev/null\nprintf "%s|%s" "$SMTPAUTHUSER" "$SMTP_AUTH_USER"'
                     ' > "$0.user"\ncat <&1 >/dev/null\n')
    queue.chmod(0o755)
    session = (b"EHLO c\r\nAUTH LOGIN YWxpY2U=\r\ncmlnaHQgcGFzcw==\r\nMAIL FROM:<a@b.test>\r\n"
               b"RCPT TO:<x@other.test>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n")
    result = run_piped(home, session, checker, FORCETLS="0", QMAILQUEUE=str(queue))
    assert replies.AUTH_OK in result.stdout and b"\r\n250 ok " in result.stdout, result.stdout
    assert (tmp_path / "queue.user").read_text() == "alice|alice"


@pytest.mark.timeout(60)
def test_socket_is_blocking_again_after_a_tls_session(tmp_path, certificate):
    """fd 0/1's open file description may be shared (inetd, a parent): after
    STARTTLS made it non-blocking, the session gives it back blocking."""
    home, checker = tls_home(tmp_path, certificate)
    ours, theirs = socket.socketpair()
    env = {"PATH": "/usr/bin:/bin", "QMAILHOME": str(home)}
    child = subprocess.Popen([our_program("smtpd-child")], stdin=theirs, stdout=theirs, env=env)
    try:
        stream = ours.makefile("rb")
        stream.readline()
        ours.sendall(b"STARTTLS\r\n")
        assert stream.readline() == replies.READY_FOR_TLS
        tls = client_context().wrap_socket(ours)
        tls.sendall(b"QUIT\r\n")
        assert tls.recv(100) == b"221 mail.example.com\r\n"
        assert child.wait(timeout=20) == 0
        assert os.get_blocking(theirs.fileno())     # shares the child's file description
    finally:
        child.kill()
        child.wait()
        theirs.close()
        ours.close()


@pytest.mark.timeout(90)
@KINDS
def test_with_smtpd_checkpassword(tmp_path, certificate, kind):
    """The two halves together: smtpd-child smtpd-checkpassword true, the
    password file at its default place, $QMAILHOME/control/smtppasswd."""
    home, _ = tls_home(tmp_path, certificate)
    passwords = home / "control" / "smtppasswd"
    subprocess.run([our_program("smtpd-checkpassword"), "-f", str(passwords), "add", USER],
                   input=(PASSWORD + "\n").encode(), check=True, capture_output=True, timeout=30)
    checker = [our_program("smtpd-checkpassword"), "/bin/true"]
    with server(kind, tmp_path, home, checker, rules=':allow,SMTPAUTH="!"\n') as port:
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as smtp:
            smtp.starttls(context=client_context())
            smtp.ehlo("client.test")
            with pytest.raises(smtplib.SMTPAuthenticationError):
                smtp.login(USER, WRONG)
            assert smtp.mail("a@client.test")[0] == 530
            assert smtp.login(USER, PASSWORD)[0] == 235
            assert smtp.sendmail("a@client.test", ["x@other.test"], b"\r\nhi\r\n") == {}
    [message] = spooled(home)
    assert b"(alice@127.0.0.1)\n  by 0 with ESMTPSA; " in message
