"""tcpserver on unusual command lines and rules, side by side with the C one.

Odd hosts, ports and numbers must give the original's outcome (it starts,
or the same fatal message and exit code), never a traceback; a rule the
original accepts must never take our server down.
"""

import os
import select
import signal
import socket
import subprocess

import pytest

from conftest import our_program, peer_program
from tcpserver_harness import Server, normalise_log, parse_env, write_rules_c
from tcpserver_py.net.listen import ListenError, dotted_host, listen_backlog, resolve_host
from tcpserver_py.options import USAGE, parse_args
from tcpserver_py.ucspi import Connection, child_environment

ENV = {"PATH": "/usr/bin:/bin"}
C_USAGE = (b"tcpserver: usage: tcpserver [ -1UXpPhHrRoOdDqQv ] [ -c limit ] "
           b"[ -x rules.cdb ] [ -B banner ] [ -g gid ] [ -u uid ] [ -b backlog ] "
           b"[ -l localname ] [ -t timeout ] host port program")


def outcome(exe: str, argv: list) -> tuple:
    """('started', stderr) if the server printed its port (-1), else
    (exit code, stderr)."""
    proc = subprocess.Popen([exe, "-1", *argv], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
                            start_new_session=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        line = proc.stdout.readline() if ready else b""
        if line.strip().isdigit():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            return "started", proc.stderr.read()
        proc.wait(timeout=10)
        return proc.returncode, proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


BIG = "99999999999999999999"    # more than an unsigned long holds


@pytest.mark.timeout(60)
@pytest.mark.parametrize("argv", [
    # hosts made of digits and dots are read by the original itself
    ["1.2.3", "0"], ["127.1", "0"], ["00", "0"], ["127.0.0.256", "0"],
    ["127.0.0.1.5", "0"], ["[127.0.0.1]", "0"],
    # glibc-only address forms are names to the original: no address
    ["0x7f000001", "0"],
    # a label too long for DNS, and bytes that are not UTF-8
    ["a" * 70, "0"], [b"\xff", "0"], ["127.0.0.1", b"\xff"],
    # ports: the empty word is 0, non-ASCII digits are a service name
    ["127.0.0.1", ""], ["127.0.0.1", "\uff11\uff12"], ["127.0.0.1", "99999"],
    # numbers beyond the C types: no traceback, the original's outcome
    ["-b", BIG, "127.0.0.1", "0"], ["-c", BIG, "-t", BIG, "127.0.0.1", "0"],
    # an option byte that is not ASCII
    ["-\u00e9", "127.0.0.1", "0"], [b"-\xff", "127.0.0.1", "0"],
], ids=lambda argv: repr(argv)[:40])
def test_odd_command_lines_end_like_c(argv):
    argv = [*argv, "/bin/true"]
    c = outcome(peer_program("/usr/bin/tcpserver"), argv)
    ours = outcome(our_program("tcpserver"), argv)
    # Our usage line also lists our extensions; otherwise the same bytes.
    assert (ours[0], ours[1].replace(USAGE.encode(), C_USAGE)) == c
    assert b"Traceback" not in ours[1]


@pytest.mark.parametrize("argv, c_outcome", [
    # The C tcpserver runs the child as root for all of these (setuid(0),
    # or no setuid at all), or fails only after binding.
    (["-u", "4294967296"], "started"), (["-u", "qmaild"], "started"),
    (["-g", "nogroup"], "started"), (["-u", "4294967295"], 111),
    (["-g", "4294967295"], 111), (["-u", BIG, "-g", BIG], "started"),
])
def test_ids_the_original_misreads_are_refused(argv, c_outcome):
    argv = [*argv, "-HRl0", "127.0.0.1", "0", "/bin/true"]
    if os.geteuid() == 0:
        assert outcome(peer_program("/usr/bin/tcpserver"), argv)[0] == c_outcome
    code, err = outcome(our_program("tcpserver"), argv)
    assert code == 100 and err.startswith(b"tcpserver: -") and b"$(id -" in err
    assert b"envuidgid " in err and err.count(b"\n") == 1


def test_numbers_wrap_as_the_original_unsigned_long(tmp_path):
    # 2**64 + 1 is a limit of 1 to the C tcpserver, and so to ours.
    args = ["-v", "-1", "-c", "18446744073709551617", "-HRl0", "127.0.0.1", "0", "/bin/true"]
    for name, exe in (("c", peer_program("/usr/bin/tcpserver")),
                      ("ours", our_program("tcpserver"))):
        server = Server(exe, args, tmp_path / f"{name}.log", env=ENV)
        try:
            assert server.wait_log(r"^tcpserver: status: 0/1$"), (name, server.log())
        finally:
            server.stop()
    assert parse_args(["-c", "18446744073709551617", "0", "0", "p"]).limit == 1


def test_dotted_hosts_read_as_djbdns_does():
    assert dotted_host("127.0.0.256") == "127.0.0.0"
    assert dotted_host("[10.0.0.1]") == "10.0.0.1"
    assert dotted_host("1.2.3.4.5.6") == "1.2.3.4"
    assert dotted_host("localhost") is None and dotted_host("::1") is None
    for short in ("127.1", "00", "."):
        with pytest.raises(ListenError, match="^no IP address for "):
            dotted_host(short)
    assert resolve_host("127.0.0.256", 0) == (socket.AF_INET, "127.0.0.0", False)
    assert resolve_host("::1", 0) == (socket.AF_INET6, "::1", False)   # ours: IPv6


def test_listen_backlog_is_a_c_int_the_kernel_caps():
    assert listen_backlog(20) == 20
    assert listen_backlog(2 ** 32 + 5) == 5
    assert listen_backlog(2 ** 31) == 2 ** 31 - 1


@pytest.mark.parametrize("banner", [[], ["-B", "#\n"]], ids=["spawn", "banner"])
def test_rule_variable_without_a_name_never_stops_the_server(tmp_path, banner):
    # `,="x"` compiles to `+=x`: the C tcpserver passes "=x" on, which no
    # program can look up by name; ours leaves it out and serves the client.
    cdb = write_rules_c(tmp_path, '127.0.0.1:allow,="x",B="y"\n')
    envs = {}
    for name, exe in (("c", peer_program("/usr/bin/tcpserver")),
                      ("ours", our_program("tcpserver"))):
        server = Server(exe, ["-1", "-HRl0", *banner, "-x", cdb, "127.0.0.1", "0",
                              "/usr/bin/env"], tmp_path / f"{name}.log", env=ENV)
        try:
            outputs = [server.talk() for _ in range(2)]   # the server lives on
            assert outputs[0].count(b"B=y\n") == outputs[1].count(b"B=y\n") == 1
            envs[name] = parse_env(outputs[0].removeprefix(b"#\n"))
        finally:
            server.stop()
        assert "Traceback" not in server.log()
    assert envs["c"].pop("") == "x"
    for env in envs.values():
        del env["TCPLOCALPORT"], env["TCPREMOTEPORT"]
    assert envs["ours"] == envs["c"]


def test_ipv6_clients_get_the_ucspi_tcp6_variables():
    conn = Connection("::1", 25, "::1", 4000, local_host=b"0", remote_host=b"v6.example",
                      remote_info=b"joe", ipv6=True)
    env = child_environment({b"TCP6REMOTEINFO": b"inherited"}, conn, None)
    assert env[b"TCPREMOTEINFO"] == b"joe"
    assert b"TCP6REMOTEINFO" not in env       # ucspi-tcp6 sets no TCP6REMOTEINFO
    assert env[b"TCP6REMOTEHOST"] == b"v6.example" and env[b"TCP6LOCALHOST"] == b"0"
    assert env[b"TCP6REMOTEIP"] == env[b"TCP6LOCALIP"] == b"::1"
    assert (env[b"TCP6LOCALPORT"], env[b"TCP6REMOTEPORT"]) == (b"25", b"4000")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to change uid")
@pytest.mark.parametrize("env, expected", [
    ({}, "65534 65534"),                                   # -U without $UID/$GID
    ({"UID": "65533", "GID": "65532"}, "65533 65532"),
], ids=["unset", "set"])
def test_U_takes_only_the_variables_that_are_set(tmp_path, env, expected):
    program = ["/bin/sh", "-c", 'echo "$(id -u) $(id -g)"']
    for name, exe in (("c", peer_program("/usr/bin/tcpserver")),
                      ("ours", our_program("tcpserver"))):
        server = Server(exe, ["-1", "-HRl0", "-u", "65534", "-g", "65534", "-U",
                              "127.0.0.1", "0", *program], tmp_path / f"{name}.log",
                        env={**ENV, **env})
        try:
            assert server.talk().decode().strip() == expected, name
        finally:
            server.stop()


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 0), (signal.SIGHUP, -signal.SIGHUP)],
                         ids=["TERM", "HUP"])
def test_term_exits_0_and_hup_kills_like_c(tmp_path, signum, status):
    # The original catches only SIGTERM; SIGHUP keeps its default action.
    for name, exe in (("c", peer_program("/usr/bin/tcpserver")),
                      ("ours", our_program("tcpserver"))):
        server = Server(exe, ["-1", "-HRl0", "127.0.0.1", "0", "/bin/true"],
                        tmp_path / f"{name}.log", env=ENV)
        try:
            server.proc.send_signal(signum)
            assert server.proc.wait(timeout=10) == status, name
        finally:
            server.stop()


def test_huge_ident_timeout_is_no_deadline_not_an_error(tmp_path):
    # -t 99999999999999: the C tcpserver simply waits that long at most.
    for name, exe in (("c", peer_program("/usr/bin/tcpserver")),
                      ("ours", our_program("tcpserver"))):
        server = Server(exe, ["-v", "-1", "-H", "-l0", "-t", "99999999999999", "127.0.0.1",
                              "0", "/bin/echo", "hi"], tmp_path / f"{name}.log", env=ENV)
        try:
            assert server.talk() == b"hi\n", (name, server.log())
        finally:
            server.stop()


def test_a_child_inherited_from_the_shell_is_logged_like_c(tmp_path):
    # `sleep & exec tcpserver`: the sleep becomes the server's child.
    logs = {}
    for name, exe in (("c", peer_program("/usr/bin/tcpserver")),
                      ("ours", our_program("tcpserver"))):
        server = Server("/bin/sh", ["-c", f'/bin/sleep 0.2 & exec {exe} "$@"', "sh", "-v", "-1",
                                    "-HRl0", "127.0.0.1", "0", "/bin/true"],
                        tmp_path / f"{name}.log", env=ENV)
        try:
            server.wait_log(r"^tcpserver: end \d+ status 0$")
            server.talk()
            server.wait_log(r"^tcpserver: end ", count=2)
            server.wait_log(r"^tcpserver: status: ", count=4)   # start, end, accept, end
            logs[name] = normalise_log(server.log())
        finally:
            server.stop()
    assert logs["ours"] == logs["c"]
    assert logs["ours"].count("tcpserver: end PID status 0") == 2
