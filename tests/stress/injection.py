"""Control bytes in everything a client controls, and relay tricks."""

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

from .common import (BASE_ENV, Result, Server, Smtp, make_home, smtpd_env, start_child,
                     write_script)

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

