"""tcpserver and tcp-env with --proxy-from, fed hand-made PROXY headers.

The balancer is 127.0.0.1 (the only trusted source); 127.0.0.2 is a direct
client.  The real HAProxy is in test_deploy_haproxy.py.
"""

import ipaddress
import os
import socket
import struct
import subprocess
import time

import pytest

from conftest import our_program
from tcpserver_harness import Server, parse_env, read_all

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
RULES = ('127.0.0.5:allow,MARK="five"\n'
         '127.0.0.6:deny\n'
         '2001:db8::7:allow,MARK="six-seven"\n'
         ':allow,MARK="other"\n')

ENV_PROGRAM = "#!/bin/sh\nenv | grep -E '^(TCP|PROTO=|MARK=)'\necho --\nexec cat\n"


def v1(src, dst, sport=4444, dport=25):
    kind = b"TCP6" if ":" in src else b"TCP4"
    return b"PROXY %s %s %s %d %d\r\n" % (kind, src.encode(), dst.encode(), sport, dport)


def v2(src, dst, sport=4444, dport=25, command=1):
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    body = a.packed + b.packed + struct.pack(">HH", sport, dport)
    family = 0x11 if a.version == 4 else 0x21
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack(">H", len(body)) + body


@pytest.fixture
def setup(tmp_path):
    program = tmp_path / "env.sh"
    program.write_text(ENV_PROGRAM)
    program.chmod(0o755)
    cdb = str(tmp_path / "rules.cdb")
    subprocess.run([our_program("tcprules"), cdb, cdb + ".tmp"], input=RULES.encode(),
                   check=True, timeout=10)
    started = []

    def start(*extra):
        server = Server(our_program("tcpserver"),
                        ["-v", "-1", "-RH", "-x", cdb, "--proxy-from", "127.0.0.1", *extra,
                         "127.0.0.1", "0", str(program)],
                        tmp_path / f"server{len(started)}.log",
                        env={"PATH": "/usr/bin:/bin"})
        started.append(server)
        return server
    yield start
    for server in started:
        server.stop()


def served(output: bytes):
    head, _, data = output.partition(b"--\n")
    return parse_env(head), data


# -l0: the posix_spawn quick path; -B: the parent writes a banner first; -lmx: the
# same with another name; all after the header.
PATHS = [["-l0"], ["-l0", "-Bhello\n"], ["-lmx"]]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("make", [v1, v2])
def test_header_drives_environment_rules_and_log(setup, path, make):
    server = setup(*path)
    out = server.talk(make("127.0.0.5", "192.0.2.25", 40001, 2525) + b"EHLO x\r\n")
    if "-Bhello\n" in path:
        assert out.startswith(b"hello\n")
        out = out[len(b"hello\n"):]
    env, data = served(out)
    assert env["TCPREMOTEIP"] == "127.0.0.5" and env["TCPREMOTEPORT"] == "40001"
    assert env["TCPLOCALIP"] == "192.0.2.25" and env["TCPLOCALPORT"] == "2525"
    assert env["MARK"] == "five"
    assert data == b"EHLO x\r\n"          # not one byte of the client's data lost
    assert server.wait_log(r"^tcpserver: ok \d+ [^:]*:192\.0\.2\.25:2525 :127\.0\.0\.5::40001$")
    assert server.wait_log(r"^tcpserver: pid \d+ from 127\.0\.0\.5$")

    out = server.talk(make("127.0.0.6", "192.0.2.25"))
    assert b"TCPREMOTEIP" not in out
    assert server.wait_log(r"^tcpserver: deny \d+ .* :127\.0\.0\.6::4444$")


@pytest.mark.timeout(30)
def test_ipv6_client_through_ipv4_balancer(setup):
    server = setup("-l0")
    env, _ = served(server.talk(v2("2001:db8::7", "2001:db8::25", 5, 25)))
    assert env["PROTO"] == "TCP6" and env["TCP6REMOTEIP"] == "2001:db8::7"
    assert env["TCPREMOTEIP"] == "2001:db8::7" and env["MARK"] == "six-seven"


@pytest.mark.timeout(30)
def test_local_command_keeps_the_socket_addresses(setup):
    server = setup("-l0")
    local = V2_SIGNATURE + b"\x20\x00\x00\x00"
    env, data = served(server.talk(local + b"health"))
    assert env["TCPREMOTEIP"] == "127.0.0.1" and env["TCPLOCALPORT"] == str(server.port)
    assert env["MARK"] == "other" and data == b"health"


@pytest.mark.timeout(30)
def test_other_sources_are_direct_clients_their_header_is_data(setup):
    server = setup("-l0")
    forged = v1("127.0.0.5", "192.0.2.25")
    env, data = served(server.talk(forged + b"QUIT\r\n", source="127.0.0.2"))
    assert env["TCPREMOTEIP"] == "127.0.0.2" and env["MARK"] == "other"
    assert data == forged + b"QUIT\r\n"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("bad, why", [
    (b"EHLO example.org\r\n", "no PROXY header"),
    (b"PROXY TCP4 127.0.0.5 192.0.2.25 99999 25\r\n", "bad port"),
    (b"PROXY " + b"9" * 120, "longer than 107"),
    (V2_SIGNATURE + b"\x21\x11\xff\xff" + b"\0" * 64, "longer than"),
    (b"PROXY TCP4 127.0.0.5", "truncated"),
    (b"", "no header"),
])
def test_bad_headers_are_dropped_with_one_line_and_no_child(setup, bad, why):
    server = setup("-l0")
    assert server.talk(bad) == b""
    lines = server.wait_log(r"^tcpserver: warning: dropping connection, PROXY header "
                            r"from 127\.0\.0\.1: .*$")
    assert len(lines) == 1 and why in lines[0]
    env, _ = served(server.talk(v1("127.0.0.5", "192.0.2.25")))   # still serving
    assert env["TCPREMOTEIP"] == "127.0.0.5"
    log = server.log()
    assert log.count("tcpserver: pid ") == 1 and log.count("tcpserver: end ") <= 1


@pytest.mark.timeout(30)
def test_slow_header_times_out_while_others_are_served(setup):
    server = setup("-l0", "--proxy-timeout", "2")
    with socket.create_connection(("127.0.0.1", server.port)) as slow:
        slow.sendall(b"PROXY TCP4 ")
        started = time.monotonic()
        env, _ = served(server.talk(v1("127.0.0.5", "192.0.2.25")))
        assert env["MARK"] == "five"
        slow.settimeout(10)
        assert read_all(slow) == b""          # closed by the server
        assert time.monotonic() - started >= 1.5   # not before the deadline
    assert server.wait_log(r"PROXY header from 127\.0\.0\.1: header timed out$")


@pytest.mark.timeout(30)
def test_a_timeout_of_centuries_holds_a_slow_header_and_the_server_lives(setup):
    """Any number is a valid --proxy-timeout; poll() waits a day at a time
    (a wait of centuries once ended the server with a traceback)."""
    server = setup("-l0", "--proxy-timeout", "99999999999999999")
    with socket.create_connection(("127.0.0.1", server.port)) as slow:
        slow.sendall(b"PROXY TCP4 ")
        env, _ = served(server.talk(v1("127.0.0.5", "192.0.2.25")))
        assert env["MARK"] == "five"
        slow.sendall(b"192.0.2.7 127.0.0.1 4444 25\r\n")
        slow.shutdown(socket.SHUT_WR)
        slow.settimeout(10)
        env, _ = served(read_all(slow))
        assert env["TCPREMOTEIP"] == "192.0.2.7"
    assert server.proc.poll() is None
    assert "Traceback" not in server.log()


@pytest.mark.timeout(30)
def test_per_ip_limit_counts_the_carried_address(setup):
    server = setup("-l0", "-C", "1", "-Mbusy\r\n")
    first = socket.create_connection(("127.0.0.1", server.port))
    try:
        first.sendall(v1("127.0.0.5", "192.0.2.25"))
        first.settimeout(5)
        got = b""
        while b"--\n" not in got:                        # running (cat waits)
            chunk = first.recv(4096)
            assert chunk, got
            got += chunk
        assert server.talk(v1("127.0.0.5", "192.0.2.25")) == b"busy\r\n"
        env, _ = served(server.talk(v1("127.0.0.9", "192.0.2.25")))
        assert env["MARK"] == "other"                   # the balancer is not the key
    finally:
        first.close()
    assert server.wait_log(r"^tcpserver: limit \d+ from 127\.0\.0\.5 count 2/1$")


def test_bad_proxy_from_is_a_usage_error():
    proc = subprocess.run([our_program("tcpserver"), "--proxy-from", "10.0.0.0/40", "0", "0",
                           "true"], capture_output=True, timeout=10)
    assert proc.returncode == 100
    assert b"bad address in --proxy-from: 10.0.0.0/40" in proc.stderr


def tcpenv_run(tmp_path, client_bytes, args, source="127.0.0.1"):
    """Run tcp-env on one accepted connection, as inetd would."""
    program = tmp_path / "env.sh"
    program.write_text(ENV_PROGRAM)
    program.chmod(0o755)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.socket()
        client.bind((source, 0))
        client.connect(listener.getsockname())
        conn, _ = listener.accept()
        with client, conn:
            client.sendall(client_bytes)
            client.shutdown(socket.SHUT_WR)
            proc = subprocess.Popen([our_program("tcp-env"), "-RH", "-l0", *args,
                                     str(program)], stdin=conn, stdout=conn,
                                    env={"PATH": "/usr/bin:/bin"})
            conn.close()
            client.settimeout(10)
            out = read_all(client)
            return proc.wait(timeout=10), out


@pytest.mark.timeout(30)
def test_tcp_env_reads_the_header(tmp_path):
    status, out = tcpenv_run(tmp_path, v2("127.0.0.5", "192.0.2.25", 7, 25) + b"MAIL",
                             ["--proxy-from", "127.0.0.0/30"])
    env, data = served(out)
    assert status == 0 and data == b"MAIL"
    assert env["TCPREMOTEIP"] == "127.0.0.5" and env["TCPLOCALIP"] == "192.0.2.25"
    status, out = tcpenv_run(tmp_path, b"garbage\r\n", ["--proxy-from=127.0.0.1"])
    assert status == 111 and out == b""
    status, out = tcpenv_run(tmp_path, v1("127.0.0.5", "192.0.2.25"),
                             ["--proxy-from=127.0.0.1"], source="127.0.0.2")
    env, data = served(out)
    assert env["TCPREMOTEIP"] == "127.0.0.2" and data.startswith(b"PROXY TCP4")


@pytest.mark.timeout(30)
def test_names_are_looked_up_for_the_carried_address(tmp_path):
    from fakedns import A, PTR, FakeDNS
    dns = FakeDNS({("9.0.0.127.in-addr.arpa", PTR): ["proxied.example.org"],
                   ("proxied.example.org", A): ["127.0.0.9"]})
    cdb = str(tmp_path / "names.cdb")
    subprocess.run([our_program("tcprules"), cdb, cdb + ".tmp"],
                   input=b'=proxied.example.org:allow,MARK="by-name"\n:allow\n',
                   check=True, timeout=10)
    server = Server(our_program("tcpserver"),
                    ["-1", "-p", "-R", "-l0", "-x", cdb, "--proxy-from", "127.0.0.1",
                     "127.0.0.1", "0", "/usr/bin/env"], tmp_path / "dns.log",
                    env={"PATH": "/usr/bin:/bin", "DNSCACHEIP": "127.0.0.1"})
    try:
        env = parse_env(server.talk(v2("127.0.0.9", "192.0.2.25")))
    finally:
        server.stop()
        dns.close()
    assert env["TCPREMOTEHOST"] == "proxied.example.org" and env["MARK"] == "by-name"
    assert ("9.0.0.127.in-addr.arpa", PTR) in dns.queries
    assert ("1.0.0.127.in-addr.arpa", PTR) not in dns.queries     # not the balancer


@pytest.mark.timeout(30)
def test_held_connections_count_against_the_limit(setup):
    server = setup("-l0", "-c", "1", "--proxy-timeout", "2")
    with socket.create_connection(("127.0.0.1", server.port)) as silent:
        time.sleep(0.3)                      # accepted and held: the one slot
        waiting = socket.create_connection(("127.0.0.1", server.port))
        with waiting:
            waiting.sendall(v1("127.0.0.5", "192.0.2.25"))
            waiting.shutdown(socket.SHUT_WR)
            waiting.settimeout(15)
            out = read_all(waiting)          # served once the silent one is dropped
        silent.settimeout(5)
        assert read_all(silent) == b""
    assert served(out)[0]["TCPREMOTEIP"] == "127.0.0.5"
    log = server.log()
    assert log.index("header timed out") < log.index("tcpserver: pid ")
