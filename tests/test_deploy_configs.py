"""The files of docs/deploy/, run as shipped with the real programs:
daemontools (svscan, supervise, multilog), a systemd .socket/.service pair
(through systemd-socket-activate) and the init script (--daemon --pidfile).

Only site values are changed: ports, paths, the rules file.  Services need a
fixed port, so these tests take a free one from the kernel first.
"""

import os
import pathlib
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, VENV_BIN, our_program, peer_program

DEPLOY = ROOT / "docs" / "deploy"
RULES = '127.0.0.1:allow,RELAYCLIENT=""\n:allow\n'
GREETING = b"220 mx.example.org ESMTP\r\n"


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return sock.getsockname()[1]


def smtp_greeting(port: int, timeout: float = 15.0) -> bytes:
    """Connect (retrying while nothing listens yet), read the 220, QUIT."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                greeting = sock.recv(512)
                sock.sendall(b"QUIT\r\n")
                sock.recv(512)
                return greeting
        except (ConnectionRefusedError, ConnectionResetError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture
def site(tmp_path):
    """A qmail home for smtpd-child and a compiled rules file."""
    home = tmp_path / "qmail"
    (home / "control").mkdir(parents=True)
    (home / "control" / "me").write_text("mx.example.org\n")
    (home / "control" / "rcpthosts").write_text("example.org\n")
    rules = tmp_path / "tcp.smtp.cdb"
    subprocess.run([our_program("tcprules"), str(rules), str(rules) + ".tmp"],
                   input=RULES.encode(), check=True, timeout=10)
    return home, rules


@pytest.mark.timeout(90)
def test_daemontools_run_and_log_run(tmp_path, site):
    svscan = peer_program("/usr/bin/svscan")
    svstat = peer_program("/usr/bin/svstat")
    peer_program("/usr/bin/multilog")
    home, rules = site
    service = tmp_path / "service" / "smtpd"
    (service / "log").mkdir(parents=True)
    shutil.copy(DEPLOY / "daemontools" / "run", service / "run")
    shutil.copy(DEPLOY / "daemontools" / "log" / "run", service / "log" / "run")
    port = free_port()
    settings = {"IP": "127.0.0.1", "PORT": str(port), "SMTPHOST": "mx.example.org",
                "CONCURRENCY": "10", "RULES": str(rules), "QMAILHOME": str(home),
                "PATH": f"{VENV_BIN}:/usr/bin:/bin"}
    (service / "env").mkdir()
    for name, value in settings.items():
        (service / "env" / name).write_text(value + "\n")
    proc = subprocess.Popen([svscan, str(tmp_path / "service")], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={"PATH": "/usr/bin:/bin"})

    def pid_of_tcpserver() -> int:
        out = subprocess.run([svstat, str(service)], capture_output=True, text=True,
                             timeout=10).stdout
        found = re.search(r": up \(pid (\d+)\)", out)
        return int(found.group(1)) if found else 0
    try:
        assert smtp_greeting(port) == GREETING
        wait_for(pid_of_tcpserver)
        first = pid_of_tcpserver()
        current = service / "log" / "main" / "current"
        wait_for(lambda: current.exists()
                 and re.search(r"^@4000[0-9a-f]{20} tcpserver: end \d+ status 0$",
                               current.read_text(), re.M))
        os.kill(first, signal.SIGKILL)                     # supervise restarts it
        wait_for(lambda: pid_of_tcpserver() not in (0, first))
        assert smtp_greeting(port) == GREETING
        wait_for(lambda: current.read_text().count("tcpserver: status: 0/10") >= 3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def unit_values(path: pathlib.Path) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


@pytest.mark.timeout(60)
def test_systemd_socket_and_service_units(tmp_path, site):
    activator = peer_program("/usr/bin/systemd-socket-activate")
    home, rules = site
    socket_unit = unit_values(DEPLOY / "systemd" / "smtpd.socket")
    service_unit = unit_values(DEPLOY / "systemd" / "smtpd.service")
    assert socket_unit["ListenStream"] == ["25"] and socket_unit["Accept"] == ["no"]
    assert service_unit["KillSignal"] == ["SIGQUIT"] and service_unit["KillMode"] == ["mixed"]
    port = free_port()
    command = shlex.split(service_unit["ExecStart"][0])
    command = [str(VENV_BIN / pathlib.Path(word).name) if word.startswith("/usr/local/bin/")
               else str(rules) if word == "/etc/tcp.smtp.cdb" else word for word in command]
    environment = [f"-E{entry.replace('/var/qmail', str(home))}"
                   for entry in service_unit["Environment"]]
    log = open(tmp_path / "journal", "wb")
    proc = subprocess.Popen(
        [activator, "-l", f"127.0.0.1:{port}",
         f"--fdname={socket_unit['FileDescriptorName'][0]}", *environment, *command],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={"PATH": "/usr/bin:/bin"})
    try:
        assert smtp_greeting(port) == GREETING
        assert smtp_greeting(port) == GREETING
        text = (tmp_path / "journal").read_text()
        assert text.count("Execing ") == 1       # one tcpserver for every connection
        # `systemctl stop`: SIGQUIT to tcpserver alone; it exits 0.
        os.kill(proc.pid, signal.SIGQUIT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


@pytest.mark.timeout(90)
def test_init_script_with_daemon_and_pidfile(tmp_path, site):
    peer_program("/usr/bin/flock")
    home, rules = site
    port = free_port()
    defaults = tmp_path / "default-smtpd"
    defaults.write_text(
        f"TCPSERVER={VENV_BIN}/tcpserver\nSMTPD={VENV_BIN}/smtpd-child\n"
        f"PIDFILE={tmp_path}/smtpd.pid\nLOG={tmp_path}/smtpd.log\nIP=127.0.0.1\n"
        f"PORT={port}\nSMTPHOST=mx.example.org\nRULES={rules}\nQMAILHOME={home}\n"
        "STOP_TIMEOUT=5\n")
    script = str(DEPLOY / "init.d" / "smtpd")
    env = {"PATH": "/usr/bin:/bin", "SMTPD_DEFAULTS": str(defaults)}

    def run(action):
        return subprocess.run(["sh", script, action], env=env, capture_output=True,
                              text=True, timeout=30)
    assert run("status").returncode == 3
    started = run("start")
    try:
        assert started.returncode == 0, started.stderr
        pid = int((tmp_path / "smtpd.pid").read_text())      # there when start returns
        assert smtp_greeting(port) == GREETING
        status = run("status")
        assert status.returncode == 0 and status.stdout == f"smtpd: running as pid {pid}\n"
        again = run("start")
        assert again.returncode == 111
        assert "is locked: already running as pid %d" % pid in again.stderr
        assert run("stop").returncode == 0
        assert not (tmp_path / "smtpd.pid").exists()
        assert run("status").returncode == 3
        log = (tmp_path / "smtpd.log").read_text()
        # the greeting's session may still be ending when stop is sent
        assert re.search(r"^tcpserver: warning: stopping: waiting for [01] children$", log,
                         re.M)
        assert re.search(r"^tcpserver: ok \d+ mx\.example\.org:127\.0\.0\.1:", log, re.M)
    finally:
        if (tmp_path / "smtpd.pid").exists():
            text = (tmp_path / "smtpd.pid").read_text().strip()
            if text:
                try:
                    os.kill(int(text), signal.SIGKILL)
                except OSError:
                    pass
