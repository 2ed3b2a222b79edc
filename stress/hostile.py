"""Hostile clients end to end: slowloris, injection, relay tricks, floods."""

from __future__ import annotations

import os
import pathlib
import socket
import sys
import threading
import time

from smtpd_child.delivery import spoolfile
from smtpd_child.smtp import replies
from smtpd_child.smtp.envelope import _SAFE
from smtpd_child.smtp.protocol import MAX_ERRORS

from .common import (BASE_ENV, Result, Server, Smtp, body_for, make_home, program,
                     smtpd_env, start_child, wait_no_children, write_script)

# -- slowloris ----------------------------------------------------------------


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
    timeout, deadline, drip = (1, 3, 0.5) if quick else (2, 6, 1.0)
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


# -- injection ----------------------------------------------------------------

HOSTILE = b"a\rb\x00c\x1b[31md\x7fe\xfff\x08g\ttx\x0bRELAYCLIENT=h"
RELAY_TRICKS = [b"<x@other.test>", b"<x%other.test@example.org>", b"<x!other.test@example.org>",
                b"<@example.org:x@other.test>", b"<\"x@other.test\"@example.org>",
                b"<x@other.test\0@example.org>", b"<x@example.org.other.test>",
                b"<x@other.test> <y@example.org>", b"x@other.test", b"<x@[192.0.2.1]>",
b"<x\\@other.test@example.org>",
                b"<x@other.test@example.org>"]

ENV_QUEUE = '''#!{python}
import os, sys
for fd in (0, 1):
    while os.read(fd, 65536):
        pass
with open("/proc/self/environ", "rb") as handle:
    data = handle.read()
with open(os.environ["ENV_DUMP"], "wb") as handle:
    handle.write(data)
'''


def printable_log(data: bytes) -> bool:
    return all(32 <= b <= 126 or b == 10 for b in data)


def run_injection(base: pathlib.Path) -> Result:
    """Control bytes in HELO, MAIL/RCPT, TCPREMOTEHOST/TCPREMOTEINFO: the
    Received line and the logs stay clean, relay tricks are refused, and
    the environment handed on is exactly the one we were given."""
    result = Result("injection and relay tricks")
    started = time.monotonic()
    home = make_home(base, "inject")
    dump = base / "env.dump"
    queue = write_script(base / "env-queue", ENV_QUEUE.format(python=sys.executable))
    log_path = base / "inject.log"
    for with_queue in (False, True):
        env = smtpd_env(home, TCPREMOTEHOST="evil\r\nhost\x1b", TCPREMOTEINFO="u\x01s\x7fer\r")
        if with_queue:
            env.update(QMAILQUEUE=queue, ENV_DUMP=str(dump))
        given = b"".join(k.encode() + b"=" + v.encode() + b"\0" for k, v in env.items())
        with open(log_path, "ab") as log:
            proc, sock = start_child(env, log)
            smtp = Smtp(sock)
            smtp.reply()
            smtp.command(b"HELO " + HOSTILE)
            for arg in (b"<s\x00x@client.test>", b"<s\x1bx@client.test>", b"<s\rx@client.test>"):
                result.inputs += 1
                reply = smtp.command(b"MAIL FROM:" + arg)
                result.check(reply == replies.SYNTAX, f"MAIL FROM:{arg!r} got {reply!r}")
            smtp.command(b"MAIL FROM:<s@client.test>")
            for trick in RELAY_TRICKS:
                result.inputs += 1
                reply = smtp.command(b"RCPT TO:" + trick)
                if reply.startswith(b"250"):
                    result.relays += 1
                    result.fail(f"relay opened: RCPT TO:{trick!r} got {reply!r}")
            result.check(smtp.command(b"RCPT TO:<box@example.org>") == replies.OK, "good rcpt")
            smtp.command(b"DATA")
            final = smtp.command(b"X-Stress: inject\r\n\r\nbody\r\n.")
            result.check(final.startswith(b"250 ok "), f"message got {final!r}")
            smtp.command(b"QUIT")
            sock.close()
            proc.wait(timeout=30)
        if with_queue:
            got = dump.read_bytes()
            differ = set(got.split(b"\0")) ^ set(given.split(b"\0"))
            result.check(got == given, "qmail-queue's environment differs from "
                         f"smtpd-child's: {differ}")
        result.inputs += 4
    new = home / "spool" / "new"
    for name in os.listdir(new):
        parsed = spoolfile.parse((new / name).read_bytes())
        message = parsed[2]
        head = message[:message.index(b"\n", message.index(b"\n") + 1) + 1]
        result.check(all(b in _SAFE or b in b" ();\n?[]" for b in head) and head.count(b"\n") == 2,
                     f"unsafe Received line: {head!r}")
        result.check(b"(HELO a?b)" in head, f"HELO not cut at NUL and masked: {head!r}")
        for address in [parsed[0], *parsed[1]]:
            result.check(not any(b < 32 or b == 127 for b in address), f"envelope {address!r}")
    result.check(printable_log(log_path.read_bytes()), "smtpd-child logged control bytes")
    ident = _ident_injection(base, result)
    dns = _dns_injection(base, result)
    result.detail = (f"{len(RELAY_TRICKS)} relay tricks refused; Received line masked; "
                     f"qmail-queue env unchanged; {ident}; {dns}")
    result.seconds = time.monotonic() - started
    return result


def _ident_injection(base: pathlib.Path, result: Result) -> str:
    """An ident answer with control bytes, NUL and `RELAYCLIENT=`: it must
    not reach the log unmasked nor set a variable."""
    ip = "127.0.113.9"
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((ip, 113))
    except OSError as exc:
        listener.close()
        return f"ident part skipped: cannot bind {ip}:113 ({exc.strerror})"
    listener.listen(4)

    def identd():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            line = conn.recv(100).strip()
            conn.sendall(line + b" : USERID : UNIX : ev\x1bil\x00\nRELAYCLIENT=\x7f\r\n")

    thread = threading.Thread(target=identd, daemon=True)
    thread.start()
    server = Server(["-1", "-Hv", "-l", "stress.test", "-t", "3", ip, "0", "/usr/bin/env"],
                    base / "ident.log", env=dict(BASE_ENV))
    try:
        variables = _env_through(server, ip, ip)
        result.inputs += 1
        result.check(b"RELAYCLIENT" not in variables, "an ident answer set RELAYCLIENT")
        result.check(variables.get(b"TCPREMOTEINFO") == b"ev\x1bil",
                     f"TCPREMOTEINFO is {variables.get(b'TCPREMOTEINFO')!r} "
                     "(the C tcpserver's value ends at the NUL)")
        time.sleep(0.2)
        log = open(base / "ident.log", "rb").read()
        result.check(printable_log(log), f"tcpserver logged control bytes: {log!r}")
        return "ident answer with NUL and RELAYCLIENT= masked in the log, cut at NUL in env"
    finally:
        server.stop()
        listener.close()


def _env_through(server: Server, ip: str, source: str) -> dict:
    with socket.create_connection((ip, server.port), timeout=10,
                                  source_address=(source, 0)) as sock:
        sock.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            data = sock.recv(65536)
            if not data:
                break
            out += data
    return dict(line.split(b"=", 1) for line in out.split(b"\n") if b"=" in line)


EVIL_PTR = [b"ev\x1bil\r\nX", b"RELAYCLIENT=", b"exa mple\x00", b"org"]


def _dns_injection(base: pathlib.Path, result: Result) -> str:
    """A PTR answer whose labels hold ESC, CR LF, NUL, `=` and a space: the
    name reaches TCPREMOTEHOST and the log escaped (djbdns octal)."""
    ip, client = "127.0.53.9", "127.0.53.10"
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        udp.bind((ip, 53))
    except OSError as exc:
        udp.close()
        return f"reverse-DNS part skipped: cannot bind {ip}:53 ({exc.strerror})"
    udp.settimeout(0.2)
    stop = threading.Event()
    rdata = b"".join(bytes([len(label)]) + label for label in EVIL_PTR) + b"\0"

    def serve():
        while not stop.is_set():
            try:
                packet, peer = udp.recvfrom(4096)
            except OSError:
                continue
            end = packet.index(b"\0", 12) + 5
            answer = (packet[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00"
                      + packet[12:end] + b"\xc0\x0c\x00\x0c\x00\x01\x00\x00\x00\x3c"
                      + len(rdata).to_bytes(2, "big") + rdata)
            udp.sendto(answer, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    server = Server(["-1", "-Rv", "-l", "stress.test", ip, "0", "/usr/bin/env"],
                    base / "dns.log", env=dict(BASE_ENV, DNSCACHEIP=ip))
    try:
        variables = _env_through(server, ip, client)
        host = variables.get(b"TCPREMOTEHOST", b"")
        result.inputs += 1
        result.check(b"RELAYCLIENT" not in variables, "a PTR name set RELAYCLIENT")
        result.check(host.startswith(b"ev\\033il\\015\\012x.") and
                     all(33 <= b <= 126 for b in host), f"TCPREMOTEHOST is {host!r}")
        time.sleep(0.2)
        log = open(base / "dns.log", "rb").read()
        result.check(printable_log(log), f"tcpserver logged control bytes: {log!r}")
        return "PTR name with ESC/CR/LF/NUL escaped in TCPREMOTEHOST and the log"
    finally:
        stop.set()
        server.stop()
        thread.join(timeout=5)
        udp.close()


# -- floods -------------------------------------------------------------------

MEMORY_BOUND_KB = 64 * 1024


def _pump(sock, chunks):
    def send():
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError:
            pass
    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def _peak_kb(proc) -> int:
    """The child's peak RSS so far (VmHWM: this program's own, since exec)."""
    with open(f"/proc/{proc.pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _replies(smtp, count):
    return [smtp.reply() for _ in range(count)]


def run_floods(base: pathlib.Path, quick: bool = False) -> Result:
    result = Result("floods")
    started = time.monotonic()
    scale = 10 if quick else 1
    recipients, message_mb, line_mb, commands = (10000 // scale, 100 // scale,
                                                 10 // scale, 100000 // scale)
    home = make_home(base, "flood", {"databytes": "1000000"})
    env = smtpd_env(home)
    log = open(base / "flood.log", "ab")
    rss = {}
    try:
        # Recipients: 100 accepted, then 452 until the error limit ends the session.
        proc, sock = start_child(env, log)
        smtp = Smtp(sock)
        smtp.reply()
        smtp.command(b"MAIL FROM:<s@client.test>")
        sender = _pump(sock, [b"RCPT TO:<r%d@example.org>\r\n" % i for i in range(recipients)])
        got = []
        try:
            while len(got) <= recipients:
                reply = smtp.reply()
                if not reply:
                    break
                got.append(reply)
                if len(got) == 100:
                    rss["recipients"] = _peak_kb(proc)
        except ConnectionResetError:
            pass     # it closed with our unread RCPTs queued: the 421 may be lost in the RST
        sender.join()
        expect = ([replies.OK] * 100 + [replies.TOO_MANY_RECIPIENTS] * MAX_ERRORS
                  + [replies.TOO_MANY_ERRORS])
        result.check(len(got) > 100 and got == expect[:len(got)],
                     f"recipient replies: {len(got)}, {sorted(set(got))} (expected 100 x 250, "
                     f"{MAX_ERRORS} x 452, 421)")
        sock.close()
        result.check(proc.wait(timeout=30) == 1, "the session did not end at the error limit")
        # A message far over databytes.
        proc, sock = start_child(env, log)
        smtp = Smtp(sock, timeout=120)
        smtp.reply()
        smtp.command(b"MAIL FROM:<s@client.test>")
        smtp.command(b"RCPT TO:<b@example.org>")
        smtp.command(b"DATA")
        line = b"y" * 998 + b"\r\n"
        chunk = line * 1000                       # 1 MB
        sender = _pump(sock, [b"X-Stress: big\r\n\r\n"] + [chunk] * message_mb + [b".\r\n"])
        final = smtp.reply()
        sender.join()
        result.check(final == replies.DATABYTES, f"{message_mb} MB over databytes got {final!r}")
        rss["message"] = _peak_kb(proc)
        result.check(smtp.command(b"QUIT").startswith(b"221"), "no 221 after the big message")
        sock.close()
        proc.wait(timeout=30)
        # One enormous command line, then the session goes on.
        proc, sock = start_child(env, log)
        smtp = Smtp(sock)
        smtp.reply()
        sender = _pump(sock, [b"NOOP "] + [b"z" * 1_000_000] * line_mb + [b"\r\n", b"NOOP\r\n"])
        got = _replies(smtp, 2)
        sender.join()
        result.check(got == [replies.LINE_TOO_LONG, replies.OK], f"long line got {got!r}")
        rss["line"] = _peak_kb(proc)
        result.check(smtp.command(b"QUIT").startswith(b"221"), "no 221 after the long line")
        sock.close()
        proc.wait(timeout=30)
        # Many commands in one session.
        proc, sock = start_child(env, log)
        smtp = Smtp(sock, timeout=120)
        smtp.reply()
        batch = b"NOOP\r\n" * 1000
        sender = _pump(sock, [batch] * (commands // 1000))
        got = _replies(smtp, commands)
        sender.join()
        result.check(set(got) == {replies.OK} and len(got) == commands,
                     f"{commands} NOOPs: {sorted(set(got))[:3]}")
        rss["commands"] = _peak_kb(proc)
        result.check(smtp.command(b"QUIT").startswith(b"221"), "no 221 after the commands")
        sock.close()
        proc.wait(timeout=30)
    except OSError as exc:
        result.fail(f"flood session failed: {exc!r}")
    finally:
        log.close()
    for name, kb in rss.items():
        result.check(kb < MEMORY_BOUND_KB, f"{name} flood: max RSS {kb} kB")
    result.inputs = recipients + message_mb + line_mb + commands
    worst = max(rss.values(), default=0)
    result.detail = (f"{recipients} RCPT, {message_mb} MB DATA, {line_mb} MB line, "
                     f"{commands} commands: smtpd-child max RSS {worst} kB "
                     f"({', '.join(f'{k} {v}' for k, v in rss.items())}), bound "
                     f"{MEMORY_BOUND_KB} kB")
    result.seconds = time.monotonic() - started
    return result
