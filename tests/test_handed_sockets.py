"""Sockets handed over (`tcpserver [options] - - program`) and --reuseport.

systemd socket activation is exercised with Debian's systemd-socket-activate,
which is what a .socket unit does: it binds, and on the first connection
starts the service with the socket as fd 3 and LISTEN_PID/LISTEN_FDS/
LISTEN_FDNAMES set.
"""

import os
import re
import socket
import subprocess
import time

import pytest

from conftest import our_program, peer_program
from tcpserver_harness import Server, parse_env, read_all

PROGRAM = "#!/bin/sh\nenv | grep -E '^(TCP|PROTO=|LISTEN_|MARK=)'\n"


@pytest.fixture
def env_program(tmp_path):
    program = tmp_path / "env.sh"
    program.write_text(PROGRAM)
    program.chmod(0o755)
    return str(program)


def free_port() -> int:
    # systemd-socket-activate wants a port number, it cannot bind port 0.
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return sock.getsockname()[1]


def talk(port: int, source="127.0.0.1", deadline: float = 10.0) -> bytes:
    """Connect (waiting for the activator to listen), read until EOF."""
    end = time.monotonic() + deadline
    while True:
        try:
            with socket.socket() as sock:
                sock.settimeout(10)
                sock.bind((source, 0))
                sock.connect(("127.0.0.1", port))
                sock.shutdown(socket.SHUT_WR)
                return read_all(sock)
        except ConnectionRefusedError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def activate(tmp_path, listen: list[str], names: str, args: list[str]):
    activator = peer_program("/usr/bin/systemd-socket-activate")
    command = [activator]
    for address in listen:
        command += ["-l", address]
    command += [f"--fdname={names}", "-E", "PATH=/usr/bin:/bin", "-E", "MARK=unit",
                our_program("tcpserver"), *args]
    log = open(tmp_path / "activate.log", "wb")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    return proc, log


def stop(proc, log):
    proc.kill()
    proc.wait(timeout=10)
    log.close()


@pytest.mark.timeout(60)
def test_systemd_socket_activation(tmp_path, env_program):
    port = free_port()
    proc, log = activate(tmp_path, [f"127.0.0.1:{port}"], "smtp",
                         ["-v", "-RH", "-l0", "--fdname", "smtp", "-", "-", env_program])
    try:
        first = parse_env(talk(port))
        second = parse_env(talk(port, source="127.0.0.2"))
    finally:
        stop(proc, log)
    assert first["TCPLOCALPORT"] == str(port) and first["TCPREMOTEIP"] == "127.0.0.1"
    assert second["TCPREMOTEIP"] == "127.0.0.2" and second["MARK"] == "unit"
    # The activation variables are for tcpserver alone, never the programs.
    assert not any(name.startswith("LISTEN_") for name in first)
    text = (tmp_path / "activate.log").read_text()
    assert text.count("Execing ") == 1                      # one server served both


@pytest.mark.timeout(60)
def test_several_sockets_are_chosen_by_name(tmp_path, env_program):
    smtp, submission = free_port(), free_port()
    proc, log = activate(tmp_path, [f"127.0.0.1:{smtp}", f"127.0.0.1:{submission}"],
                         "smtp:submission",
                         ["-RH", "-l0", "--fdname", "submission", "-", "-", env_program])
    try:
        assert parse_env(talk(submission))["TCPLOCALPORT"] == str(submission)
    finally:
        stop(proc, log)
    proc, log = activate(tmp_path, [f"127.0.0.1:{smtp}", f"127.0.0.1:{submission}"],
                         "smtp:submission", ["-RH", "-l0", "-", "-", env_program])
    try:
        assert talk(smtp) == b""        # tcpserver refused to start
        deadline = time.monotonic() + 10
        while "choose one with --fdname" not in (tmp_path / "activate.log").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        stop(proc, log)
    assert ("tcpserver: fatal: 2 sockets handed over (LISTEN_FDS): choose one with "
            "--fdname") in (tmp_path / "activate.log").read_text()


@pytest.mark.timeout(30)
def test_listening_socket_on_fd_0(tmp_path, env_program):
    listener = socket.create_server(("127.0.0.1", 0))
    server = Server(our_program("tcpserver"), ["-v", "-1", "-RH", "-l0", "-", "-", env_program],
                    tmp_path / "fd0.log", env={"PATH": "/usr/bin:/bin"}, stdin=listener)
    listener.close()
    try:
        assert server.port > 0
        for source in ("127.0.0.1", "127.0.0.2"):
            env = parse_env(server.talk(source=source))
            assert env["TCPREMOTEIP"] == source and env["TCPLOCALPORT"] == str(server.port)
    finally:
        server.stop()


@pytest.mark.parametrize("stdin, why", [
    (subprocess.DEVNULL, "no listening socket handed over on fd 0"),
    ("connected", "fd 0 is not a listening TCP socket"),
])
def test_nothing_to_serve_is_fatal(stdin, why, env_program):
    if stdin == "connected":
        stdin, other = socket.socketpair(socket.AF_UNIX)
    proc = subprocess.run([our_program("tcpserver"), "-", "-", env_program], stdin=stdin,
                          capture_output=True, timeout=10)
    assert proc.returncode == 111
    assert proc.stderr.decode().startswith("tcpserver: fatal: " + why)


@pytest.mark.timeout(60)
def test_reuseport_two_servers_share_one_address(tmp_path):
    args = ["-1", "-RH", "-l0", "--reuseport"]
    one = Server(our_program("tcpserver"), [*args, "127.0.0.1", "0", "/bin/echo", "one"],
                 tmp_path / "one.log")
    try:
        two = Server(our_program("tcpserver"),
                     [*args, "127.0.0.1", str(one.port), "/bin/echo", "two"],
                     tmp_path / "two.log")
        try:
            assert two.port == one.port
            seen = set()
            for _ in range(200):
                seen.add(one.talk())
                if len(seen) == 2:
                    break
            assert seen == {b"one\n", b"two\n"}
            # Without --reuseport the address stays taken, as always.
            proc = subprocess.run([our_program("tcpserver"), "127.0.0.1", str(one.port),
                                   "true"], capture_output=True, timeout=10)
            assert proc.returncode == 111
            assert proc.stderr == b"tcpserver: fatal: unable to bind: address already used\n"
        finally:
            two.stop()
    finally:
        one.stop()


@pytest.mark.timeout(60)
def test_xinetd_wait_service_hands_over_its_listening_socket(tmp_path, env_program):
    """An inetd `wait = yes` stream service gets the listening socket on fd 0
    and accepts itself: xinetd starts one tcpserver, which serves every
    connection."""
    xinetd = peer_program("/usr/sbin/xinetd")
    port = free_port()
    conf = tmp_path / "xinetd.conf"
    conf.write_text(f"""
defaults
{{
    log_type = FILE {tmp_path}/xinetd.log
}}
service smtp-wait
{{
    type = UNLISTED
    socket_type = stream
    protocol = tcp
    wait = yes
{"    user = root" if os.geteuid() == 0 else ""}
    bind = 127.0.0.1
    port = {port}
    server = {our_program("tcpserver")}
    server_args = -v -RH -l0 - - {env_program}
    env = PATH=/usr/bin:/bin MARK=xinetd
    log_on_success = PID
}}
""")
    proc = subprocess.Popen([xinetd, "-dontfork", "-pidfile", str(tmp_path / "pid"),
                             "-f", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "stderr", "wb"), start_new_session=True)
    try:
        first = parse_env(talk(port))
        second = parse_env(talk(port, source="127.0.0.2"))
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=10)
        # xinetd starts the service in a session of its own: stop it by pid.
        log = tmp_path / "xinetd.log"
        started = set(re.findall(r"START: smtp-wait pid=(\d+)",
                                 log.read_text() if log.exists() else ""))
        for pid in started:
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
    assert first["TCPLOCALPORT"] == str(port) and first["MARK"] == "xinetd"
    assert second["TCPREMOTEIP"] == "127.0.0.2"
    assert len(started) == 1                  # one tcpserver for both connections
