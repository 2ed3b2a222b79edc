"""Slow clients (slowloris) against tcpserver's -c and -C limits."""

from __future__ import annotations

import pathlib
import socket
import threading
import time

from smtpd_child.smtp import replies

from .common import Result, Server, Smtp, make_home, program, smtpd_env, wait_no_children

def _slow(port, source, drip, stop, record, key):
    """Connect from `source`; send one byte every `drip` seconds; record what
    came back and when the server closed."""
    started = time.monotonic()
    got = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30,
                                      source_address=(source, 0)) as sock:
            sock.settimeout(drip if drip else 30)
            text = b"HELO " + b"s" * 1000
            i = 0
            while not stop.is_set():
                try:
                    data = sock.recv(4096)
                except socket.timeout:
                    data = None
                except OSError:
                    break              # reset: we kept writing after its close
                if data == b"":
                    break
                got += data or b""
                if drip:
                    try:
                        sock.send(text[i % len(text):i % len(text) + 1])
                    except OSError:
                        break
                    i += 1
    except OSError as exc:
        got += repr(exc).encode()
    record[key] = (got, time.monotonic())      # what came back, when it ended

def run_slowloris(base: pathlib.Path, quick: bool = False, mode_args=()) -> Result:
    """-c 8 -C 3: six dribbling clients from one address, three idle ones from
    another; a third address is served meanwhile; timeoutsmtpd and the
    session deadline free every slot."""
    result = Result("slowloris against -c and -C")
    started = time.monotonic()
    timeout, deadline, drip = (1, 3, 0.5) if quick else (5, 12, 3.0)
    home = make_home(base, "slow", {"timeoutsmtpd": str(timeout)})
    env = dict(smtpd_env(home), SMTPD_DEADLINE=str(deadline))
    for name in ("TCPREMOTEIP", "TCPLOCALIP", "TCPREMOTEHOST", "TCPLOCALHOST"):
        env.pop(name)
    server = Server(["-1", "-HRl", "stress.test", *mode_args, "-c", "8", "-C", "3",
                     "127.0.0.1", "0", program("smtpd-child")], base / "slow.log", env=env)
    # The -c phase runs at the same time, against its own server.
    phase_b = {}
    def run_phase_b():
        try:
            phase_b["waited"] = _all_slots_taken(base, env, timeout, deadline, drip,
                                                 mode_args, result)
        except Exception as exc:
            result.fail(f"-c phase: {type(exc).__name__}: {exc}")

    other = threading.Thread(target=run_phase_b)
    other.start()
    stop = threading.Event()
    record = {}
    threads = [threading.Thread(target=_slow, args=(server.port, "127.0.0.2", drip, stop,
                                                     record, f"drip{i}")) for i in range(6)]
    threads += [threading.Thread(target=_slow, args=(server.port, "127.0.0.3", 0, stop,
                                                      record, f"idle{i}")) for i in range(3)]
    try:
        for thread in threads:
            thread.start()
            time.sleep(0.02)
        time.sleep(0.3)
        t0 = time.monotonic()
        good = _good_session(server.port, "127.0.0.4")
        good_end = time.monotonic()
        served_in = good_end - t0
        result.check(good.startswith(b"250 ok "), f"other client got {good!r}")
        for thread in threads:
            thread.join(timeout=deadline + timeout + 10)
        stop.set()
        drips = [record.get(f"drip{i}", (b"", 0)) for i in range(6)]
        idles = [record.get(f"idle{i}", (b"", 0)) for i in range(3)]
        greeted = [got for got, _ in drips if got.startswith(b"220 ")]
        result.check(len(greeted) == 3, f"{len(greeted)} of 6 from one address got a session")
        for got, ended in drips:
            if got.startswith(b"220 "):
                result.check(got.endswith(replies.SESSION_DEADLINE),
                             f"dribbling client ended with {got[-60:]!r}")
                result.check(good_end < ended, "the other client was not served while the "
                             "slow ones held their slots")
            else:
                result.check(got == b"", f"client over -C got {got!r}")
        for got, _ in idles:
            result.check(got.endswith(replies.TIMEOUT), f"idle client ended with {got[-60:]!r}")
        left = wait_no_children(server.proc.pid, 5)
        result.check(left == [], f"children left: {left}")
        result.check(server.alive(), "tcpserver exited")
        result.inputs = len(threads)
    finally:
        stop.set()
        server.stop()
    other.join()
    waited = phase_b.get("waited", 0.0)
    result.inputs += 4
    result.detail = (f"-C: 3 of 6 slow clients from one address admitted, another address "
                     f"served in {served_in:.2f} s meanwhile; -c 4 full of slow clients from "
                     f"two addresses: a new client served after {waited:.1f} s, when "
                     f"timeoutsmtpd ({timeout} s) freed a slot; deadline {deadline} s ended "
                     f"the dribblers")
    result.seconds = time.monotonic() - started
    return result

def _all_slots_taken(base, env, timeout, deadline, drip, mode_args, result) -> float:
    """-c 4 taken by two idle and two dribbling clients: a new client waits
    in the backlog until timeoutsmtpd frees the idle ones' slots."""
    server = Server(["-1", "-HRl", "stress.test", *mode_args, "-c", "4", "-C", "3",
                     "127.0.0.1", "0", program("smtpd-child")], base / "slow-c.log", env=env)
    stop = threading.Event()
    record = {}
    threads = [threading.Thread(target=_slow, args=(server.port, "127.0.0.6", 0, stop,
                                                     record, f"idle{i}")) for i in range(2)]
    threads += [threading.Thread(target=_slow, args=(server.port, "127.0.0.7", drip, stop,
                                                      record, f"drip{i}")) for i in range(2)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        good = _good_session(server.port, "127.0.0.8")
        good_end = time.monotonic()
        waited = good_end - t0 + 0.3
        result.check(good.startswith(b"250 ok "), f"client after the slow ones got {good!r}")
        for thread in threads:
            thread.join(timeout=deadline + timeout + 10)
        first_freed = min(ended for key, (_, ended) in record.items() if key.startswith("idle"))
        result.check(good_end > first_freed, "a client was served while -c was full")
        for key, (got, _) in record.items():
            end = replies.TIMEOUT if key.startswith("idle") else replies.SESSION_DEADLINE
            result.check(got.endswith(end), f"-c phase {key} ended with {got[-60:]!r}")
        result.check(server.alive(), "tcpserver exited")
        return waited
    finally:
        stop.set()
        server.stop()

def _good_session(port: int, source: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30,
                                  source_address=(source, 0)) as sock:
        smtp = Smtp(sock)
        smtp.reply()
        for line in (b"HELO good", b"MAIL FROM:<a@client.test>", b"RCPT TO:<b@example.org>",
                     b"DATA"):
            smtp.command(line)
        final = smtp.command(b"X-Stress: good\r\n\r\nhello\r\n.")
        smtp.command(b"QUIT")
        return final

