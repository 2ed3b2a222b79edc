"""The spool's file system full, the file size limit, and a qmail-queue that
fails in every documented way.

Invariant: the client gets qmail's 451/554 for the failure, never a 250, and
nothing partial is left in spool/new (nor, for the built-in spool, in tmp/).
"""

from __future__ import annotations

import os
import pathlib
import resource
import subprocess
import time

from smtpd_child.smtp import replies

from .common import (EXIT_QUEUE, Result, Smtp, body_for, make_home, smtpd_env, start_child,
                     wait_rusage, write_script)


def send_one(env, log, body: bytes, preexec_fn=None) -> bytes:
    """One message; the reply to its final dot (b"" if the session died)."""
    proc, sock = start_child(env, log, preexec_fn)
    smtp = Smtp(sock)
    try:
        smtp.reply()
        for line in (b"HELO stress", b"MAIL FROM:<stress@client.test>",
                     b"RCPT TO:<box@example.org>"):
            smtp.command(line)
        if not smtp.command(b"DATA").startswith(b"354"):
            return b""
        sock.sendall(body + b".\r\n")
        final = smtp.reply()
        smtp.command(b"QUIT")
        return final
    except OSError:
        return b""
    finally:
        sock.close()
        proc.wait(timeout=60)


def _empty(spool: pathlib.Path, result: Result, what: str) -> None:
    for sub in ("new", "tmp"):
        left = os.listdir(spool / sub)
        if left:
            result.duplicated += len(left) if sub == "new" else 0
            result.fail(f"{what}: spool/{sub} holds {left}")


def run_disk_full(base: pathlib.Path) -> Result:
    """A 512 kB tmpfs as the spool: messages that do not fit get 451."""
    result = Result("spool file system full (tmpfs)")
    started = time.monotonic()
    home = make_home(base, "full")
    spool = home / "spool"
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k,mode=0755", "tmpfs",
                              str(spool)], capture_output=True)
    if mounted.returncode != 0:
        result.detail = ("skipped: cannot mount a tmpfs here ("
                         + mounted.stderr.decode(errors="replace").strip() + ")")
        return result
    try:
        for sub in ("tmp", "new"):
            (spool / sub).mkdir()
        with open(base / "full.log", "ab") as log:
            env = smtpd_env(home)
            expect = replies.queue_failure(replies.qq_status(53))
            # Too big for the file system.
            reply = send_one(env, log, body_for("big", 1_000_000))
            result.check(reply == expect, f"oversized message got {reply!r}")
            _empty(spool, result, "oversized message")
            # The file system already full: even a small message fails.
            filler = spool / "filler"
            with open(filler, "wb") as handle:
                try:
                    while True:
                        handle.write(b"\0" * 65536)
                        handle.flush()
                except OSError:
                    pass
            reply = send_one(env, log, body_for("small", 300))
            result.check(reply == expect, f"small message on a full disk got {reply!r}")
            filler.unlink()
            _empty(spool, result, "full disk")
            # Space again: mail flows.
            reply = send_one(env, log, body_for("again", 300))
            result.check(reply.startswith(b"250 ok "), f"after freeing space: {reply!r}")
        result.faults = 2 if result.ok else 0
        result.detail = "451 qq write error for 1 MB on 512 kB and on a full disk; 250 after"
    finally:
        subprocess.run(["umount", "-l", str(spool)], capture_output=True)
    result.seconds = time.monotonic() - started
    return result


def run_fsize(base: pathlib.Path) -> Result:
    """RLIMIT_FSIZE of 64 kB on smtpd-child: a 200 kB message gets 451."""
    result = Result("file size limit (RLIMIT_FSIZE)")
    started = time.monotonic()
    home = make_home(base, "fsize")
    limit = 64 * 1024

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    with open(base / "fsize.log", "ab") as log:
        env = smtpd_env(home)
        reply = send_one(env, log, body_for("fsize", 200_000), limited)
        expect = replies.queue_failure(replies.qq_status(53))
        result.check(reply == expect, f"200 kB under a 64 kB RLIMIT_FSIZE got {reply!r}")
        _empty(home / "spool", result, "RLIMIT_FSIZE")
        reply = send_one(env, log, body_for("small", 300), limited)
        result.check(reply.startswith(b"250 ok "), f"a small message got {reply!r}")
    result.faults = 1 if result.ok else 0
    result.detail = "451 qq write error, tmp/ and new/ empty; a small message still 250"
    result.seconds = time.monotonic() - started
    return result


def run_queue_exits(base: pathlib.Path, quick: bool = False) -> Result:
    """A qmail-queue exiting with every code 1-255 (quick: each documented
    code and a few others) and killed by signals."""
    result = Result("qmail-queue exit codes and kills")
    started = time.monotonic()
    home = make_home(base, "qq")
    script = write_script(base / "exit-queue", EXIT_QUEUE)
    codes = sorted(set(replies.QQ_EXIT_TEXTS) | {1, 40, 41, 100, 255}) if quick else range(1, 256)
    cases = [(code, None) for code in codes] + [(0, sig) for sig in (9, 15, 6, 11)]
    with open(base / "qq.log", "ab") as log:
        for code, sig in cases:
            env = smtpd_env(home, QMAILQUEUE=script, QQ_EXIT=code, QQ_SIGNAL=sig or "")
            reply = send_one(env, log, body_for(f"qq{code}", 300))
            if sig:
                expect = replies.queue_failure(replies.QQ_CRASHED)
            else:
                expect = replies.queue_failure(replies.qq_status(code))
            result.check(reply == expect, f"exit {code} signal {sig}: {reply!r}, "
                                          f"expected {expect!r}")
            if reply.startswith(b"250"):
                result.fail(f"exit {code} signal {sig} answered 250")
    _empty(home / "spool", result, "qmail-queue failures")
    result.faults = len(cases) if result.ok else 0
    result.detail = (f"{len(cases) - 4} exit codes and signals 9/15/6/11: "
                     "qmail's 451/554 texts, never 250")
    result.seconds = time.monotonic() - started
    return result
