"""smtpd-child under the real C tcpserver, with RELAYCLIENT granted by a tcprules cdb.

The rules (compiled by the C tcprules) give RELAYCLIENT="" to 127.0.0.2 only;
clients connect from 127.0.0.1 or 127.0.0.2 by binding their source address.
"""

import importlib.util
import os
import pwd
import socket
import subprocess
import time

import pytest

from conftest import our_program, peer_program
from smtpd_servers import Client, c_tcpserver, make_home

RULES = '127.0.0.2:allow,RELAYCLIENT=""\n:allow\n'
NOGATEWAY = b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n"


def session(port, source, recipient):
    client = Client(port, source)
    try:
        greeting = client.reply()
        assert client.command(b"HELO client.test") == b"250 mail.example.com\r\n"
        assert client.command(b"MAIL FROM:<a@client.test>") == b"250 ok\r\n"
        rcpt = client.command(b"RCPT TO:<" + recipient + b">")
        data = None
        if rcpt == b"250 ok\r\n":
            assert client.command(b"DATA") == b"354 go ahead\r\n"
            data = client.command(b"Subject: interop\r\n\r\nhi\r\n.")
        assert client.command(b"QUIT") == b"221 mail.example.com\r\n"
        return greeting, rcpt, data
    finally:
        client.close()


def server_program(kind):
    return None if kind == "c" else our_program("tcpserver")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["c", "ours", "ours-preload"],
                         ids=["c-tcpserver", "our-tcpserver", "our-tcpserver-preload"])
def test_relayclient_only_for_the_listed_address(tmp_path, kind):
    home = make_home(tmp_path)
    with c_tcpserver(tmp_path, home, RULES, tcpserver=server_program(kind),
                     preload=kind == "ours-preload") as port:
        greeting, rcpt, _ = session(port, "127.0.0.1", b"relaytest@other.test")
        assert greeting == b"220 mail.example.com ESMTP\r\n"
        assert rcpt == NOGATEWAY
        _, rcpt, data = session(port, "127.0.0.2", b"relaytest@other.test")
        assert rcpt == b"250 ok\r\n" and data.startswith(b"250 ok ")
        _, rcpt, data = session(port, "127.0.0.1", b"user@example.com")
        assert rcpt == b"250 ok\r\n" and data.startswith(b"250 ok ")
    messages = sorted((home / "spool" / "new").iterdir())
    assert len(messages) == 2
    texts = [m.read_bytes() for m in messages]
    relayed = [t for t in texts if b"Trelaytest@other.test\0" in t]
    local = [t for t in texts if b"Tuser@example.com\0" in t]
    assert len(relayed) == 1 and len(local) == 1
    # The environment set by tcpserver reaches the Received line.
    assert b"Received: from unknown (HELO client.test) (127.0.0.2)\n  by 0 with SMTP; " in relayed[0]
    assert b"(127.0.0.1)\n  by 0 with SMTP; " in local[0]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("preload", [False, True], ids=["c-tcpserver", "our-tcpserver-preload"])
def test_pipelined_session_over_tcp(tmp_path, preload):
    home = make_home(tmp_path)
    with c_tcpserver(tmp_path, home, RULES, preload=preload) as port:
        client = Client(port)
        try:
            client.reply()
            client.sock.sendall(b"EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.com>\r\n"
                                b"RCPT TO:<u@other.test>\r\nDATA\r\n")
            assert client.reply().endswith(b"250 SIZE 0\r\n")
            assert [client.reply() for _ in range(4)] == [
                b"250 ok\r\n", b"250 ok\r\n", NOGATEWAY, b"354 go ahead\r\n"]
            client.sock.sendall(b"x\r\n.\r\nQUIT\r\n")
            assert client.reply().startswith(b"250 ok ")
            assert client.reply() == b"221 mail.example.com\r\n"
        finally:
            client.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


XINETD_CONF = """defaults
{{
}}
service smtp-test
{{
    type        = UNLISTED
    socket_type = stream
    protocol    = tcp
    wait        = no
    user        = {user}
    bind        = 127.0.0.1
    port        = {port}
    server      = {tcp_env}
    server_args = {smtpd}
    env         = QMAILHOME={home} PATH=/usr/bin:/bin
    cps         = 1000 1
    instances   = UNLIMITED
}}
"""


@pytest.mark.timeout(60)
def test_under_xinetd_through_tcp_env(tmp_path):
    xinetd = peer_program("/usr/sbin/xinetd")
    if importlib.util.find_spec("tcpserver_py.tcpenv") is None:
        pytest.skip("tcp-env (tcpserver_py.tcpenv) is not built yet")
    home = make_home(tmp_path)
    port = free_port()
    conf = tmp_path / "xinetd.conf"
    conf.write_text(XINETD_CONF.format(user=pwd.getpwuid(os.getuid()).pw_name,
                                       port=port, tcp_env=our_program("tcp-env"),
                                       smtpd=our_program("smtpd-child"), home=home))
    proc = subprocess.Popen([xinetd, "-dontfork", "-f", str(conf), "-pidfile",
                             str(tmp_path / "xinetd.pid")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        greeting, rcpt, _ = session(port, "127.0.0.1", b"relaytest@other.test")
        assert greeting == b"220 mail.example.com ESMTP\r\n" and rcpt == NOGATEWAY
        _, rcpt, data = session(port, "127.0.0.1", b"user@example.com")
        assert data.startswith(b"250 ok ")
    finally:
        proc.kill()
        proc.wait()
    [message] = list((home / "spool" / "new").iterdir())
    assert b"(127.0.0.1)\n  by " in message.read_bytes()    # tcp-env set TCPREMOTEIP
