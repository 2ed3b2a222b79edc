"""IPv6, dual stack and the per-IP limit (-C, MAXCONIP, -M)."""

import re
import socket
import time

import pytest

from conftest import our_program
from tcpserver_harness import Server, parse_env, write_rules_c
from tcpserver_py.rules.keys import encode_value

ENV = {"PATH": "/usr/bin:/bin"}


def has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no ::1 here")


def start(tmp_path, args, name="s"):
    return Server(our_program("tcpserver"), ["-1", "-HRl0", *args], tmp_path / f"{name}.log",
                  env=ENV)


def write_cdb(path, records):
    import cdbx
    maker = cdbx.CDB.make(str(path))
    for key, value in records:
        maker.add(key, value)
    maker.commit().close()
    return str(path)


@needs_ipv6
@pytest.mark.parametrize("banner", [[], ["-B", ""], ["-B", "#"]], ids=["spawn", "spawn2", "banner"])
def test_dual_stack_shows_ipv4_clients_dotted_and_ipv6_clients_as_tcp6(tmp_path, banner):
    rules = write_cdb(tmp_path / "r.cdb", [
        (b"0000:0000:0000:0000:0000:0000:0000:0001", encode_value(False, [(b"WHO", b"v6")])),
        (b"127.0.0.1", encode_value(False, [(b"WHO", b"v4")])),
    ])
    server = start(tmp_path, ["-v", *banner, "-x", rules, "::", "0", "/usr/bin/env"])
    try:
        strip = 1 if banner and banner[1] else 0
        v4 = parse_env(server.talk(source="127.0.0.1", host="127.0.0.1")[strip:])
        v6 = parse_env(server.talk(source="::1", host="::1")[strip:])
    finally:
        server.stop()
    assert v4["PROTO"] == "TCP" and v4["TCPREMOTEIP"] == "127.0.0.1"
    assert v4["TCPLOCALIP"] == "127.0.0.1" and v4["WHO"] == "v4"
    assert not [k for k in v4 if k.startswith("TCP6")]
    assert v6["PROTO"] == "TCP6" and v6["TCPREMOTEIP"] == "::1" and v6["TCPLOCALIP"] == "::1"
    assert v6["TCP6REMOTEIP"] == "::1" and v6["TCP6LOCALIP"] == "::1"
    assert v6["TCP6REMOTEPORT"] == v6["TCPREMOTEPORT"] and v6["TCP6LOCALHOST"] == "0"
    assert v6["WHO"] == "v6"
    log = server.log()
    assert "tcpserver: pid" in log and re.search(r"^tcpserver: pid \d+ from ::1$", log, re.M)
    assert re.search(r"^tcpserver: ok \d+ 0:\[::1\]:\d+ :\[::1\]::\d+$", log, re.M)
    assert re.search(r"^tcpserver: ok \d+ 0:127\.0\.0\.1:\d+ :127\.0\.0\.1::\d+$", log, re.M)


@needs_ipv6
def test_ipv6_only_and_ipv4_only(tmp_path):
    v6only = start(tmp_path, ["-6", "::", "0", "/bin/echo", "x"], "six")
    v4only = start(tmp_path, ["-4", "0", "0", "/bin/echo", "x"], "four")
    try:
        assert v6only.talk(source="::1", host="::1") == b"x\n"
        with pytest.raises(ConnectionRefusedError):
            v6only.talk(host="127.0.0.1")
        assert v4only.talk() == b"x\n"
        with pytest.raises(ConnectionRefusedError):
            v4only.talk(source="::1", host="::1")
    finally:
        v6only.stop()
        v4only.stop()


@needs_ipv6
def test_ipv6_prefix_rule_denies(tmp_path):
    rules = write_cdb(tmp_path / "r.cdb", [(b"0000:0000:", encode_value(True, []))])
    server = start(tmp_path, ["-v", "-x", rules, "::1", "0", "/bin/echo", "x"])
    try:
        assert server.talk(source="::1", host="::1") == b""
        assert server.wait_log(r"^tcpserver: deny \d+ 0:\[::1\]:\d+ :\[::1\]::\d+$")
        assert server.wait_log(r"^tcpserver: end \d+ status 25600$")
    finally:
        server.stop()


def recv_until(sock, suffix):
    data = b""
    while not data.endswith(suffix):
        chunk = sock.recv(100)
        if not chunk:
            break
        data += chunk
    return data


def hold(port, source):
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    return sock


@pytest.mark.parametrize("banner", [[], ["-B", "hi\n"]], ids=["spawn", "banner"])
def test_per_ip_limit_refuses_with_message(tmp_path, banner):
    server = start(tmp_path, ["-v", *banner, "-C", "2", "-M", "421 too many\r\n", "127.0.0.1",
                              "0", "/bin/cat"])
    held = []
    try:
        for _ in range(2):
            held.append(hold(server.port, "127.0.0.1"))
            held[-1].sendall(b"ping\n")
            assert recv_until(held[-1], b"ping\n").endswith(b"ping\n")
        # Without -x no rule can change the limit: the client is refused at
        # once, before the banner (and before any DNS or ident).
        refused = server.talk(source="127.0.0.1")
        assert refused == b"421 too many\r\n"
        assert server.wait_log(r"^tcpserver: limit \d+ from 127\.0\.0\.1 count 3/2$")
        assert server.wait_log(r"^tcpserver: end \d+ status 25600$")
        assert server.talk(b"other\n", source="127.0.0.2").endswith(b"other\n")
        held.pop().close()
        time.sleep(0.3)
        assert server.talk(b"again\n", source="127.0.0.1").endswith(b"again\n")
    finally:
        for s in held:
            s.close()
        server.stop()


def test_maxconip_rule_overrides_the_default(tmp_path):
    rules = write_rules_c(tmp_path, '127.0.0.2:allow,MAXCONIP="1"\n127.0.0.3:allow,MAXCONIP="0"\n')
    server = start(tmp_path, ["-v", "-C", "2", "-x", rules, "127.0.0.1", "0", "/bin/cat"])
    held = []
    try:
        held.append(hold(server.port, "127.0.0.2"))
        held[-1].sendall(b"a\n")
        assert held[-1].recv(10) == b"a\n"
        assert server.talk(b"b\n", source="127.0.0.2") == b""        # rule: 1 per IP
        assert server.wait_log(r"limit \d+ from 127\.0\.0\.2 count 2/1$")
        for _ in range(3):                                          # rule: 0 = unlimited
            held.append(hold(server.port, "127.0.0.3"))
            held[-1].sendall(b"c\n")
            assert held[-1].recv(10) == b"c\n"
    finally:
        for s in held:
            s.close()
        server.stop()


@needs_ipv6
def test_per_ip_count_uses_canonical_address_on_dual_stack(tmp_path):
    server = start(tmp_path, ["-v", "-C", "1", "::", "0", "/bin/cat"])
    held = []
    try:
        held.append(hold(server.port, "127.0.0.1"))   # arrives as ::ffff:127.0.0.1
        held[-1].sendall(b"a\n")
        assert held[-1].recv(10) == b"a\n"
        assert server.talk(b"b\n", source="127.0.0.1") == b""
        assert server.wait_log(r"limit \d+ from 127\.0\.0\.1 count 2/1$")
    finally:
        for s in held:
            s.close()
        server.stop()
