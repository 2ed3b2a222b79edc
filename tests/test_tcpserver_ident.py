"""Ident (-r) side by side with the C tcpserver, against a fake identd on
127.0.0.x:113 (needs root for port 113; skipped otherwise)."""

import socket
import threading
import time

import pytest

from conftest import our_program, peer_program
from fakeident import ident_listener
from tcpserver_harness import Server, normalise_log, parse_env, write_rules_c

ANSWERS = {
    "127.0.0.1": b" : USERID : UNIX : joe\r\n",
    "127.0.0.2": b" : ERROR : NO-USER\r\n",          # two colons: empty value, still set
    "127.0.0.3": b" : USERID : UNIX :  j o:e\tx\r\n",
    "127.0.0.5": None,                               # never answers
    "127.0.0.6": b" : USERID : UNIX : jo\0e\r\n",    # a NUL: the C tcpserver keeps "jo"
}
RULES = ('joe@127.0.0.1:allow,WHO="joe"\n'
         '@127.0.0.2:allow,WHO="empty"\n'
         'jo@127.0.0.6:allow,WHO="jo"\n'
         ':allow,WHO="default"\n')


class FakeIdentd:
    def __init__(self):
        self.requests = []
        self.listeners = []
        for ip in ANSWERS:
            sock = ident_listener(ip, self.close)
            self.listeners.append(sock)
            threading.Thread(target=self.serve, args=(sock, ANSWERS[ip]), daemon=True).start()

    def serve(self, sock, answer):
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    line = conn.recv(100)
                    self.requests.append(line)
                    if answer is None:
                        time.sleep(3)
                        continue
                    conn.sendall(line.strip() + answer)
                except OSError:
                    pass

    def close(self):
        for sock in self.listeners:
            try:
                sock.shutdown(socket.SHUT_RDWR)   # wakes the accept() in its thread
            except OSError:
                pass
            sock.close()


@pytest.fixture
def identd():
    fake = FakeIdentd()
    yield fake
    fake.close()


def test_ident_matches_c_tcpserver(tmp_path, identd):
    cdb = write_rules_c(tmp_path, RULES)
    args = ["-v", "-1", "-H", "-l0", "-r", "-t", "5", "-x", cdb, "127.0.0.1", "0", "/usr/bin/env"]
    envs = {}
    logs = {}
    for name, exe in (("c", peer_program("/usr/bin/tcpserver")), ("ours", our_program("tcpserver"))):
        server = Server(exe, args, tmp_path / f"{name}.log", env={"PATH": "/usr/bin:/bin"})
        try:
            envs[name] = {src: parse_env(server.talk(source=src))
                          for src in ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4",
                                      "127.0.0.6")}
            server.wait_served(5)
            logs[name] = normalise_log(server.log())
        finally:
            server.stop()
    for src in envs["c"]:
        strip = lambda e: {k: v for k, v in e.items() if not k.endswith("PORT")}
        assert strip(envs["ours"][src]) == strip(envs["c"][src]), src
    ours = envs["ours"]
    assert ours["127.0.0.1"]["TCPREMOTEINFO"] == "joe" and ours["127.0.0.1"]["WHO"] == "joe"
    assert ours["127.0.0.2"]["TCPREMOTEINFO"] == "" and ours["127.0.0.2"]["WHO"] == "empty"
    assert ours["127.0.0.3"]["TCPREMOTEINFO"] == "jo:ex"
    assert "TCPREMOTEINFO" not in ours["127.0.0.4"]          # refused
    # A NUL in the answer: the part before it, in the environment, the
    # rules key and the log line alike (never a dropped connection).
    assert ours["127.0.0.6"]["TCPREMOTEINFO"] == "jo" and ours["127.0.0.6"]["WHO"] == "jo"
    assert "tcpserver: ok PID 0:127.0.0.1:PORT :127.0.0.6:jo:PORT" in logs["ours"]
    assert logs["ours"] == logs["c"]
    assert "tcpserver: ok PID 0:127.0.0.1:PORT :127.0.0.3:jo?ex:PORT" in logs["ours"]
    # the request is "CLIENTPORT , SERVERPORT\r\n"
    assert all(req.endswith(b"\r\n") and b" , " in req for req in identd.requests)


def test_ident_deadline(tmp_path, identd):
    server = Server(our_program("tcpserver"),
                    ["-1", "-H", "-l0", "-t", "1", "127.0.0.1", "0", "/usr/bin/env"],
                    tmp_path / "s.log", env={"PATH": "/usr/bin:/bin"})
    try:
        result = {}

        def slow_client():
            started = time.monotonic()
            result["env"] = parse_env(server.talk(source="127.0.0.5"))
            result["took"] = time.monotonic() - started

        thread = threading.Thread(target=slow_client)
        thread.start()
        time.sleep(0.1)
        started = time.monotonic()   # meanwhile another client is served at once
        assert parse_env(server.talk(source="127.0.0.1"))["TCPREMOTEINFO"] == "joe"
        assert time.monotonic() - started < 0.8
        thread.join(timeout=10)
        assert "TCPREMOTEINFO" not in result["env"] and result["env"]["PROTO"] == "TCP"
        assert 0.8 < result["took"] < 2.9, result["took"]
    finally:
        server.stop()


@pytest.mark.parametrize("reply, value", [
    (b"4000 , 25 : USERID : UNIX : joe\r\n", b"joe"),
    (b"4000 , 25 : ERROR : NO-USER\r\n", b""),
    (b"4000,25:USERID:UNIX: j o:e\tx\r\n", b"jo:ex"),
    (b"4000 , 25 : USERID : UNIX,UTF-8 : r\xc3\xa9mi\r\n", b"r\xc3\xa9mi"),
    (b"1:2:3:" + b"a" * 300 + b"\n", b"a" * 256),
    (b"no colons at all\n", b""),
    (b"1:2:3:ab\0cd\r\n", b"ab"),
    (b"1:2:3:\0cd\r\n", b""),
])
def test_parse_ident_reply(reply, value):
    from tcpserver_py.net.lookup import parse_ident_reply
    assert parse_ident_reply(reply) == value


def test_ident_nul_under_tcp_env(identd):
    from test_tcpenv import run_tcpenv
    status, out, _, _ = run_tcpenv(["-H", "-l0", "-t5", "/usr/bin/env"], source="127.0.0.6")
    assert status == 0 and parse_env(out)["TCPREMOTEINFO"] == "jo"
