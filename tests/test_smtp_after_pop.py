"""SMTP-after-POP end to end: Debian's dovecot as the POP3 server, its
post-login script calling relay-ctrl-allow; tcpserver running
`relay-ctrl-check smtpd-child`.  Clients bind 127.0.0.2 or 127.0.0.3, so the
two addresses are two customers: the one that logged in over POP3 may relay
for the next minutes, the other may not.
"""

import contextlib
import functools
import os
import pathlib
import poplib
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import our_program, peer_program
from smtpd_servers import Client, make_home

NOGATEWAY = b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n"

DOVECOT_CONF = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_login_user = {user}
default_internal_user = {user}
first_valid_uid = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {root}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
mail_location = maildir:~/Maildir
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {port}
  }}
  chroot =
}}
service pop3 {{
  executable = pop3 postlogin
}}
service postlogin {{
  executable = script-login {root}/postlogin
  user = {script_user}
  unix_listener postlogin {{
  }}
}}
service anvil {{
  chroot =
}}
"""

# dovecot's script-login gives the client address in $IP; relay-ctrl-allow
# reads $TCPREMOTEIP, as under tcpserver-run POP servers.
POSTLOGIN = """\
#!/bin/sh
TCPREMOTEIP="$IP" RELAY_CTRL_DIR={relaydir} exec {allow} "$@"
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mail_account():
    """Who dovecot's unprivileged processes and the post-login script run as."""
    return pwd.getpwnam("nobody") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())


@functools.cache
def script_account():
    """Who the post-login script runs as: the unprivileged mail account when
    it can run our programs, else (an interpreter under a private home, as
    with pyenv in /root) the user running the test."""
    account = mail_account()
    if account.pw_uid != os.geteuid():
        try:
            subprocess.run([our_program("relay-ctrl-allow"), "/bin/true"], env={}, user=account.pw_uid,
                           group=account.pw_gid, extra_groups=[], capture_output=True,
                           timeout=20, check=True)
        except (OSError, subprocess.CalledProcessError):
            print(f"post-login script runs as uid {os.geteuid()}: {account.pw_name} "
                  f"cannot run {our_program('relay-ctrl-allow')}")
            return pwd.getpwuid(os.geteuid())
    return account


@pytest.fixture
def scratch():
    """A directory dovecot's unprivileged processes can reach (pytest's
    tmp_path is 0700), holding the relay-ctrl directory they write to."""
    root = tempfile.mkdtemp(prefix="smtp-after-pop-")
    try:
        os.chmod(root, 0o755)
        account, writer = mail_account(), script_account()
        relaydir = os.path.join(root, "relay-ctrl")
        os.mkdir(relaydir, 0o755)
        for sub in ("run", "state", "home/alice/Maildir/new", "home/alice/Maildir/cur",
                    "home/alice/Maildir/tmp"):
            os.makedirs(os.path.join(root, sub), 0o755, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(relaydir, writer.pw_uid, writer.pw_gid)    # written by the script
            for path in [d for d, _, _ in os.walk(os.path.join(root, "home"))]:
                os.chown(path, account.pw_uid, account.pw_gid)
        yield pathlib.Path(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def dovecot(root):
    """A dovecot POP3 server of its own on 127.0.0.1; yields its port."""
    binary = peer_program("/usr/sbin/dovecot")
    account = mail_account()
    (root / "users").write_text("alice:{PLAIN}pop-secret\n")
    script = root / "postlogin"
    script.write_text(POSTLOGIN.format(relaydir=root / "relay-ctrl",
                                       allow=our_program("relay-ctrl-allow")))
    script.chmod(0o755)
    for attempt in range(3):            # the free port may be taken meanwhile
        port = free_port()
        conf = root / "dovecot.conf"
        conf.write_text(DOVECOT_CONF.format(root=root, user=account.pw_name,
                                            uid=account.pw_uid, gid=account.pw_gid, port=port,
                                            script_user=script_account().pw_name))
        proc = subprocess.Popen([binary, "-F", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        if wait_for_banner(port, proc):
            break
        stop(proc)
    else:
        log = (root / "dovecot.log").read_text(errors="replace") if \
            (root / "dovecot.log").exists() else ""
        pytest.fail(f"dovecot did not start: {proc.stderr.read()!r} {log[-2000:]}")
    try:
        yield port
    finally:
        stop(proc)


def wait_for_banner(port, proc, seconds=15):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(100).startswith(b"+OK"):
                    return True
        except OSError:
            time.sleep(0.1)
    return False


def stop(proc):
    proc.terminate()                # dovecot's master stops its own processes
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def pop_login(port, source, password):
    """Log in over POP3 from `source`; True when the server accepted."""
    client = poplib.POP3("127.0.0.1", port, timeout=10)
    try:
        client.sock.close()         # poplib cannot bind a source address: reconnect
        client.sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                               source_address=(source, 0))
        client.file = client.sock.makefile("rb")
        client._getresp()
        client.user("alice")
        try:
            client.pass_(password)
        except poplib.error_proto:
            return False
        client.stat()
        return True
    finally:
        try:
            client.quit()
        except (poplib.error_proto, OSError):
            client.close()


@contextlib.contextmanager
def smtp_server(tmp_path, home, relaydir, expiry, tcpserver):
    env = {"PATH": "/usr/bin:/bin", "QMAILHOME": str(home), "RELAY_CTRL_DIR": str(relaydir),
           "RELAY_CTRL_EXPIRY": str(expiry)}
    proc = subprocess.Popen(
        [tcpserver, "-1", "-HRl0", "127.0.0.1", "0", our_program("relay-ctrl-check"),
         our_program("smtpd-child")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        yield int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()


def relay_attempt(port, source):
    """RCPT reply for a domain not in rcpthosts; sends the message when accepted."""
    client = Client(port, source)
    try:
        assert client.reply().startswith(b"220 ")
        assert client.command(b"HELO roaming.test").startswith(b"250 ")
        assert client.command(b"MAIL FROM:<customer@roaming.test>") == b"250 ok\r\n"
        rcpt = client.command(b"RCPT TO:<friend@elsewhere.test>")
        if rcpt == b"250 ok\r\n":
            assert client.command(b"DATA") == b"354 go ahead\r\n"
            assert client.command(b"Subject: after pop\r\n\r\nhi\r\n.").startswith(b"250 ok")
        client.command(b"QUIT")
        return rcpt
    finally:
        client.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["c", "ours"], ids=["c-tcpserver", "our-tcpserver"])
def test_pop_login_opens_relaying_for_that_address_only(tmp_path, scratch, kind):
    tcpserver = peer_program("/usr/bin/tcpserver") if kind == "c" else our_program("tcpserver")
    relaydir = scratch / "relay-ctrl"
    home = make_home(tmp_path)
    with dovecot(scratch) as pop_port, \
            smtp_server(tmp_path, home, relaydir, 600, tcpserver) as smtp_port, \
            smtp_server(tmp_path, home, relaydir, 1, tcpserver) as short_port:
        assert relay_attempt(smtp_port, "127.0.0.2") == NOGATEWAY      # not logged in yet

        assert not pop_login(pop_port, "127.0.0.3", "wrong password")
        assert pop_login(pop_port, "127.0.0.2", "pop-secret")
        assert os.listdir(relaydir) == ["127.0.0.2"]
        assert (relaydir / "127.0.0.2").read_bytes() == b"USER=alice\n"

        assert relay_attempt(smtp_port, "127.0.0.2") == b"250 ok\r\n"
        assert relay_attempt(smtp_port, "127.0.0.3") == NOGATEWAY      # another customer

        # With RELAY_CTRL_EXPIRY=1, the same record is too old once a
        # couple of seconds have passed.
        time.sleep(2.5)
        assert relay_attempt(short_port, "127.0.0.2") == NOGATEWAY
        assert relay_attempt(smtp_port, "127.0.0.2") == b"250 ok\r\n"

        # relay-ctrl-age, with the short expiry, removes the record: gone
        # from every server until the next POP login.
        age = subprocess.run([our_program("relay-ctrl-age")], timeout=20, capture_output=True,
                             env={"RELAY_CTRL_DIR": str(relaydir), "RELAY_CTRL_EXPIRY": "1"})
        assert age.returncode == 0 and os.listdir(relaydir) == []
        assert relay_attempt(smtp_port, "127.0.0.2") == NOGATEWAY
        assert pop_login(pop_port, "127.0.0.2", "pop-secret")
        assert relay_attempt(smtp_port, "127.0.0.2") == b"250 ok\r\n"

    relayed = [m.read_bytes() for m in (home / "spool" / "new").iterdir()]
    assert len(relayed) == 3
    assert all(b"Tfriend@elsewhere.test\0" in m for m in relayed)
