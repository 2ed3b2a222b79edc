"""tcpserver under load and under a changing rules file.

* 20,000 connections at a concurrency of 100 against -c 40 -b 128: every
  client is served, the server never has more than 40 children (sampled
  independently from /proc/PID/task/PID/children, which lists zombies too),
  no zombie is left, and the parent's RSS grows by less than 1 MB after a
  warm-up of 1,000 connections.
* The rules cdb replaced by the C tcprules 1,000 times while clients connect:
  every client sees the old or the new rules, never an error.
* A rules cdb truncated or overwritten in place: those clients are dropped
  with a warning and the server carries on.
"""

import subprocess
import threading
import time

import pytest

from conftest import our_program
from stress.common import Sampler, children_of, rss_kb
from stress.load import PAYLOAD, echo_clients as run_clients
from tcpserver_harness import Server, parse_env, write_rules_c

ENV = {"PATH": "/usr/bin:/bin"}


@pytest.mark.timeout(150)
@pytest.mark.parametrize("total, banner", [(20000, b""), (4000, b"#")],
                         ids=["spawn-20000", "banner-4000"])
def test_many_connections_limit_no_zombies_no_growth(tmp_path, total, banner):
    # Served by posix_spawn from the parent; with a banner every connection
    # is first held by the parent while it writes the banner.
    args = ["-1", "-HRl0", "-B", banner.decode(), "-c", "40", "-b", "128",
            "127.0.0.1", "0", "/bin/cat"]
    server = Server(our_program("tcpserver"), args, tmp_path / "s.log", env=ENV)
    sampler = Sampler(server.proc.pid, every=0.001)
    try:
        expect = banner + PAYLOAD
        assert run_clients(server.port, 1000, 100, expect) == (1000, 0)
        time.sleep(0.3)
        rss_before = rss_kb(server.proc.pid)
        sampler.start()
        started = time.monotonic()
        served, failed = run_clients(server.port, total - 1000, 100, expect)
        elapsed = time.monotonic() - started
        sampler.done.set()
        sampler.join()
        deadline = time.monotonic() + 5
        while children_of(server.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = children_of(server.proc.pid)
        rss_after = rss_kb(server.proc.pid)
        print(f"{total - 1000} connections in {elapsed:.1f} s "
              f"({(total - 1000) / elapsed:.0f}/s); most children {sampler.most} "
              f"in {sampler.samples} samples; RSS {rss_before} -> {rss_after} kB")
        assert (served, failed) == (total - 1000, 0)
        assert 0 < sampler.most <= 40
        assert left == [], f"children left (zombies?): {left}"
        assert rss_after - rss_before < 1024
        assert server.proc.poll() is None
        assert "warning" not in server.log()
        status = open(f"/proc/{server.proc.pid}/status").read()
        assert "\nThreads:\t1\n" in status          # the parent stays single-threaded
    finally:
        sampler.done.set()
        server.stop()


@pytest.mark.timeout(120)
def test_rules_replaced_1000_times_while_serving(tmp_path):
    old = '127.0.0.1:allow,V="old"\n'
    new = '127.0.0.1:allow,V="new",EXTRA="1"\n'
    cdb = write_rules_c(tmp_path, old)
    server = Server(our_program("tcpserver"),
                    ["-1", "-HRl0", "-c", "20", "-x", cdb, "127.0.0.1", "0", "/usr/bin/env"],
                    tmp_path / "s.log", env=ENV)
    seen, problems = [], []
    stop = threading.Event()

    def client():
        while not stop.is_set():
            try:
                env = parse_env(server.talk())
            except OSError as exc:
                problems.append(repr(exc))
                continue
            if env.get("V") == "old" and "EXTRA" not in env:
                seen.append("old")
            elif env.get("V") == "new" and env.get("EXTRA") == "1":
                seen.append("new")
            else:
                problems.append(env)

    threads = [threading.Thread(target=client) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for i in range(1000):
            subprocess.run(["/usr/bin/tcprules", cdb, cdb + ".tmp"],
                           input=(new if i % 2 == 0 else old).encode(), check=True, timeout=10)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        print(f"{len(seen)} connections: {seen.count('old')} old, {seen.count('new')} new")
        assert problems == []
        assert seen.count("old") > 0 and seen.count("new") > 0
        assert "warning" not in server.log()
        assert server.proc.poll() is None
    finally:
        stop.set()
        server.stop()


@pytest.mark.parametrize("banner", [[], ["-B", "#"]], ids=["spawn", "banner"])
def test_rules_corrupted_in_place_drop_and_server_lives(tmp_path, banner):
    good = '127.0.0.1:allow,V="good"\n' + "".join(f"10.0.{i}.:deny\n" for i in range(200))
    cdb = write_rules_c(tmp_path, good)
    pristine = open(cdb, "rb").read()
    server = Server(our_program("tcpserver"),
                    ["-1", "-HRl0", *banner, "-x", cdb, "127.0.0.1", "0", "/usr/bin/env"],
                    tmp_path / "s.log", env=ENV)
    prefix = b"#" if banner else b""
    try:
        assert parse_env(server.talk()[len(prefix):])["V"] == "good"
        with open(cdb, "r+b") as handle:          # truncated in place
            handle.truncate(len(pristine) // 3)
        assert server.talk() == prefix
        with open(cdb, "r+b") as handle:          # same size, garbage
            handle.truncate(0)
            handle.write(b"\xff" * len(pristine))
        assert server.talk() == prefix
        warnings = server.wait_log(
            rf"^tcpserver: warning: dropping connection, unable to read {cdb}: protocol error$",
            count=2)
        assert len(warnings) == 2
        with open(cdb, "wb") as handle:
            handle.write(pristine)
        assert parse_env(server.talk()[len(prefix):])["V"] == "good"
        assert server.proc.poll() is None
    finally:
        server.stop()
