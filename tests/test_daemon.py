"""--daemon, --pidfile and the SIGQUIT graceful stop (docs/deploy/init.md)."""

import os
import signal
import socket
import subprocess
import time

import pytest

from conftest import our_program
from tcpserver_harness import Server, parse_env, read_all

RULES = '127.0.0.2:deny\n:allow,MARK="rules"\n'


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def daemons(tmp_path):
    """Start `tcpserver --daemon`; kill whatever is left at the end."""
    pids = []
    (tmp_path / "env.sh").write_text(
        "#!/bin/sh\nenv | grep -E '^(TCPREMOTEIP|MARK)='\n"
        # only the shell holds the connection: SIGTERM to it closes it
        "sleep \"${PAUSE:-0}\" </dev/null >/dev/null 2>&1 &\nwait $!\necho done\n")
    (tmp_path / "env.sh").chmod(0o755)
    subprocess.run([our_program("tcprules"), "rules.cdb", "rules.tmp"], cwd=tmp_path,
                   input=RULES.encode(), check=True, timeout=10)

    def start(*args, pidfile="run/smtpd.pid", port="0", env=None):
        (tmp_path / "run").mkdir(exist_ok=True)
        proc = subprocess.run(
            [our_program("tcpserver"), "--daemon", "--pidfile", pidfile, "-1", "-v", "-RH",
             "-l0", "-x", "rules.cdb", *args, "127.0.0.1", port, "./env.sh"],
            cwd=tmp_path, capture_output=True, timeout=20,
            env=env or {"PATH": "/usr/bin:/bin"})
        if proc.returncode == 0:
            pid = int((tmp_path / pidfile).read_text())
            pids.append(pid)
        return proc
    yield start
    for pid in pids:
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except OSError:
            pass


def talk(port, source="127.0.0.1"):
    with socket.socket() as sock:
        sock.settimeout(10)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        sock.shutdown(socket.SHUT_WR)
        return read_all(sock)


@pytest.mark.timeout(60)
def test_daemon_detaches_serves_and_refuses_a_second_start(tmp_path, daemons):
    started = daemons("--log", "smtpd.log")
    assert started.returncode == 0, started.stderr
    port = int(started.stdout)
    pid = int((tmp_path / "run/smtpd.pid").read_text())
    assert not gone(pid)
    assert os.getsid(pid) != os.getsid(0)        # its own session, no terminal
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    # -x rules.cdb and ./env.sh were relative to where it was started.
    env = parse_env(talk(port))
    assert env["TCPREMOTEIP"] == "127.0.0.1" and env["MARK"] == "rules"
    assert talk(port, "127.0.0.2") == b""
    log = tmp_path / "smtpd.log"
    wait_for(lambda: "tcpserver: deny " in log.read_text())
    assert "tcpserver: ok " in log.read_text()

    again = daemons(port="0")
    assert again.returncode == 111
    assert again.stderr.decode() == (f"tcpserver: fatal: pidfile {tmp_path}/run/smtpd.pid "
                                     f"is locked: already running as pid {pid}\n")
    assert int((tmp_path / "run/smtpd.pid").read_text()) == pid    # untouched

    os.kill(pid, signal.SIGTERM)                 # the original's immediate exit
    wait_for(lambda: gone(pid))
    assert not (tmp_path / "run/smtpd.pid").exists()


@pytest.mark.timeout(60)
def test_stale_pidfile_does_not_block(tmp_path, daemons):
    (tmp_path / "run").mkdir()
    (tmp_path / "run/smtpd.pid").write_text("999999\n")     # a crashed run's
    started = daemons()
    assert started.returncode == 0, started.stderr
    pid = int((tmp_path / "run/smtpd.pid").read_text())
    assert pid != 999999 and not gone(pid)


@pytest.mark.timeout(60)
def test_port_in_use_fails_in_the_foreground(tmp_path, daemons):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        started = daemons(port=port)
    assert started.returncode == 111
    assert started.stderr == b"tcpserver: fatal: unable to bind: address already used\n"
    assert not (tmp_path / "run/smtpd.pid").exists()


@pytest.mark.timeout(60)
def test_sigquit_stops_accepting_and_lets_children_finish(tmp_path, daemons):
    started = daemons("--log", "smtpd.log",
                      env={"PATH": "/usr/bin:/bin", "PAUSE": "1"})
    assert started.returncode == 0, started.stderr
    port = int(started.stdout)
    pid = int((tmp_path / "run/smtpd.pid").read_text())
    with socket.create_connection(("127.0.0.1", port)) as busy:
        wait_for(lambda: "tcpserver: ok " in (tmp_path / "smtpd.log").read_text())
        os.kill(pid, signal.SIGQUIT)
        wait_for(lambda: "stopping" in (tmp_path / "smtpd.log").read_text())
        with pytest.raises(ConnectionRefusedError):
            talk(port)                                  # no longer accepting
        busy.settimeout(10)
        assert read_all(busy).endswith(b"done\n")      # the running one finished
    wait_for(lambda: gone(pid))
    assert not (tmp_path / "run/smtpd.pid").exists()
    log = (tmp_path / "smtpd.log").read_text()
    assert "tcpserver: warning: stopping: waiting for 1 children" in log
    assert "stop timeout" not in log and "tcpserver: end " in log


@pytest.mark.timeout(60)
def test_sigquit_deadline_terminates_the_rest(tmp_path, daemons):
    started = daemons("--log", "smtpd.log", "--stop-timeout", "1",
                      env={"PATH": "/usr/bin:/bin", "PAUSE": "60"})
    assert started.returncode == 0, started.stderr
    port = int(started.stdout)
    pid = int((tmp_path / "run/smtpd.pid").read_text())
    with socket.create_connection(("127.0.0.1", port)) as busy:
        wait_for(lambda: "tcpserver: ok " in (tmp_path / "smtpd.log").read_text())
        os.kill(pid, signal.SIGQUIT)
        wait_for(lambda: gone(pid))
        busy.settimeout(10)
        assert b"done" not in read_all(busy)            # the shell was terminated
    log = (tmp_path / "smtpd.log").read_text()
    assert "tcpserver: warning: stop timeout: sending SIGTERM to 1 children" in log


@pytest.mark.timeout(30)
def test_without_daemon_nothing_detaches(tmp_path):
    server = Server(our_program("tcpserver"),
                    ["--pidfile", str(tmp_path / "fg.pid"), "-1", "-RH", "-l0",
                     "127.0.0.1", "0", "/bin/echo", "hi"], tmp_path / "fg.log")
    try:
        assert server.talk() == b"hi\n"
        assert int((tmp_path / "fg.pid").read_text()) == server.proc.pid
        assert os.getsid(server.proc.pid) == server.proc.pid   # the session we gave it
        server.proc.send_signal(signal.SIGQUIT)
        assert server.proc.wait(timeout=10) == 0
        assert not (tmp_path / "fg.pid").exists()
    finally:
        server.stop()


def test_log_without_daemon_is_a_usage_error():
    proc = subprocess.run([our_program("tcpserver"), "--log", "x", "0", "0", "true"],
                          capture_output=True, timeout=10)
    assert proc.returncode == 100 and b"--log is for --daemon" in proc.stderr


@pytest.mark.timeout(60)
def test_log_syslog_goes_through_logger(tmp_path, daemons):
    """--log syslog:FACILITY: the daemon's stderr is logger(1)'s input.  A
    stand-in logger on PATH records its arguments and what it is sent."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "logger").write_text(
        f"#!/bin/sh\necho \"$@\" > {tmp_path}/logger.args\nexec cat >> {tmp_path}/syslog\n")
    (bin_dir / "logger").chmod(0o755)
    started = daemons("--log", "syslog:local3",
                      env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert started.returncode == 0, started.stderr
    port = int(started.stdout)
    assert parse_env(talk(port))["MARK"] == "rules"
    wait_for(lambda: (tmp_path / "syslog").exists()
             and "tcpserver: end " in (tmp_path / "syslog").read_text())
    assert (tmp_path / "logger.args").read_text() == "-t tcpserver -p local3.info\n"
    assert "tcpserver: ok " in (tmp_path / "syslog").read_text()
