"""Load through our tcpserver: many connections, then many SMTP sessions
into the durable spool.

Invariant: every client served (0 errors), every acknowledged message in
spool/new exactly once, children never above -c, none left (no zombies),
the parent's RSS flat (before/after reported).

MODES maps a mode name to extra tcpserver arguments, so a faster mode (a
preloading one, say) can be measured by adding it here and passing
--mode NAME.
"""

from __future__ import annotations

import asyncio
import errno
import os
import pathlib
import selectors
import socket
import time

from .common import (BASE_ENV, Result, Sampler, Server, audit_spool, body_for, make_home,
                     program, rss_kb, smtpd_env, wait_no_children)

MODES = {"exec": [], "preload": ["--preload"]}   # --preload: smtpd-child forked, not exec'd
LIMIT = 40
PAYLOAD = b"x" * 100 + b"\n"
RSS_GROWTH_KB = 1024


def echo_clients(port: int, total: int, concurrency: int, expect: bytes = PAYLOAD):
    """Keep `concurrency` /bin/cat exchanges going until `total` are done;
    (served with `expect`, failed).  tests/test_reliability.py uses it too."""
    sel = selectors.DefaultSelector()
    state = {}
    started = served = failed = 0

    def open_one():
        nonlocal started
        sock = socket.socket()
        sock.setblocking(False)
        err = sock.connect_ex(("127.0.0.1", port))
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, os.strerror(err))
        state[sock] = [False, bytearray()]
        sel.register(sock, selectors.EVENT_WRITE)
        started += 1

    for _ in range(min(concurrency, total)):
        open_one()
    while state:
        events = sel.select(timeout=30)
        if not events:
            raise RuntimeError(f"stalled: {served} served, {failed} failed")
        for key, _ in events:
            sock = key.fileobj
            sent, got = state[sock]
            try:
                if not sent:
                    sock.send(PAYLOAD)
                    sock.shutdown(socket.SHUT_WR)
                    state[sock][0] = True
                    sel.modify(sock, selectors.EVENT_READ)
                    continue
                data = sock.recv(4096)
            except OSError:
                data, got[:] = b"", b"!"
            if data:
                got += data
                continue
            sel.unregister(sock)
            del state[sock]
            sock.close()
            if got == expect:
                served += 1
            else:
                failed += 1
            if started < total:
                open_one()
    sel.close()
    return served, failed


def _watch(server: Server, result: Result, run, warmup):
    """Warm up, then run under a children sampler; check the invariants."""
    pid = server.proc.pid
    warmup()
    time.sleep(0.3)
    before = rss_kb(pid)
    sampler = Sampler(pid)
    sampler.start()
    started = time.monotonic()
    try:
        figures = run()
    finally:
        sampler.stop()
    elapsed = time.monotonic() - started
    left = wait_no_children(pid)
    after = rss_kb(pid)
    result.check(0 < sampler.most <= LIMIT, f"most children {sampler.most} (limit {LIMIT})")
    result.check(left == [], f"children left (zombies?): {left}")
    result.check(after - before < RSS_GROWTH_KB, f"parent RSS {before} -> {after} kB")
    result.check(server.alive(), "tcpserver exited")
    return figures, elapsed, before, after, sampler.most


def run_connections(base: pathlib.Path, total: int, mode: str = "exec",
                    concurrency: int = 100) -> Result:
    result = Result(f"{total} connections, concurrency {concurrency}")
    server = Server(["-1", "-HRl0", *MODES[mode], "-c", str(LIMIT), "-b", "128",
                     "127.0.0.1", "0", "/bin/cat"], base / "connections.log", env=dict(BASE_ENV))
    try:
        (served, failed), elapsed, before, after, most = _watch(
            server, result, lambda: echo_clients(server.port, total, concurrency),
            lambda: echo_clients(server.port, min(1000, total), concurrency))
        result.check(failed == 0 and served == total, f"{served} served, {failed} failed")
        result.load = served
        result.detail = (f"{total / elapsed:.0f}/s; most children {most}/{LIMIT}; "
                         f"parent RSS {before} -> {after} kB")
        result.seconds = elapsed
    finally:
        server.stop()
    return result


async def _session(port: int, token: str, body: bytes):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async def reply():
            while True:
                line = await reader.readline()
                if not line or line[3:4] != b"-":
                    return line
        await reply()
        writer.write(b"HELO load\r\nMAIL FROM:<l@client.test>\r\nRCPT TO:<box@example.org>\r\n"
                     b"DATA\r\n")
        for _ in range(4):
            await reply()
        writer.write(body + b".\r\n")
        final = await reply()
        writer.write(b"QUIT\r\n")
        await reply()
        return final
    finally:
        writer.close()


async def _sessions(port: int, total: int, concurrency: int, prefix: str):
    sent, acked, errors = {}, set(), []
    queue = list(range(total))

    async def worker():
        while queue:
            i = queue.pop()
            token = f"{prefix}{i}"
            body = body_for(token, 1000)
            sent[token] = body
            try:
                final = await asyncio.wait_for(_session(port, token, body), 60)
            except (OSError, asyncio.TimeoutError) as exc:
                errors.append(repr(exc))
                continue
            if final.startswith(b"250 ok "):
                acked.add(token)
            else:
                errors.append(final)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sent, acked, errors


def run_sessions(base: pathlib.Path, total: int, mode: str = "exec",
                 concurrency: int = 100) -> Result:
    result = Result(f"{total} SMTP sessions, concurrency {concurrency}, durable spool")
    home = make_home(base, "load")
    env = smtpd_env(home)
    for name in ("TCPREMOTEIP", "TCPLOCALIP", "TCPREMOTEHOST", "TCPLOCALHOST"):
        env.pop(name)
    server = Server(["-1", "-HRl", "stress.test", *MODES[mode], "-c", str(LIMIT), "-b", "128",
                     "127.0.0.1", "0", program("smtpd-child")], base / "sessions.log", env=env)
    try:
        everything = [{}, set(), []]

        def batch(count, prefix):
            sent, acked, errors = asyncio.run(_sessions(server.port, count, concurrency, prefix))
            everything[0].update(sent)
            everything[1].update(acked)
            everything[2].extend(errors)

        (_, elapsed, before, after, most) = _watch(
            server, result, lambda: batch(total, "s"), lambda: batch(min(200, total), "w"))
        sent, acked, errors = everything
        result.check(not errors, f"{len(errors)} sessions failed: {errors[:3]}")
        audit_spool(home / "spool", sent, acked, result)
        result.load = len(acked)
        result.detail = (f"{total / elapsed:.0f} sessions/s; {len(acked)} acked; most children "
                         f"{most}/{LIMIT}; parent RSS {before} -> {after} kB")
        result.seconds = elapsed
    finally:
        server.stop()
    return result
