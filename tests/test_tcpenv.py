"""tcp-env: the environment and rules for inetd-started programs."""

import os
import signal
import socket
import subprocess
import time

import pytest

from conftest import our_program, peer_program
from fakedns import PTR, SERVFAIL, FakeDNS
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
def test_under_real_xinetd(tmp_path):
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
    env = PATH=/usr/bin:/bin MARK=xinetd
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
        assert parse_env(talk("127.0.0.2")[1])["WHO"] == "default"
        assert talk("127.0.0.3")[1] == b""        # denied: closed, nothing sent
        for _ in range(30):                       # a quick burst stays served
            assert b"PROTO=TCP" in talk("127.0.0.1")[1]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
