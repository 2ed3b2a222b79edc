"""tcp-env: the environment and rules for inetd-started programs."""

import os
import signal
import socket
import subprocess
import time

import pytest

from conftest import our_program, peer_program
from fakedns import A, PTR, SERVFAIL, FakeDNS
from tcpserver_harness import parse_env, read_all, write_rules_c
from tcpserver_py.options import parse_tcpenv_args

ENV = {"PATH": "/usr/bin:/bin", "TCPREMOTEINFO": "spoof", "KEEP": "1"}
RULES = ('127.0.0.1:allow,RELAYCLIENT="",WHO="one"\n'
         '127.0.0.3:deny\n'
         ':allow,WHO="default"\n')


def run_tcpenv(args, source="127.0.0.1", env=ENV):
    """Run tcp-env with an accepted connection on fd 0, as inetd does;
    return (exit status, what the program printed on stdout)."""
    family = socket.AF_INET6 if ":" in source else socket.AF_INET
    with socket.socket(family) as listener:
        listener.bind((source if family == socket.AF_INET6 else "127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname()[:2], timeout=5,
                                          source_address=(source, 0))
        conn, _ = listener.accept()
        with client, conn:
            proc = subprocess.run([our_program("tcp-env"), *args], stdin=conn,
                                  capture_output=True, env=env, timeout=30)
            return proc.returncode, proc.stdout, client.getsockname()[1], \
                listener.getsockname()[1]


def test_parse_options():
    opts = parse_tcpenv_args(["-R", "-t5", "-Z", "-x", "r.cdb", "-X", "prog", "-R"])
    assert (opts.ident, opts.ident_timeout, opts.rules, opts.rules_missing_ok) == \
        (False, 5, "r.cdb", True)
    assert opts.program == ("prog", "-R")
    assert parse_tcpenv_args(["-R"]) is None and parse_tcpenv_args([]) is None
    assert parse_tcpenv_args(["p"]).ident_timeout == 30


def test_sets_the_tcpserver_environment():
    status, out, cport, lport = run_tcpenv(["-RH", "-l", "mx.test", "/usr/bin/env"])
    env = parse_env(out)
    assert status == 0
    assert env["PROTO"] == "TCP" and env["TCPREMOTEIP"] == "127.0.0.1"
    assert env["TCPREMOTEPORT"] == str(cport) and env["TCPLOCALPORT"] == str(lport)
    assert env["TCPLOCALIP"] == "127.0.0.1" and "TCPREMOTEINFO" not in env
    assert env["TCPLOCALHOST"] == "mx.test" and "TCPREMOTEHOST" not in env
    assert env["KEEP"] == "1" and "LC_CTYPE" not in env


def test_names_from_dns_and_softdnserror():
    dns = FakeDNS({("1.0.0.127.in-addr.arpa", PTR): ["Client.Example.ORG"],
                   ("5.0.0.127.in-addr.arpa", PTR): SERVFAIL})
    try:
        env = dict(ENV, DNSCACHEIP="127.0.0.1")
        out = parse_env(run_tcpenv(["-R", "/usr/bin/env"], env=env)[1])
        assert out["TCPREMOTEHOST"] == "client.example.org"
        assert out["TCPLOCALHOST"] == "client.example.org"
        out = parse_env(run_tcpenv(["-R", "/usr/bin/env"], source="127.0.0.5", env=env)[1])
        assert out["TCPREMOTEHOST"] == "softdnserror"
    finally:
        dns.close()


def test_rules_allow_deny_and_missing():
    import tempfile, pathlib
    with tempfile.TemporaryDirectory() as tmp:
        cdb = write_rules_c(pathlib.Path(tmp), RULES)
        status, out, _, _ = run_tcpenv(["-RH", "-l0", "-x", cdb, "/usr/bin/env"])
        env = parse_env(out)
        assert status == 0 and env["RELAYCLIENT"] == "" and env["WHO"] == "one"
        assert env["TCPLOCALHOST"] == "0" and "TCPREMOTEHOST" not in env
        assert run_tcpenv(["-RH", "-x", cdb, "/usr/bin/env"], source="127.0.0.3")[:2] == (100, b"")
        assert parse_env(run_tcpenv(["-RH", "-x", cdb, "/usr/bin/env"],
                                    source="127.0.0.2")[1])["WHO"] == "default"
        missing = os.path.join(tmp, "none.cdb")
        assert run_tcpenv(["-RH", "-x", missing, "/usr/bin/env"])[:2] == (111, b"")
        assert run_tcpenv(["-RH", "-X", "-x", missing, "/bin/echo", "ok"])[:2] == (0, b"ok\n")
        bad = pathlib.Path(tmp, "bad.cdb")
        bad.write_bytes(b"junk")
        assert run_tcpenv(["-RH", "-X", "-x", str(bad), "/usr/bin/env"])[:2] == (111, b"")


def test_ipv6_connection():
    try:
        status, out, cport, lport = run_tcpenv(["-RH", "-l0", "/usr/bin/env"], source="::1")
    except OSError:
        pytest.skip("no ::1")
    env = parse_env(out)
    assert status == 0 and env["PROTO"] == "TCP6"
    assert env["TCPREMOTEIP"] == env["TCP6REMOTEIP"] == "::1"
    assert env["TCP6LOCALPORT"] == str(lport) and env["TCPREMOTEPORT"] == str(cport)


def test_already_under_tcpserver_runs_program_unchanged():
    env = dict(ENV, PROTO="TCP", TCPREMOTEIP="10.0.0.1")
    status, out, _, _ = run_tcpenv(["-R", "/usr/bin/env"], env=env)
    assert status == 0 and parse_env(out)["TCPREMOTEIP"] == "10.0.0.1"


def test_rules_are_never_skipped_because_proto_is_set():
    # qmail's shortcut (PROTO=TCP: run the program as it is) must not skip
    # rules asked for with -x: a stray PROTO would otherwise fail open.
    import tempfile, pathlib
    with tempfile.TemporaryDirectory() as tmp:
        cdb = write_rules_c(pathlib.Path(tmp), RULES)
        env = dict(ENV, PROTO="TCP", TCPREMOTEIP="127.0.0.1")
        assert run_tcpenv(["-RH", "-x", cdb, "/usr/bin/env"], source="127.0.0.3",
                          env=env)[:2] == (100, b"")
        missing = os.path.join(tmp, "none.cdb")
        assert run_tcpenv(["-RH", "-x", missing, "/usr/bin/env"], env=env)[:2] == (111, b"")
        status, out, _, _ = run_tcpenv(["-RH", "-x", cdb, "/usr/bin/env"], env=env)
        assert status == 0 and parse_env(out)["WHO"] == "one"


def test_failures_exit_111_silently():
    proc = subprocess.run([our_program("tcp-env"), "-R", "/usr/bin/env"],
                          stdin=subprocess.DEVNULL, capture_output=True, env=ENV, timeout=30)
    assert (proc.returncode, proc.stdout, proc.stderr) == (111, b"", b"")
    assert run_tcpenv(["-R", "/nonexistent/prog"])[:2] == (111, b"")
    proc = subprocess.run([our_program("tcp-env")], capture_output=True, timeout=30)
    assert (proc.returncode, proc.stderr) == (111, b"")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("relayclient", [False, True], ids=["clean", "RELAYCLIENT"])
def test_under_real_xinetd(tmp_path, relayclient):
    # With an inherited RELAYCLIENT, tcp-env's warning must not reach the
    # client: xinetd gives the program the socket as stderr too.
    xinetd = peer_program("/usr/sbin/xinetd")
    cdb = write_rules_c(tmp_path, RULES)
    port = free_port()
    conf = tmp_path / "xinetd.conf"
    conf.write_text(f"""
defaults
{{
    log_type = FILE {tmp_path}/xinetd.log
    instances = 50
    cps = 1000 1
}}
service tcpenv-test
{{
    type = UNLISTED
    socket_type = stream
    protocol = tcp
    wait = no
{"    user = root" if os.geteuid() == 0 else ""}
    bind = 127.0.0.1
    port = {port}
    cps = 1000 1
    server = {our_program("tcp-env")}
    server_args = -R -H -l mx.example.org -x {cdb} /usr/bin/env
    env = PATH=/usr/bin:/bin MARK=xinetd{" RELAYCLIENT=" if relayclient else ""}
}}
""")
    proc = subprocess.Popen([xinetd, "-dontfork", "-pidfile", str(tmp_path / "pid"),
                             "-f", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "stderr", "wb"), start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "stderr").read_text()
                time.sleep(0.1)
        time.sleep(0.2)

        def talk(source):
            with socket.create_connection(("127.0.0.1", port), timeout=10,
                                          source_address=(source, 0)) as s:
                s.shutdown(socket.SHUT_WR)
                return s.getsockname()[1], read_all(s)

        cport, out = talk("127.0.0.1")
        env = parse_env(out)
        assert env["MARK"] == "xinetd" and env["PROTO"] == "TCP"
        assert env["TCPREMOTEIP"] == "127.0.0.1" and env["TCPREMOTEPORT"] == str(cport)
        assert env["TCPLOCALPORT"] == str(port) and env["TCPLOCALHOST"] == "mx.example.org"
        assert env["RELAYCLIENT"] == "" and env["WHO"] == "one"
        assert b"warning" not in out and all(b"=" in line for line in out.splitlines())
        other = parse_env(talk("127.0.0.2")[1])
        assert other["WHO"] == "default" and ("RELAYCLIENT" in other) == relayclient
        assert talk("127.0.0.3")[1] == b""        # denied: closed, nothing sent
        for _ in range(30):                       # a quick burst stays served
            assert b"PROTO=TCP" in talk("127.0.0.1")[1]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


NAME_RULES = ('=fake.example:allow,RELAYCLIENT="",WHO="fake"\n'
              '=good.example:allow,RELAYCLIENT="",WHO="good"\n'
              '=.evil.test:allow,RELAYCLIENT="",WHO="evil-domain"\n'
              '=.good.test:allow,RELAYCLIENT="",WHO="good-domain"\n'
              ':allow,WHO="default"\n')
NAME_RECORDS = {
    # PTR names anyone can publish for their own address, confirmed or not
    ("3.0.0.127.in-addr.arpa", PTR): ["fake.example"], ("fake.example", A): ["10.0.0.1"],
    ("4.0.0.127.in-addr.arpa", PTR): ["mx.evil.test"],
    ("2.0.0.127.in-addr.arpa", PTR): ["good.example"], ("good.example", A): ["127.0.0.2"],
    ("5.0.0.127.in-addr.arpa", PTR): ["mx.good.test"],
    ("mx.good.test", A): ["10.0.0.9", "127.0.0.5"],
}


@pytest.mark.parametrize("flags", [[], ["-p"], ["-P"], ["-p", "-P"], ["-P", "-p"]],
                         ids=lambda f: "".join(f) or "none")
def test_name_rules_see_only_forward_confirmed_names(tmp_path, flags):
    # Whoever controls the PTR record of their own address must not get
    # what a =host or =.domain rule grants (RELAYCLIENT) without a forward
    # check, whatever the options say.
    cdb = write_rules_c(tmp_path, NAME_RULES)
    dns = FakeDNS(NAME_RECORDS)
    env = dict(ENV, DNSCACHEIP="127.0.0.1")
    try:
        got = {src: run_tcpenv(["-R", "-l0", *flags, "-x", cdb, "/usr/bin/env"], source=src,
                               env=env)[:2]
               for src in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")}
    finally:
        dns.close()
    envs = {src: parse_env(out) for src, (status, out) in got.items()}
    assert all(status == 0 for status, _ in got.values())
    for src in ("127.0.0.3", "127.0.0.4"):          # unconfirmed: no name rule
        assert envs[src]["WHO"] == "default" and "RELAYCLIENT" not in envs[src], src
    assert envs["127.0.0.2"]["WHO"] == "good" and envs["127.0.0.2"]["RELAYCLIENT"] == ""
    assert envs["127.0.0.5"]["WHO"] == "good-domain"
    paranoid = (flags or ["-P"])[-1] == "-p"
    # TCPREMOTEHOST: the PTR name as qmail's tcp-env sets it; with -p only
    # a confirmed one, as tcpserver -p.
    assert envs["127.0.0.2"]["TCPREMOTEHOST"] == "good.example"
    assert ("TCPREMOTEHOST" in envs["127.0.0.3"]) == (not paranoid)
    if not paranoid:
        assert envs["127.0.0.3"]["TCPREMOTEHOST"] == "fake.example"


def test_help_and_version():
    for option, start in (("--help", b"usage: tcp-env"), ("--version", b"tcpserver-py ")):
        proc = subprocess.run([our_program("tcp-env"), option], capture_output=True,
                              timeout=30)
        assert (proc.returncode, proc.stderr) == (0, b"") and proc.stdout.startswith(start)
    proc = subprocess.run([our_program("tcp-env"), "--help"], capture_output=True, timeout=30)
    for word in (b"-p", b"-x", b"-X", b"-H", b"-l", b"-t", b"-R"):
        assert word in proc.stdout


def test_inherited_tcp6_variables_are_removed():
    env = dict(ENV, TCP6REMOTEIP="2001:db8::66", TCP6REMOTEINFO="root",
               TCP6INTERFACE="eth9", TCP6REMOTEHOST="spoofed.example")
    out = parse_env(run_tcpenv(["-RH", "-l0", "/usr/bin/env"], env=env)[1])
    assert out["PROTO"] == "TCP" and not [k for k in out if k.startswith("TCP6")]


def test_inherited_relayclient_is_warned_about(tmp_path):
    # On stderr when stderr is not the client's connection...
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(2)
        for stderr_is_connection in (False, True):
            client = socket.create_connection(listener.getsockname(), timeout=10)
            conn, _ = listener.accept()
            with client, conn:
                proc = subprocess.run(
                    [our_program("tcp-env"), "-RH", "-l0", "/bin/echo", "served"],
                    stdin=conn, stdout=conn, env=dict(ENV, RELAYCLIENT=""), timeout=30,
                    stderr=conn if stderr_is_connection else subprocess.PIPE)
                conn.shutdown(socket.SHUT_WR)
                assert proc.returncode == 0
                if stderr_is_connection:
                    # ...never to the client (inetd): there, syslog.
                    assert read_all(client) == b"served\n"
                else:
                    assert proc.stderr.startswith(
                        b"tcp-env: warning: RELAYCLIENT is set in tcp-env's own environment")
                    assert proc.stderr.count(b"\n") == 1 and b"env -i" in proc.stderr
    assert run_tcpenv(["-RH", "-l0", "/bin/true"])[0] == 0
