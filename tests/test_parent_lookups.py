"""The banner, DNS and ident done by the listening parent from its poll loop
(server/lookupwait.py): no Python child is forked for them, one client's
slow identd or resolver never delays another, deadlines end every wait,
held connections count against -c, and what the parent found is handed to
a forked child (deny, refusals) without being looked up again.

A fake identd on 127.0.0.31-33:113 and a fake DNS server on
127.0.0.34:53 (needs root for the low ports; skipped otherwise), addresses
no other test uses.
"""

from __future__ import annotations

import dataclasses
import os
import select
import signal
import socket
import threading
import time

import pytest

from conftest import our_program
from fakedns import A, PTR, FakeDNS
from fakeident import ident_listener
from tcpserver_harness import Server, parse_env, write_rules_c
from tcpserver_py.net import resolver as resolver_module
from tcpserver_py.net.steps import run
from tcpserver_py.options import parse_args
from tcpserver_py.server.lookupwait import LookupIntake
from tcpserver_py.server.prepare import PENDING, prepare

FAST, SLOW, SILENT = "127.0.0.31", "127.0.0.32", "127.0.0.33"
DNS_IP = "127.0.0.34"
ENV = {"PATH": "/usr/bin:/bin"}


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


class GatedIdentd:
    """FAST answers at once, SLOW answers when `release` is set, SILENT never
    answers (holds the connection open until closed).  `events` records
    requests and releases in order; `children` what the watched server
    had as children when each request came."""

    def __init__(self):
        self.events: list[str] = []
        self.children: list[list[int]] = []
        self.server_pid = None
        self.release = threading.Event()
        self.closing = threading.Event()
        self.listeners = []
        for ip in (FAST, SLOW, SILENT):
            sock = ident_listener(ip, self.close)
            self.listeners.append(sock)
            threading.Thread(target=self.serve, args=(sock, ip), daemon=True).start()

    def serve(self, sock, ip):
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=self.answer, args=(conn, ip), daemon=True).start()

    def answer(self, conn, ip):
        with conn:
            conn.settimeout(30)
            try:
                line = conn.recv(100)
                if self.server_pid is not None:
                    self.children.append(children_of(self.server_pid))
                self.events.append(f"request {ip}")
                if ip == SILENT:
                    self.closing.wait(30)
                    return
                if ip == SLOW:
                    self.release.wait(30)
                conn.sendall(line.strip() + b" : USERID : UNIX : user" + ip[-1].encode()
                             + b"\r\n")
            except OSError:
                pass

    def let_slow_answer(self):
        self.events.append("release")
        self.release.set()

    def close(self):
        self.closing.set()
        self.release.set()
        for sock in self.listeners:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


@pytest.fixture
def identd():
    fake = GatedIdentd()
    yield fake
    fake.close()


def start(tmp_path, args, name="s"):
    return Server(our_program("tcpserver"), ["-v", "-1", *args, "127.0.0.1", "0",
                                             "/usr/bin/env"], tmp_path / f"{name}.log", env=ENV)


def connect(server, source):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=20,
                                    source_address=(source, 0))
    sock.shutdown(socket.SHUT_WR)
    return sock


def read_raw(sock) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    sock.close()
    return data


def read_env(sock) -> dict:
    return parse_env(read_raw(sock))


@pytest.mark.timeout(30)
def test_ident_is_asked_by_the_parent_no_child_forked(tmp_path, identd):
    server = start(tmp_path, ["-Hl0", "-r", "-t", "10"])
    identd.server_pid = server.proc.pid
    try:
        env = read_env(connect(server, FAST))
        assert env["TCPREMOTEINFO"] == "user1"
        # When the identd heard the question, tcpserver had no child: the
        # question came from the parent itself.
        assert identd.children == [[]]
        server.wait_served(1)
        log = server.log()
        pid = int(server.wait_log(r"^tcpserver: ok (\d+) ")[0])
        assert f"tcpserver: pid {pid} from {FAST}" in log
        assert f":{FAST}:user1:" in log
    finally:
        server.stop()


@pytest.mark.timeout(30)
def test_slow_identd_of_one_client_does_not_delay_another(tmp_path, identd):
    server = start(tmp_path, ["-Hl0", "-r", "-t", "20", "-c", "5"])
    try:
        slow = connect(server, SLOW)
        while "request " + SLOW not in identd.events:
            time.sleep(0.01)
        # The slow client is held by the parent, waiting for its identd;
        # another is served meanwhile, from start to end.
        assert read_env(connect(server, FAST))["TCPREMOTEINFO"] == "user1"
        assert not select.select([slow], [], [], 0)[0]     # still waiting
        identd.let_slow_answer()
        assert read_env(slow)["TCPREMOTEINFO"] == "user2"
        assert identd.events == [f"request {SLOW}", f"request {FAST}", "release"]
    finally:
        server.stop()


@pytest.mark.timeout(30)
def test_held_connections_count_against_the_limit(tmp_path, identd):
    server = start(tmp_path, ["-Hl0", "-r", "-t", "20", "-c", "1"])
    try:
        slow = connect(server, SLOW)
        while "request " + SLOW not in identd.events:
            time.sleep(0.01)
        waiting = connect(server, FAST)      # in the backlog: -c 1 is taken
        time.sleep(0.5)                      # room for a wrong accept to show
        identd.let_slow_answer()
        assert read_env(slow)["TCPREMOTEINFO"] == "user2"
        assert read_env(waiting)["TCPREMOTEINFO"] == "user1"
        assert identd.events == [f"request {SLOW}", "release", f"request {FAST}"]
        server.wait_served(2)
        statuses = [int(n) for n in server.wait_log(r"^tcpserver: status: (\d+)/1$", count=5)]
        assert max(statuses) == 1 and statuses[:2] == [0, 1]
    finally:
        server.stop()


@pytest.mark.timeout(30)
def test_ident_deadline_in_the_parent(tmp_path, identd):
    server = start(tmp_path, ["-Hl0", "-r", "-t", "1"])
    try:
        # The identd never answers nor closes: only -t ends the wait.
        env = read_env(connect(server, SILENT))
        assert "TCPREMOTEINFO" not in env and env["TCPREMOTEIP"] == SILENT
        assert identd.events == [f"request {SILENT}"]
    finally:
        server.stop()


@pytest.mark.timeout(30)
def test_deny_after_parent_lookups_is_logged_by_a_child_without_asking_again(tmp_path,
                                                                               identd):
    cdb = write_rules_c(tmp_path, f"user1@{FAST}:deny\n:allow\n")
    server = start(tmp_path, ["-Hl0", "-r", "-t", "10", "-B", "hi\n", "-x", cdb])
    try:
        assert read_raw(connect(server, FAST)) == b"hi\n"       # the banner, once
        server.wait_served(1)
        log = server.log()
        pid = int(server.wait_log(r"^tcpserver: deny (\d+) ")[0])
        assert f"tcpserver: deny {pid} 0:127.0.0.1:{server.port} :{FAST}:user1:" in log
        assert f"tcpserver: end {pid} status 25600" in log     # exit 100
        assert identd.events == [f"request {FAST}"]             # asked once
    finally:
        server.stop()


@pytest.mark.timeout(30)
def test_banner_the_socket_will_not_take_goes_to_a_child_that_finishes_it():
    """In-process: the parent writes what the socket takes at once, never
    waits for the client's window, and hands the rest on; the child's
    blocking driver finishes it from the Progress: whole, and once."""
    banner = bytes(range(32, 127)) * 3000                    # 285 kB
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(listener.getsockname())
    fd, addr = listener._accept()
    handed = []
    opts = parse_args(["-HRl0", "127.0.0.1", "0", "true"])
    opts = dataclasses.replace(opts, banner=banner)
    intake = LookupIntake(opts, {}, socket.AF_INET, select.poll(),
                          lambda *args: handed.append(args))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fd) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            sock.detach()
        intake.admit(fd, addr, "127.0.0.1", 1, None)
        (_, _, _, _, _, progress, complete), = handed
        assert not complete and 0 < len(progress.banner) < len(banner)
        assert progress.local is None and progress.local_host is PENDING
        received = []

        def reader():
            data = b""
            while len(data) < len(banner):
                chunk = client.recv(65536)
                if not chunk:
                    break
                data += chunk
            received.append(data)

        thread = threading.Thread(target=reader)
        thread.start()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fd) as sock:
            run(prepare(sock, "127.0.0.1", addr[1], None, opts, {}, progress))
            sock.detach()
        thread.join(20)
        assert received == [banner]
        assert progress.banner == b"" and progress.local_host == b"0"
    finally:
        os.close(fd)
        client.close()
        listener.close()


class SilentDNS:
    """Takes questions on DNS_IP:53 and never answers."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind((DNS_IP, 53))
        except OSError as exc:
            self.sock.close()
            pytest.skip(f"cannot bind {DNS_IP}:53: {exc}")

    def questions(self) -> int:
        count = 0
        while select.select([self.sock], [], [], 0)[0]:
            self.sock.recv(4096)
            count += 1
        return count


@pytest.mark.timeout(30)
def test_dns_deadlines_in_the_parent_loop(monkeypatch):
    """The parent's driver, in-process: a resolver that never answers is
    asked once per timeout, each wait ends at its deadline, and the
    connection is then handed on, complete, with no name."""
    silent = SilentDNS()
    monkeypatch.setattr(resolver_module.Resolver.__init__, "__defaults__", ((0.3, 0.6),))
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    fd, addr = listener._accept()
    poller = select.poll()
    handed = []
    opts = parse_args(["-h", "-R", "-l0", "127.0.0.1", "0", "true"])
    intake = LookupIntake(opts, {b"DNSCACHEIP": DNS_IP.encode()}, socket.AF_INET, poller,
                          lambda *args: handed.append(args))
    try:
        intake.admit(fd, addr, "127.0.0.1", 1, None)
        assert len(intake) == 1 and intake.count_for("127.0.0.1") == 1
        first_wait = intake.poll_timeout()
        assert 0 < first_wait <= 301                       # the first timeout
        rounds = 0
        while not handed:
            ready = poller.poll(intake.poll_timeout())
            for ready_fd, _ in ready:
                if ready_fd in intake:
                    intake.ready(ready_fd)
            intake.expire()
            rounds += 1
            assert rounds < 50
        (hand_fd, _, ip, count, _, progress, complete), = handed
        assert (hand_fd, ip, count, complete) == (fd, "127.0.0.1", 1, True)
        assert progress.remote_host is None and progress.local_host == b"0"
        assert silent.questions() == 2                     # one per timeout
        assert len(intake) == 0 and intake.descriptors() == ()
    finally:
        os.close(fd)
        client.close()
        listener.close()
        silent.sock.close()


@pytest.mark.timeout(30)
def test_names_from_dns_in_the_parent(tmp_path):
    dns = FakeDNS({("31.0.0.127.in-addr.arpa", PTR): ["Host.Example.ORG"],
                   ("host.example.org", A): [FAST],
                   ("1.0.0.127.in-addr.arpa", PTR): ["me.example.org"]}, address=DNS_IP)
    cdb = write_rules_c(tmp_path, '=host.example.org:allow,WHO="host"\n:allow\n')
    server = Server(our_program("tcpserver"),
                    ["-v", "-1", "-h", "-p", "-R", "-x", cdb, "127.0.0.1", "0",
                     "/usr/bin/env"], tmp_path / "s.log",
                    env={**ENV, "DNSCACHEIP": DNS_IP})
    try:
        env = parse_env(server.talk(source=FAST))
        assert env["TCPREMOTEHOST"] == "host.example.org" and env["WHO"] == "host"
        assert env["TCPLOCALHOST"] == "me.example.org"
        server.wait_served(1)
        assert ("host.example.org", A) in dns.queries          # -p's check
        assert f"me.example.org:127.0.0.1:{server.port} host.example.org:{FAST}::" \
            in server.log()
    finally:
        server.stop()
        dns.close()


def accepted_pair():
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    fd, addr = listener._accept()
    return listener, client, fd, addr


def drive(intake, poller, handed, limit=100):
    """The parent's loop, reduced to the intake."""
    rounds = 0
    while not handed:
        for ready_fd, _ in poller.poll(intake.poll_timeout()):
            if ready_fd in intake:
                intake.ready(ready_fd)
        intake.expire()
        rounds += 1
        assert rounds < limit


@pytest.mark.timeout(30)
def test_no_socket_for_ident_hands_the_rest_to_a_child(monkeypatch):
    """Out of descriptors for the lookup socket: the child gets the
    connection with the banner and the names done, ident still to do."""
    import errno
    from tcpserver_py.server import lookupwait

    def no_socket(request):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(lookupwait, "new_socket", no_socket)
    listener, client, fd, addr = accepted_pair()
    poller = select.poll()
    handed = []
    opts = parse_args(["-Hl0", "-r", "-B", "hi\n", "127.0.0.1", "0", "true"])
    intake = LookupIntake(opts, {}, socket.AF_INET, poller, lambda *a: handed.append(a))
    try:
        intake.admit(fd, addr, "127.0.0.1", 1, None)
        (_, _, _, _, _, progress, complete), = handed
        assert not complete
        assert progress.banner == b"" and client.recv(10) == b"hi\n"   # written once
        assert progress.local[0] == "127.0.0.1" and progress.local_host == b"0"
        assert progress.remote_host is None and progress.remote_info is PENDING
        assert len(intake) == 0 and intake.descriptors() == ()
    finally:
        os.close(fd)
        client.close()
        listener.close()


@pytest.mark.timeout(30)
def test_an_exception_in_the_parent_hands_the_connection_to_a_child(monkeypatch, identd):
    """A bug met while reading an ident reply never reaches the loop: the
    connection goes to a child with ident still to do."""
    from tcpserver_py.net import lookup

    def broken(line):
        raise RuntimeError("bug")

    monkeypatch.setattr(lookup, "parse_ident_reply", broken)
    listener, client, fd, addr = accepted_pair()
    poller = select.poll()
    handed = []
    opts = parse_args(["-Hl0", "-r", "-t", "10", "127.0.0.1", "0", "true"])
    intake = LookupIntake(opts, {}, socket.AF_INET, poller, lambda *a: handed.append(a))
    try:
        intake.admit(fd, (FAST, addr[1]), FAST, 1, None)       # asks FAST's identd
        drive(intake, poller, handed)
        (_, _, ip, _, _, progress, complete), = handed
        assert (ip, complete) == (FAST, False) and progress.remote_info is PENDING
        assert identd.events == [f"request {FAST}"]
        assert len(intake) == 0 and intake.descriptors() == ()
    finally:
        os.close(fd)
        client.close()
        listener.close()


class HostileDNS:
    """Answers every question on DNS_IP:53 with garbage: random bytes, a
    reply with our id but cut short, a compression loop, a wrong question."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind((DNS_IP, 53))
        except OSError as exc:
            self.sock.close()
            pytest.skip(f"cannot bind {DNS_IP}:53: {exc}")
        self.asked = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        import struct
        while True:
            try:
                packet, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            self.asked += 1
            qid = packet[:2]
            question = packet[12:]
            loop = qid + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0) + b"\xc0\x0c" + question[-4:]
            for reply in (os.urandom(40), qid + b"\x81\x80\x00\x01\x00\x05",
                          loop, qid + struct.pack(">HHHHH", 0x8180, 1, 0, 0, 0)
                          + b"\x03www\x00" + question[-4:],
                          qid + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0) + question
                          + b"\xc0\x0c\x00\x0c\x00\x01\x00\x00\x00\x3c\xff\xff"):
                self.sock.sendto(reply, peer)

    def close(self):
        self.sock.close()


@pytest.mark.timeout(30)
def test_hostile_dns_replies_are_no_name_in_the_parent(monkeypatch):
    dns = HostileDNS()
    monkeypatch.setattr(resolver_module.Resolver.__init__, "__defaults__", ((0.3,),))
    listener, client, fd, addr = accepted_pair()
    poller = select.poll()
    handed = []
    opts = parse_args(["-h", "-p", "-R", "127.0.0.1", "0", "true"])
    intake = LookupIntake(opts, {b"DNSCACHEIP": DNS_IP.encode()}, socket.AF_INET, poller,
                          lambda *a: handed.append(a))
    try:
        intake.admit(fd, addr, "127.0.0.1", 1, None)
        drive(intake, poller, handed)
        (_, _, _, _, _, progress, complete), = handed
        assert complete
        assert progress.local_host is None and progress.remote_host is None
        assert dns.asked == 2                              # local name, remote name
    finally:
        os.close(fd)
        client.close()
        listener.close()
        dns.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGQUIT], ids=["term", "quit"])
def test_stopping_server_hands_held_connections_to_children(tmp_path, identd, signum):
    """A connection held for its identd when the server stops is not lost:
    a child carries on, as the original's child would."""
    server = start(tmp_path, ["-Hl0", "-r", "-t", "20"])
    try:
        slow = connect(server, SLOW)
        while "request " + SLOW not in identd.events:
            time.sleep(0.01)
        server.proc.send_signal(signum)
        if signum == signal.SIGTERM:
            assert server.proc.wait(timeout=10) == 0       # at once, as before
        else:                                              # the drain has begun
            assert server.wait_log(r"stopping: waiting for 1 children$", timeout=10)
        identd.let_slow_answer()
        assert read_env(slow)["TCPREMOTEINFO"] == "user2"
        assert server.proc.wait(timeout=10) == 0
        # The child asked again (the parent's exchange was cut short).
        assert identd.events.count(f"request {SLOW}") == 2
    finally:
        server.stop()
