"""relay-ctrl-allow, relay-ctrl-check, relay-ctrl-age as programs.

Run as a POP server and tcpserver would run them: environment in, exec of
the rest of the command line out.  The program they run here is a shell
that prints what it got, so each test sees the environment that reaches it.
"""

import os
import subprocess
import time

import pytest

from conftest import our_program

SHOW = ["sh", "-c", 'printf "%s|%s|%s" "${RELAYCLIENT-unset}" "${KEEP-unset}" "$*"', "sh"]


def run(name, args=(), env=None, **kw):
    base = {"PATH": "/usr/bin:/bin"}
    base.update(env or {})
    return subprocess.run([our_program(name), *args], env=base, capture_output=True,
                          timeout=20, **kw)


@pytest.fixture
def relaydir(tmp_path):
    path = tmp_path / "relay"
    path.mkdir()
    return path


def allow(relaydir, ip, *args, **extra):
    return run("relay-ctrl-allow", args, {"RELAY_CTRL_DIR": str(relaydir), "TCPREMOTEIP": ip,
                                          **extra})


def check(relaydir, ip, **extra):
    env = {"RELAY_CTRL_DIR": str(relaydir), "TCPREMOTEIP": ip, "KEEP": "kept", **extra}
    result = run("relay-ctrl-check", [*SHOW, "a", "b c"], env)
    return result.stdout.decode(), result.stderr.decode()


def test_allow_records_then_check_relays_that_client_only(relaydir):
    result = allow(relaydir, "192.0.2.7", "sh", "-c", "echo ran $0 $1", "x", "y",
                   USER="alice")
    assert result.returncode == 0 and result.stdout == b"ran x y\n"
    assert sorted(os.listdir(relaydir)) == ["192.0.2.7"]
    assert (relaydir / "192.0.2.7").read_bytes() == b"USER=alice\n"
    assert check(relaydir, "192.0.2.7") == ("|kept|a b c", "")
    assert check(relaydir, "192.0.2.8") == ("unset|kept|a b c", "")


def test_allow_without_a_program_exits_with_the_outcome(relaydir):
    assert allow(relaydir, "192.0.2.7").returncode == 0
    result = allow(relaydir / "missing", "192.0.2.7")
    assert result.returncode == 111
    assert str(relaydir / "missing") in result.stderr.decode()
    assert "No such file or directory" in result.stderr.decode()


def test_allow_renews_the_time(relaydir):
    assert allow(relaydir, "192.0.2.7").returncode == 0
    os.utime(relaydir / "192.0.2.7", (1, 1))
    assert allow(relaydir, "192.0.2.7").returncode == 0
    assert time.time() - (relaydir / "192.0.2.7").stat().st_mtime < 60
    assert os.listdir(relaydir) == ["192.0.2.7"]       # no temporary file left behind


def test_check_sets_the_configured_value_and_keeps_an_existing_one(relaydir):
    allow(relaydir, "192.0.2.7")
    assert check(relaydir, "192.0.2.7", RELAY_CTRL_RELAYCLIENT="@hub.example")[0] \
        == "@hub.example|kept|a b c"
    assert check(relaydir, "192.0.2.7", RELAYCLIENT="from-rules")[0] == "from-rules|kept|a b c"
    assert check(relaydir, "192.0.2.8", RELAYCLIENT="")[0] == "|kept|a b c"


@pytest.mark.parametrize("recorded, client", [
    ("::ffff:192.0.2.7", "192.0.2.7"),
    ("192.0.2.7", "::ffff:192.0.2.7"),
    ("2001:DB8::0:1", "2001:db8:0:0:0:0:0:1"),
    ("2001:db8::1", "2001:0DB8::1"),
])
def test_ipv6_and_mapped_spellings_meet(relaydir, recorded, client):
    assert allow(relaydir, recorded).returncode == 0
    assert len(os.listdir(relaydir)) == 1
    assert check(relaydir, client)[0].startswith("|")


@pytest.mark.parametrize("hostile", ["../x", "/", "", "..", "x" * 10000, "../../tmp/evil",
                                     "192.0.2.7/../../x", "fe80::1%../../x"])
def test_hostile_address_writes_nothing_anywhere(tmp_path, relaydir, hostile):
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    result = allow(relaydir, hostile, "true")
    assert result.returncode == 0                        # the login goes on
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    err = result.stderr.decode()
    assert err.startswith("relay-ctrl-allow: not recorded: TCPREMOTEIP:") and len(err) < 200
    out, err = check(relaydir, hostile)
    assert out.startswith("unset|") and "relaying for nobody" in err


def test_unset_address_and_directory_fail_closed(relaydir):
    allow(relaydir, "192.0.2.7")
    result = run("relay-ctrl-check", SHOW, {"RELAY_CTRL_DIR": str(relaydir)})
    assert result.stdout.startswith(b"unset|") and b"empty address" in result.stderr
    result = run("relay-ctrl-check", SHOW, {"TCPREMOTEIP": "192.0.2.7"})
    assert result.stdout.startswith(b"unset|")
    assert b"RELAY_CTRL_DIR is not set" in result.stderr


def test_unreadable_directory_fails_closed_and_says_why(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    out, err = check(not_a_dir, "192.0.2.7")
    assert out.startswith("unset|")
    assert f"unable to open directory {not_a_dir}: Not a directory" in err


@pytest.mark.parametrize("variable, value", [
    ("RELAY_CTRL_EXPIRY", "soon"), ("RELAY_CTRL_EXPIRY", "-1"), ("RELAY_CTRL_EXPIRY", ""),
    ("RELAY_CTRL_RELAYCLIENT", "a\rb"),
])
def test_bad_variable_relays_nobody(relaydir, variable, value):
    allow(relaydir, "192.0.2.7")
    out, err = check(relaydir, "192.0.2.7", **{variable: value})
    assert out.startswith("unset|")
    assert f"relaying for nobody: {variable}" in err


def test_planted_non_files_relay_nobody(relaydir, tmp_path):
    target = tmp_path / "fresh"
    target.write_text("")
    (relaydir / "192.0.2.7").symlink_to(target)
    (relaydir / "192.0.2.8").mkdir()
    for ip in ("192.0.2.7", "192.0.2.8"):
        out, err = check(relaydir, ip)
        assert out.startswith("unset|") and "not a regular file" in err


def test_expired_record_relays_nobody(relaydir):
    allow(relaydir, "192.0.2.7")
    past = time.time() - 120
    os.utime(relaydir / "192.0.2.7", (past, past))
    assert check(relaydir, "192.0.2.7", RELAY_CTRL_EXPIRY="100")[0].startswith("unset|")
    assert check(relaydir, "192.0.2.7", RELAY_CTRL_EXPIRY="200")[0].startswith("|")
    assert check(relaydir, "192.0.2.7")[0].startswith("|")          # default 900


def test_courier_login_is_recorded_only_when_authenticated(relaydir):
    courier = {"AUTHUSER": "/usr/lib/courier/authlib", "AUTHARGV0": "imapd"}
    assert allow(relaydir, "192.0.2.7", **courier).returncode == 0
    assert os.listdir(relaydir) == []
    assert allow(relaydir, "192.0.2.7", AUTHENTICATED="alice", **courier).returncode == 0
    assert os.listdir(relaydir) == ["192.0.2.7"]


def test_age_removes_only_old_records(relaydir):
    for ip in ("192.0.2.1", "192.0.2.2", "2001:db8::1"):
        allow(relaydir, ip)
    (relaydir / "README").write_text("not a record\n")
    leftover = relaydir / ".relay-ctrl.1.abc"
    leftover.write_text("")
    past = time.time() - 1000
    for name in ("192.0.2.1", "2001:db8::1", "README", leftover.name):
        os.utime(relaydir / name, (past, past))
    result = run("relay-ctrl-age", env={"RELAY_CTRL_DIR": str(relaydir)})
    assert result.returncode == 0 and result.stderr == b""
    assert sorted(os.listdir(relaydir)) == ["192.0.2.2", "README"]
    os.utime(relaydir / "192.0.2.2", (time.time() - 5,) * 2)
    result = run("relay-ctrl-age", env={"RELAY_CTRL_DIR": str(relaydir), "RELAY_CTRL_EXPIRY": "0"})
    assert result.returncode == 0 and os.listdir(relaydir) == ["README"]


def test_age_errors(relaydir):
    result = run("relay-ctrl-age", env={"RELAY_CTRL_DIR": str(relaydir), "RELAY_CTRL_EXPIRY": "x"})
    assert result.returncode == 100 and b"RELAY_CTRL_EXPIRY" in result.stderr
    result = run("relay-ctrl-age", env={"RELAY_CTRL_DIR": str(relaydir / "gone")})
    assert result.returncode == 111 and str(relaydir / "gone").encode() in result.stderr
    assert run("relay-ctrl-age", ["extra"]).returncode == 100


def test_check_needs_a_program_and_reports_a_missing_one(relaydir):
    result = run("relay-ctrl-check", env={"RELAY_CTRL_DIR": str(relaydir)})
    assert result.returncode == 100 and b"usage" in result.stderr
    result = run("relay-ctrl-check", ["/nonexistent/prog"], {"RELAY_CTRL_DIR": str(relaydir),
                                                           "TCPREMOTEIP": "192.0.2.7"})
    assert result.returncode == 111
    assert b"unable to run /nonexistent/prog: No such file or directory" in result.stderr


def test_signals_reach_the_program_as_defaults(relaydir):
    """Python ignores SIGPIPE; the exec'd program must not inherit that."""
    env = {"RELAY_CTRL_DIR": str(relaydir), "TCPREMOTEIP": "192.0.2.7"}
    for name in ("relay-ctrl-check", "relay-ctrl-allow"):
        result = run(name, ["sh", "-c", "grep SigIgn /proc/self/status"], env)
        ignored = int(result.stdout.split()[1], 16)
        assert not ignored & (1 << (13 - 1)), name          # SIGPIPE
        assert not ignored & (1 << (25 - 1)), name          # SIGXFSZ


@pytest.mark.timeout(60)
def test_ipv6_client_relays_through_tcpserver_after_any_spelling(tmp_path, relaydir):
    """Recorded as 0:0:0:0:0:0:0:1 (a POP server's spelling), found for a
    client on ::1 under our tcpserver, which sets TCPREMOTEIP=::1."""
    import socket
    from smtpd_servers import make_home
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    assert allow(relaydir, "0:0:0:0:0:0:0:1").returncode == 0
    assert os.listdir(relaydir) == ["::1"]
    home = make_home(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "QMAILHOME": str(home), "RELAY_CTRL_DIR": str(relaydir)}
    proc = subprocess.Popen([our_program("tcpserver"), "-1", "-HRl0", "::1", "0",
                             our_program("relay-ctrl-check"), our_program("smtpd-child")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        port = int(proc.stdout.readline())
        with socket.create_connection(("::1", port), timeout=10) as sock:
            f = sock.makefile("rb")
            assert f.readline().startswith(b"220 ")
            replies = []
            for line in (b"HELO v6.test", b"MAIL FROM:<a@v6.test>", b"RCPT TO:<b@elsewhere.test>",
                         b"QUIT"):
                sock.sendall(line + b"\r\n")
                replies.append(f.readline())
        assert replies[2] == b"250 ok\r\n"
    finally:
        proc.kill()
        proc.wait()


def test_environment_handed_on_unchanged_but_for_relayclient(relaydir):
    """No LC_CTYPE from Python's locale coercion, odd bytes kept as they were."""
    allow(relaydir, "192.0.2.7")
    base = {b"PATH": b"/usr/bin:/bin", b"RELAY_CTRL_DIR": os.fsencode(relaydir),
            b"TCPREMOTEIP": b"192.0.2.7", b"ODD": b"\xff\xfe", b"EMPTY": b""}
    for name, added in (("relay-ctrl-allow", {}), ("relay-ctrl-check", {b"RELAYCLIENT": b""})):
        out = subprocess.run([our_program(name), "/usr/bin/env", "-0"], env=base,
                             capture_output=True, timeout=20).stdout
        seen = dict(entry.partition(b"=")[::2] for entry in out.split(b"\0") if entry)
        assert seen == {**base, **added}, name


@pytest.mark.parametrize("name", ["relay-ctrl-allow", "relay-ctrl-check", "relay-ctrl-age",
                                  "smtpd-checkpassword"])
def test_help_and_version_alone(name, relaydir):
    result = run(name, ["--help"], {"RELAY_CTRL_DIR": str(relaydir), "TCPREMOTEIP": "192.0.2.7"})
    assert result.returncode == 0 and result.stdout.startswith(f"usage: {name}".encode())
    assert os.listdir(relaydir) == []               # --help records nothing
    result = run(name, ["--version"])
    assert result.returncode == 0 and result.stdout.startswith(b"tcpserver-py ")
