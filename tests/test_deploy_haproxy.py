"""The real HAProxy in front of tcpserver --proxy-from (docs/deploy/haproxy.md).

HAProxy gets its listening socket from the test (`bind fd@N`), so its port
is one the kernel chose; the clients connect from 127.0.0.5, the rules give
127.0.0.5 its own variable, and what the program sees must be that client,
not the balancer.
"""

import socket
import subprocess
import time

import pytest

from conftest import our_program, peer_program
from tcpserver_harness import Server, parse_env, read_all

RULES = '127.0.0.5:allow,MARK="five"\n:allow,MARK="other"\n'
PROGRAM = "#!/bin/sh\nenv | grep -E '^(TCP|PROTO=|MARK=)'\necho --\nexec cat\n"


class HAProxy:
    def __init__(self, tmp_path, servers: str, name="haproxy"):
        haproxy = peer_program("/usr/sbin/haproxy")
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        conf = tmp_path / f"{name}.cfg"
        conf.write_text(f"""\
global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend smtp
    bind fd@{self.listener.fileno()}
    default_backend mx
backend mx
    balance roundrobin
{servers}""")
        self.log = open(tmp_path / f"{name}.log", "wb")
        self.proc = subprocess.Popen([haproxy, "-db", "-f", str(conf)],
                                     pass_fds=(self.listener.fileno(),),
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.listener.close()      # haproxy has its copy

    def talk(self, data: bytes, source="127.0.0.5") -> bytes:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as sock:
                sock.settimeout(10)
                sock.bind((source, 0))
                sock.connect(("127.0.0.1", self.port))
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
                out = read_all(sock)
            # Until its first check, HAProxy may close at once: try again.
            if out or time.monotonic() > deadline:
                return out
            time.sleep(0.1)

    def stop(self):
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture
def fleet(tmp_path):
    program = tmp_path / "env.sh"
    program.write_text(PROGRAM)
    program.chmod(0o755)
    cdb = str(tmp_path / "rules.cdb")
    subprocess.run([our_program("tcprules"), cdb, cdb + ".tmp"], input=RULES.encode(),
                   check=True, timeout=10)
    started = []

    def tcpserver(host, name):
        server = Server(our_program("tcpserver"),
                        ["-v", "-1", "-RH", "-lmx", "-x", cdb,
                         "--proxy-from", "127.0.0.1,::1", host, "0", str(program)],
                        tmp_path / f"{name}.log", env={"PATH": "/usr/bin:/bin"})
        started.append(server)
        return server

    def haproxy(servers, name="haproxy"):
        proxy = HAProxy(tmp_path, servers, name)
        started.append(proxy)
        return proxy
    yield tcpserver, haproxy
    for thing in started:
        thing.stop()


def served(output: bytes):
    head, _, data = output.partition(b"--\n")
    return parse_env(head), data


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["127.0.0.1", "::1"])
@pytest.mark.parametrize("send", ["send-proxy", "send-proxy-v2"])
def test_client_address_reaches_the_program(fleet, backend, send):
    start_tcpserver, start_haproxy = fleet
    server = start_tcpserver(backend, "mx")
    address = f"[{backend}]" if ":" in backend else backend
    proxy = start_haproxy(f"    server mx {address}:{server.port} {send}\n")
    env, data = served(proxy.talk(b"EHLO client.example\r\n"))
    assert env["TCPREMOTEIP"] == "127.0.0.5" and env["MARK"] == "five"
    assert env["PROTO"] == "TCP"
    assert env["TCPLOCALIP"] == "127.0.0.1" and env["TCPLOCALPORT"] == str(proxy.port)
    assert data == b"EHLO client.example\r\n"
    assert server.wait_log(r"^tcpserver: ok \d+ mx:127\.0\.0\.1:\d+ :127\.0\.0\.5::\d+$")
    env, _ = served(proxy.talk(b"", source="127.0.0.1"))
    assert env["TCPREMOTEIP"] == "127.0.0.1" and env["MARK"] == "other"


@pytest.mark.timeout(60)
def test_fleet_two_tcpservers_behind_send_proxy_v2_with_health_checks(fleet):
    start_tcpserver, start_haproxy = fleet
    one, two = start_tcpserver("127.0.0.1", "mx1"), start_tcpserver("::1", "mx2")
    proxy = start_haproxy(
        f"    server mx1 127.0.0.1:{one.port} send-proxy-v2 check inter 300ms "
        f"check-send-proxy\n"
        f"    server mx2 [::1]:{two.port} send-proxy-v2 check inter 300ms "
        f"check-send-proxy\n")
    for _ in range(6):
        env, _ = served(proxy.talk(b"QUIT\r\n"))
        assert env["TCPREMOTEIP"] == "127.0.0.5" and env["MARK"] == "five"
    for server in (one, two):
        assert len(server.wait_log(r"^tcpserver: pid \d+ from 127\.0\.0\.5$", count=3)) == 3
        # HAProxy's health checks send a v2 LOCAL header: the balancer's own
        # connection, served with the socket's addresses.
        assert server.wait_log(r"^tcpserver: pid \d+ from (127\.0\.0\.1|::1)$")
    assert "PROXY header" not in one.log() + two.log()
