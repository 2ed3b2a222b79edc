"""Floods: recipients, a huge message, a huge line, many commands."""

from __future__ import annotations

import pathlib
import threading
import time

from smtpd_child.smtp import replies
from smtpd_child.smtp.protocol import MAX_ERRORS

from .common import Result, Smtp, make_home, smtpd_env, start_child

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
    result.detail = (f"{recipients} RCPT (100 taken, then 452 until the error limit's 421), "
                     f"{message_mb} MB DATA, {line_mb} MB line, "
                     f"{commands} commands: smtpd-child max RSS {worst} kB "
                     f"({', '.join(f'{k} {v}' for k, v in rss.items())}), bound "
                     f"{MEMORY_BOUND_KB} kB")
    result.seconds = time.monotonic() - started
    return result
