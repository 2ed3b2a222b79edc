"""smtpd-child SIGKILLed at random points of a session, and the tmp/ sweep.

Invariant: nothing partial is ever in spool/new, and every message whose
250 reached the client is there, intact, exactly once.  Leftovers in
spool/tmp are swept, never a file whose writer is alive.
"""

from __future__ import annotations

import os
import pathlib
import random
import signal
import subprocess
import time

from smtpd_child.delivery import sweep

from .common import (Result, Smtp, audit_spool, body_for, fake_queue, make_home, program,
                     smtpd_env, start_child)
from .queuefaults import send_one

POINTS = ("greeting", "envelope", "data", "dot", "commit", "acked")
SIZES = (300, 20_000, 400_000, 2_000_000)


def one_session(env, log, body, point, rng) -> bool:
    """Run one session, SIGKILL the child at `point`; True if a 250 for the
    message reached the client (before or after the kill)."""
    proc, sock = start_child(env, log)
    smtp = Smtp(sock)
    final = b""
    try:
        final = _drive(smtp, sock, body, point, rng)
    except OSError:
        pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    rest = smtp.rest()        # a 250 sent just before the kill still counts
    sock.close()
    return final.startswith(b"250 ok ") or b"\r\n250 ok " in b"\r\n" + rest


def _drive(smtp, sock, body, point, rng) -> bytes:
    smtp.reply()
    if point == "greeting":
        time.sleep(rng.random() * 0.005)
        return b""
    for line in (b"HELO stress", b"MAIL FROM:<stress@client.test>",
                 b"RCPT TO:<box@example.org>"):
        smtp.command(line)
    if point == "envelope":
        return b""
    if not smtp.command(b"DATA").startswith(b"354"):
        return b""
    if point == "data":
        sock.sendall(body[:rng.randrange(len(body))])
        time.sleep(rng.random() * 0.01)
        return b""
    sock.sendall(body + b".\r\n")
    if point == "dot":
        return b""
    if point == "commit":
        # Somewhere in the spool write, fsync and rename (1-30 ms here).
        time.sleep(rng.random() * 0.03)
        return b""
    return smtp.reply()     # "acked": killed after the 250


def run_kills(base: pathlib.Path, count: int, with_queue: bool, seed: int = 12) -> Result:
    name = f"SIGKILL x{count}, " + ("qmail-queue" if with_queue else "built-in spool")
    result = Result(name)
    rng = random.Random(seed + with_queue)
    home = make_home(base, "kill-queue" if with_queue else "kill-spool")
    extra = {"QMAILQUEUE": fake_queue(base)} if with_queue else {}
    env = smtpd_env(home, **extra)
    sent, acked = {}, set()
    started = time.monotonic()
    points = {}
    with open(base / f"{name.split(',')[1].strip()}.log", "ab") as log:
        for i in range(count):
            token = f"k{int(with_queue)}-{i}-{rng.randrange(10**9)}"
            body = body_for(token, rng.choice(SIZES))
            sent[token] = body
            point = POINTS[i % len(POINTS)]
            if one_session(env, log, body, point, rng):
                acked.add(token)
            points[token] = point
    # Orphaned qmail-queue programs finish (or give up) on their own.
    time.sleep(0.5 if with_queue else 0)
    spool = home / "spool"
    seen = audit_spool(spool, sent, acked, result)
    leftovers = os.listdir(spool / "tmp")
    result.faults = count if result.ok else 0
    # Kills just after the final dot land before, in and after the spool
    # write: some of those messages are in new/ (without a 250), some not.
    at_commit = [t for t, p in points.items() if p in ("dot", "commit")]
    kept = sum(1 for t in at_commit if t in seen)
    result.detail = (f"{len(acked)} acked, {len(seen)} in new/, {len(leftovers)} left in "
                     f"tmp/; killed after the dot: {kept} of {len(at_commit)} delivered")
    if not with_queue:
        sweep_leftovers(spool, leftovers, result)
    result.seconds = time.monotonic() - started
    return result


def sweep_leftovers(spool: pathlib.Path, leftovers: list, result: Result) -> None:
    """The killed sessions' tmp/ files go, at the end of the next session
    (smtpd-child's own sweep) and with `smtpd-spool sweep`; a file whose
    writer is alive never does, however old it looks."""
    old = time.time() - sweep.AGE - 3600
    for name in leftovers:
        os.utime(spool / "tmp" / name, (old, old))
    busy = _live_writer(spool)
    try:
        with open(spool.parent / "after.log", "ab") as log:
            reply = send_one(smtpd_env(spool.parent), log, body_for("after", 300))
        result.check(reply.startswith(b"250 ok "), f"session after the kills got {reply!r}")
        left = sorted(os.listdir(spool / "tmp"))
        result.check(left == [busy.name], f"after a session's sweep tmp/ holds {left}, "
                     f"expected only the live writer's {busy.name}")
        abandoned = spool / "tmp" / "0.1.abandoned"
        abandoned.write_bytes(b"smtpd-spool 1\npartial")
        os.utime(abandoned, (old, old))
        out = subprocess.run([program("smtpd-spool"), str(spool), "sweep"],
                             capture_output=True, timeout=30)
        left = sorted(os.listdir(spool / "tmp"))
        result.check(out.returncode == 0, f"smtpd-spool sweep exited {out.returncode}")
        result.check(left == [busy.name], f"after smtpd-spool sweep tmp/ holds {left}")
        reply = busy.finish()
        result.check(reply.startswith(b"250 ok"), f"live writer got {reply!r}")
        result.detail += (f"; {len(leftovers)} swept by the next session, the live writer's "
                          "file kept (and its message delivered)")
    finally:
        busy.close()


class _live_writer:
    """A session in the middle of DATA whose tmp file looks 37 hours old."""

    def __init__(self, spool: pathlib.Path):
        home = spool.parent
        before = set(os.listdir(spool / "tmp"))
        self.log = open(home / "live.log", "ab")
        self.proc, sock = start_child(smtpd_env(home), self.log)
        self.smtp = Smtp(sock)
        self.smtp.reply()
        for line in (b"HELO live", b"MAIL FROM:<a@client.test>", b"RCPT TO:<b@example.org>",
                     b"DATA"):
            self.smtp.command(line)
        sock.sendall(b"X-Stress: live\r\n\r\nhalf of it\r\n")
        for _ in range(200):
            names = set(os.listdir(spool / "tmp")) - before
            if names:
                break
            time.sleep(0.01)
        self.name = names.pop()
        old = time.time() - sweep.AGE - 3600
        os.utime(spool / "tmp" / self.name, (old, old))

    def finish(self) -> bytes:
        self.smtp.sock.sendall(b"the rest\r\n.\r\n")
        return self.smtp.reply()

    def close(self) -> None:
        self.smtp.sock.close()
        self.proc.wait(timeout=30)
        self.log.close()
