"""tcpserver side by side with the C tcpserver: environment, logs, rules.

Both servers get the same arguments, the same rules cdb and the same
clients (127.0.0.1 and 127.0.0.2); what the child sees and what the server
logs must agree, but for pids and ports.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import our_program, peer_program
from tcpserver_harness import Server, normalise_log, parse_env, write_rules_c
from tcpserver_py.options import USAGE

C_USAGE = (b"tcpserver: usage: tcpserver [ -1UXpPhHrRoOdDqQv ] [ -c limit ] "
           b"[ -x rules.cdb ] [ -B banner ] [ -g gid ] [ -u uid ] [ -b backlog ] "
           b"[ -l localname ] [ -t timeout ] host port program")

PARENT_ENV = {
    "PATH": "/usr/bin:/bin", "KEEP": "inherited",
    # -H and -R must remove these even though the parent has them.
    "TCPREMOTEHOST": "spoofed.example", "TCPREMOTEINFO": "spoofed",
}

RULES = (
    '127.0.0.1:allow,RELAYCLIENT="",TCPLOCALHOST="mx.example.org",A="1",A="2"\n'
    '127.0.0.2:allow,WHO="two",TCPREMOTEIP="10.9.9.9",URL="http://x:80/a=b"\n'
    '127.0.0.3:deny,WHO="denied"\n'
    ':allow,WHO="default"\n'
)


def servers(tmp_path, args, env=PARENT_ENV):
    """Start the C server and ours with the same arguments."""
    started = {}
    try:
        for name, exe in (("c", peer_program("/usr/bin/tcpserver")),
                          ("ours", our_program("tcpserver"))):
            started[name] = Server(exe, args, tmp_path / f"{name}.log", env=env)
    except BaseException:
        for server in started.values():
            server.stop()
        raise
    return started


@pytest.fixture
def pair(tmp_path):
    made = []

    def start(args, env=PARENT_ENV):
        both = servers(tmp_path, args, env)
        made.extend(both.values())
        return both
    yield start
    for server in made:
        server.stop()


def strip_ports(env):
    return {k: v for k, v in env.items() if k not in ("TCPLOCALPORT", "TCPREMOTEPORT")}


# Our server starts the program from the parent (posix_spawn); with a
# banner the parent writes it first (server/lookupwait.py).  Both must look
# the same from outside as the C tcpserver's forked child.
BANNER_PATHS = pytest.mark.parametrize("banner", [[], ["-B", "#\n"]], ids=["spawn", "banner"])


def without_banner(output: bytes, banner) -> bytes:
    if banner:
        assert output.startswith(b"#\n")
        return output[2:]
    return output


@BANNER_PATHS
def test_child_environment_matches_c_tcpserver(pair, tmp_path, banner):
    cdb = write_rules_c(tmp_path, RULES)
    both = pair(["-v", "-1", "-HRl0", *banner, "-x", cdb, "127.0.0.1", "0", "/usr/bin/env"])
    seen = {}
    for name, server in both.items():
        seen[name] = {src: parse_env(without_banner(server.talk(source=src), banner))
                      for src in ("127.0.0.1", "127.0.0.2", "127.0.0.4")}
    for src in ("127.0.0.1", "127.0.0.2", "127.0.0.4"):
        assert strip_ports(seen["ours"][src]) == strip_ports(seen["c"][src]), src
    one = seen["ours"]["127.0.0.1"]
    assert one["A"] == "2" and one["RELAYCLIENT"] == "" and one["TCPLOCALHOST"] == "mx.example.org"
    assert "TCPREMOTEHOST" not in one and "TCPREMOTEINFO" not in one
    assert one["KEEP"] == "inherited" and one["PROTO"] == "TCP"
    assert one["TCPLOCALPORT"] == str(both["ours"].port)
    two = seen["ours"]["127.0.0.2"]
    assert two["TCPREMOTEIP"] == "10.9.9.9" and two["URL"] == "http://x:80/a=b"
    assert seen["ours"]["127.0.0.4"]["WHO"] == "default"
    assert "LC_CTYPE" not in one   # nothing added by the interpreter


@pytest.mark.parametrize("banner", [b"", b"hello\r\n"], ids=["spawn", "banner"])
def test_log_lines_match_c_tcpserver(pair, tmp_path, banner):
    cdb = write_rules_c(tmp_path, RULES)
    both = pair(["-v", "-1", "-HR", "-l", "a:b%c d", "-B", banner.decode(), "-x", cdb,
                 "127.0.0.1", "0", "/bin/echo", "served"])
    for server in both.values():
        assert server.talk(source="127.0.0.1") == banner + b"served\n"
        assert server.talk(source="127.0.0.3") == banner      # deny: banner only
        server.wait_served(2)
    ours, c = normalise_log(both["ours"].log()), normalise_log(both["c"].log())
    assert ours == c
    assert "tcpserver: deny PID a?b?c?d:127.0.0.1:PORT :127.0.0.3::PORT" in ours
    assert "tcpserver: end PID status 25600" in ours


def test_host_0_serves_ipv4_clients_exactly_like_c(pair):
    both = pair(["-v", "-1", "-HRl0", "0", "0", "/usr/bin/env"])
    envs = {name: parse_env(server.talk(source="127.0.0.2")) for name, server in both.items()}
    for server in both.values():
        server.wait_served(1)
    assert strip_ports(envs["ours"]) == strip_ports(envs["c"])
    assert envs["ours"]["TCPREMOTEIP"] == "127.0.0.2" and envs["ours"]["PROTO"] == "TCP"
    assert normalise_log(both["ours"].log()) == normalise_log(both["c"].log())


@pytest.mark.parametrize("host", ["0", ""])
def test_host_0_is_ipv4_only_as_in_ucspi_tcp(tmp_path, host):
    # ucspi-tcp 0.88 binds 0.0.0.0 for host 0: a migrated run script must
    # not start serving IPv6 clients (whose addresses no IPv4 rule covers).
    server = Server(our_program("tcpserver"), ["-1", "-HRl0", host, "0", "/bin/echo", "hi"],
                    tmp_path / "s.log", env=PARENT_ENV)
    try:
        bound = [line.split() for line in open("/proc/net/tcp6").read().splitlines()[1:]]
        assert not [f for f in bound if f[1].endswith(":%04X" % server.port) and f[3] == "0A"]
        assert server.talk(source="127.0.0.1") == b"hi\n"
        if socket.has_ipv6:
            with pytest.raises(OSError):
                server.talk(source="::1", host="::1")
    finally:
        server.stop()


def test_dual_stack_only_when_asked_for(tmp_path):
    try:
        socket.socket(socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 in this kernel")
    server = Server(our_program("tcpserver"), ["-1", "-HRl0", "::", "0", "/usr/bin/env"],
                    tmp_path / "s.log", env=PARENT_ENV)
    try:
        assert parse_env(server.talk(source="127.0.0.2"))["TCPREMOTEIP"] == "127.0.0.2"
        assert parse_env(server.talk(source="::1", host="::1"))["TCPREMOTEIP"] == "::1"
    finally:
        server.stop()


@pytest.mark.parametrize("extra", [[], ["-X"], ["-v", "-p"]])
def test_missing_rules_file(pair, tmp_path, extra):
    missing = str(tmp_path / "nope.cdb")
    both = pair(["-v", "-1", "-HRl0", *extra, "-x", missing, "127.0.0.1", "0",
                 "/bin/echo", "in"])
    for server in both.values():
        expected = b"in\n" if "-X" in extra else b""
        assert server.talk() == expected
        server.wait_served(1)
    assert normalise_log(both["ours"].log()) == normalise_log(both["c"].log())
    if "-X" not in extra:
        assert (f"tcpserver: warning: dropping connection, unable to read {missing}: "
                "file does not exist") in both["ours"].log()
        assert "status 28416" in both["ours"].log()


@pytest.mark.parametrize("extra", [[], ["-X"]])
def test_corrupt_rules_file_is_dropped_even_with_X(pair, tmp_path, extra):
    bad = tmp_path / "bad.cdb"
    bad.write_bytes(b"\x01\x02garbage")
    both = pair(["-v", "-1", "-HRl0", *extra, "-x", str(bad), "127.0.0.1", "0",
                 "/bin/echo", "in"])
    for server in both.values():
        assert server.talk() == b""
        server.wait_served(1)
    log = both["ours"].log()
    assert f"unable to read {bad}: protocol error" in log
    assert normalise_log(log) == normalise_log(both["c"].log())


def test_unreadable_rules_directory_is_dropped(pair, tmp_path):
    both = pair(["-1", "-HRl0", "-X", "-x", str(tmp_path), "127.0.0.1", "0",
                 "/bin/echo", "in"])
    ours = both["ours"]
    assert ours.talk() == b""
    assert ours.wait_log(r"dropping connection, unable to read .*: (is a directory|protocol error)")


@BANNER_PATHS
def test_exec_failure(pair, tmp_path, banner):
    both = pair(["-v", "-1", "-HRl0", *banner, "127.0.0.1", "0", "/nonexistent/prog"])
    for server in both.values():
        assert server.talk() == (b"#\n" if banner else b"")
        server.wait_served(1)
    log = both["ours"].log()
    assert ("tcpserver: warning: dropping connection, unable to run /nonexistent/prog: "
            "file does not exist") in log
    assert "status 28416" in log
    assert normalise_log(log) == normalise_log(both["c"].log())


def test_c_tcpserver_reads_a_cdb_written_with_our_encoding(tmp_path, peer):
    cdbx = pytest.importorskip("cdbx")
    from tcpserver_py.rules.keys import encode_value
    path = tmp_path / "ours.cdb"
    maker = cdbx.CDB.make(str(path))
    maker.add(b"127.0.0.1", encode_value(False, [(b"WHO", b"ours"), (b"RELAYCLIENT", b"")]))
    maker.add(b"127.0.0.2", encode_value(True, []))
    maker.commit().close()
    c = Server(peer("/usr/bin/tcpserver"),
               ["-1", "-HRl0", "-x", str(path), "127.0.0.1", "0", "/usr/bin/env"],
               tmp_path / "c.log", env=PARENT_ENV)
    try:
        env = parse_env(c.talk())
        assert env["WHO"] == "ours" and env["RELAYCLIENT"] == ""
        assert c.talk(source="127.0.0.2") == b""
    finally:
        c.stop()


def test_cat_and_mailfront_children(tmp_path, peer):
    mailfront = peer("/usr/sbin/mailfront")
    cat = Server(our_program("tcpserver"), ["-1", "-HRl0", "127.0.0.1", "0", "/bin/cat"],
                 tmp_path / "cat.log", env=PARENT_ENV)
    smtp = Server(our_program("tcpserver"),
                  ["-1", "-HR", "-l", "mx.example.org", "127.0.0.1", "0",
                   mailfront, "smtp", "echo", "accept"], tmp_path / "mf.log", env=PARENT_ENV)
    try:
        payload = bytes(range(256)) * 400
        assert cat.talk(payload) == payload
        dialogue = (b"HELO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n"
                    b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        reply = smtp.talk(dialogue).decode()
        assert reply.startswith("220 mx.example.org mailfront ESMTP\r\n")
        assert "250 Received" in reply and reply.endswith("221 2.0.0 Good bye.\r\n")
    finally:
        cat.stop()
        smtp.stop()


def test_concurrency_limit_defers_accept(tmp_path):
    server = Server(our_program("tcpserver"),
                    ["-v", "-1", "-HRl0", "-c", "2", "-B", "hi\n", "127.0.0.1", "0", "/bin/cat"],
                    tmp_path / "s.log", env=PARENT_ENV)
    socks = []
    try:
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            socks.append(s)
        assert socks[0].recv(3) == b"hi\n" and socks[1].recv(3) == b"hi\n"
        socks[2].settimeout(0.7)
        with pytest.raises(socket.timeout):
            socks[2].recv(3)     # waits in the backlog: not accepted, not closed
        socks[0].close()
        socks[2].settimeout(5)
        assert socks[2].recv(3) == b"hi\n"
        statuses = server.wait_log(r"^tcpserver: status: (\d+)/2$", count=6)
        assert max(int(n) for n in statuses) == 2
    finally:
        for s in socks:
            s.close()
        server.stop()


@pytest.mark.parametrize("flag, nodelay", [("-d", 0), ("-D", 1)])
def test_nodelay_option_matches_c(pair, flag, nodelay):
    probe = ("import socket; s = socket.socket(fileno=0); "
             "print(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))")
    both = pair(["-1", "-HRl0", flag, "127.0.0.1", "0", sys.executable, "-c", probe])
    for server in both.values():
        assert server.talk() == b"%d\n" % nodelay


def test_limit_zero_never_accepts(tmp_path):
    server = Server(our_program("tcpserver"), ["-1", "-HRl0", "-c", "0", "127.0.0.1", "0",
                                               "/bin/echo", "x"], tmp_path / "s.log", env=PARENT_ENV)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.settimeout(0.5)
            with pytest.raises(socket.timeout):   # held in the backlog, never served
                s.recv(10)
        assert not os.path.exists(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children") \
            or open(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read() == ""
    finally:
        server.stop()


def test_sigterm_exits_0_and_children_keep_running(tmp_path):
    server = Server(our_program("tcpserver"), ["-1", "-HRl0", "127.0.0.1", "0", "/bin/cat"],
                    tmp_path / "s.log", env=PARENT_ENV)
    try:
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        s.sendall(b"before\n")
        assert s.recv(7) == b"before\n"
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=5) == 0
        s.sendall(b"after\n")           # the child outlives its parent
        assert s.recv(6) == b"after\n"
        s.close()
    finally:
        server.stop()


@pytest.mark.parametrize("argv", [
    ["-Z"], ["-c"], ["-v"], ["0", "1"], ["-q"], ["-q", "-Z"], ["-HRl0", "0"],
    ["-q", "0", "nosuchport", "x"], ["0", "nosuchport", "x"], ["nosuch.invalid", "0", "x"],
])
def test_usage_and_fatal_messages_match_c(argv, peer):
    c = subprocess.run([peer("/usr/bin/tcpserver"), *argv], capture_output=True, timeout=10)
    ours = subprocess.run([our_program("tcpserver"), *argv], capture_output=True, timeout=10)
    # The one difference: our usage line also lists our extensions.
    assert (ours.returncode, ours.stderr.replace(USAGE.encode(), C_USAGE)) == \
        (c.returncode, c.stderr)
    assert ours.returncode in (100, 111)


@pytest.mark.parametrize("option", ["--help", "--version"])
def test_help_and_version_are_not_usage_errors(option, peer):
    for argv in ([option], ["-v", option, "0", "25", "/bin/true"]):
        ours = subprocess.run([our_program("tcpserver"), *argv], capture_output=True,
                              timeout=10)
        assert (ours.returncode, ours.stderr) == (0, b"")
        assert ours.stdout.startswith(b"usage: tcpserver" if option == "--help"
                                      else b"tcpserver-py ")
    # To the C tcpserver --help is an illegal option (exit 100).
    c = subprocess.run([peer("/usr/bin/tcpserver"), option], capture_output=True, timeout=10)
    assert c.returncode == 100 and c.stderr.endswith(C_USAGE + b"\n")


def test_bind_in_use_is_fatal_like_c(peer):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = str(holder.getsockname()[1])
        argv = ["-HRl0", "127.0.0.1", port, "/bin/true"]
        c = subprocess.run([peer("/usr/bin/tcpserver"), *argv], capture_output=True, timeout=10)
        ours = subprocess.run([our_program("tcpserver"), *argv], capture_output=True, timeout=10)
    assert ours.stderr == b"tcpserver: fatal: unable to bind: address already used\n"
    assert (ours.returncode, ours.stderr) == (c.returncode, c.stderr) == (111, ours.stderr)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to change uid")
def test_uid_and_gid_dropped_after_bind(tmp_path):
    server = Server(our_program("tcpserver"),
                    ["-1", "-HRl0", "-u", "65534", "-g", "65533", "127.0.0.1", "0",
                     "/bin/sh", "-c", "id -u; id -g; id -G"], tmp_path / "s.log", env=PARENT_ENV)
    try:
        assert server.talk().split() == [b"65534", b"65533", b"65533"]
        status = open(f"/proc/{server.proc.pid}/status").read()
        assert "\nUid:\t65534\t65534\t65534\t65534" in status
    finally:
        server.stop()


@BANNER_PATHS
def test_child_signal_dispositions_match_c(pair, banner):
    # CPython ignores SIGPIPE and SIGXFSZ; the program must not inherit that.
    both = pair(["-1", "-HRl0", *banner, "127.0.0.1", "0",
                 "/bin/grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"])
    ours = parse_masks(without_banner(both["ours"].talk(), banner))
    c = parse_masks(without_banner(both["c"].talk(), banner))
    # Signals 1-31 only: glibc's posix_spawn leaves its internal 32 and 33 as
    # they were (see server/direct.py), and both servers inherit whatever dispositions
    # for those the test runner itself was started with.
    standard = (1 << 31) - 1
    ours = {k: v & standard for k, v in ours.items()}
    assert ours == {k: v & standard for k, v in c.items()}
    sigpipe, sigxfsz = 1 << (signal.SIGPIPE - 1), 1 << (signal.SIGXFSZ - 1)
    assert ours["SigIgn"] & (sigpipe | sigxfsz) == 0 and ours["SigBlk"] == 0


def parse_masks(output):
    return {line.split(":")[0]: int(line.split()[1], 16)
            for line in output.decode().splitlines()}


def test_quiet_and_default_verbosity(tmp_path):
    for flag, expect_warning in (("-q", False), ("-Q", True)):
        server = Server(our_program("tcpserver"),
                        ["-1", flag, "-HRl0", "127.0.0.1", "0", "/nonexistent"],
                        tmp_path / f"{flag}.log", env=PARENT_ENV)
        try:
            server.talk()
            time.sleep(0.3)
            log = server.log()
            assert ("unable to run" in log) == expect_warning
            assert "status:" not in log and "pid" not in log
        finally:
            server.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to change uid")
@BANNER_PATHS
def test_fork_failure_is_logged_and_server_lives(tmp_path, banner):
    import resource

    def two_processes():   # the server and one child, for an otherwise unused uid
        resource.setrlimit(resource.RLIMIT_NPROC, (2, 2))
    # A uid no other process has (not even one still being reaped from an
    # earlier run), so the limit of two processes is all ours.
    uid = str(40000 + (os.getpid() * 2 + bool(banner) + int(time.time())) % 20000)
    server = Server(our_program("tcpserver"),
                    ["-v", "-1", "-HRl0", *banner, "-u", uid, "-g", uid, "127.0.0.1",
                     "0", "/bin/cat"], tmp_path / "s.log", env=PARENT_ENV,
                    preexec_fn=two_processes)
    prefix = b"#\n" if banner else b""
    try:
        first = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        first.sendall(b"one\n")
        got = b""
        while not got.endswith(b"one\n"):
            got += first.recv(100)
        # No process to serve it.  The banner, written by the parent before
        # any process is started, has reached it (the C tcpserver's child
        # writes it, so there the client gets nothing): docs/tcpserver.md.
        assert server.talk(b"two\n") == prefix
        assert server.wait_log(r"^tcpserver: warning: dropping connection, unable to fork: "
                               r"temporary failure$")
        first.close()
        server.wait_log(r"^tcpserver: end \d+ status 0$")
        assert server.talk(b"three\n") == prefix + b"three\n"
        assert server.proc.poll() is None
        statuses = [int(n) for n in server.wait_log(r"^tcpserver: status: (\d+)/40$", count=6)]
        assert statuses[:4] == [0, 1, 2, 1]   # counted, then given back on failure
    finally:
        server.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to bind a low port")
def test_binds_a_privileged_port_before_dropping_privileges(tmp_path):
    for port in range(1023, 900, -1):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
                break
            except OSError:
                continue
    else:
        pytest.skip("no free port below 1024")
    server_log = tmp_path / "s.log"
    proc = subprocess.Popen([our_program("tcpserver"), "-HRl0", "-u", "65534", "-g", "65534",
                             "127.0.0.1", str(port), "/usr/bin/id", "-u"],
                            stderr=open(server_log, "wb"), env=PARENT_ENV, start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    assert s.recv(100) == b"65534\n"
                    break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline and proc.poll() is None, server_log.read_text()
                time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_both_servers_follow_a_cdb_from_our_tcprules(pair, tmp_path):
    cdb = str(tmp_path / "ours.cdb")
    subprocess.run([our_program("tcprules"), cdb, cdb + ".tmp"], input=RULES.encode(),
                   check=True, timeout=30)
    both = pair(["-1", "-HRl0", "-x", cdb, "127.0.0.1", "0", "/usr/bin/env"])
    for server in both.values():
        one = parse_env(server.talk(source="127.0.0.1"))
        assert one["A"] == "2" and one["RELAYCLIENT"] == ""
        assert parse_env(server.talk(source="127.0.0.2"))["WHO"] == "two"
        assert server.talk(source="127.0.0.3") == b""
        assert parse_env(server.talk(source="127.0.0.4"))["WHO"] == "default"


def test_started_with_stdin_closed(tmp_path):
    log = open(tmp_path / "s.log", "wb")
    proc = subprocess.Popen(
        ["/bin/sh", "-c", f'exec {our_program("tcpserver")} -1 -HRl0 127.0.0.1 0 /bin/echo ok <&-'],
        stdout=subprocess.PIPE, stderr=log, env=PARENT_ENV, start_new_session=True)
    try:
        port = int(proc.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            assert s.recv(10) == b"ok\n"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
        log.close()


def test_rules_path_that_is_a_fifo_never_blocks_the_server(tmp_path):
    fifo = tmp_path / "rules.cdb"
    os.mkfifo(fifo)
    server = Server(our_program("tcpserver"),
                    ["-v", "-1", "-HRl0", "-x", str(fifo), "127.0.0.1", "0", "/bin/echo", "x"],
                    tmp_path / "s.log", env=PARENT_ENV)
    try:
        # A FIFO with no writer would block a plain open(); the rules are
        # opened non-blocking, so each connection is dropped at once, as a
        # rules file that is not a cdb.
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as client:
                assert client.recv(10) == b""
        dropped = server.wait_log(r"dropping connection, unable to read .*: protocol error$",
                                  count=3)
        assert len(dropped) == 3, server.log()
        # The server lives on: a real cdb in its place is followed at once.
        os.unlink(fifo)
        subprocess.run([our_program("tcprules"), str(fifo), str(tmp_path / "r.tmp")],
                       input=b":allow\n", check=True, timeout=10)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as client:
            assert client.recv(10) == b"x\n"
    finally:
        server.stop()
