"""The smallest `softlimit -m` under which a whole SMTP session still works.

    python -m bench.memory_floor [BIN_DIR]

For each program (tcpserver, tcp-env, smtpd-child) alone under the limit,
and for a run script's whole tree (`softlimit -m N tcpserver ... smtpd-child`,
on the quick path and on the fork path a banner takes), bisects the address
space limit (softlimit -m sets RLIMIT_AS, DATA, STACK and MEMLOCK) to 16 KiB:
a probe passes when a client gets its message accepted and the spool holds
it.  BIN_DIR defaults to the directory of this interpreter (the .venv, or an
installed prefix's lib/tcpserver-py/bin when given its bin).
"""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time

STEP = 16 * 1024
LOW, HIGH = 8 * 1024 * 1024, 256 * 1024 * 1024
PROBE_TIMEOUT = 5.0  # a session takes about 50 ms; CPython may spin far below the floor
UNLIMITED = str(1 << 40)  # what the programs not under test get
SOFTLIMIT = "/usr/bin/softlimit"


def setup(workdir: pathlib.Path, bin_dir: pathlib.Path) -> tuple[pathlib.Path, str]:
    """A qmail home (control files, spool) and a rules cdb; (home, cdb)."""
    home = workdir / "qmail"
    (home / "control").mkdir(parents=True)
    (home / "control" / "me").write_text("mail.example.com\n")
    (home / "control" / "rcpthosts").write_text("example.com\n")
    (home / "spool").mkdir()
    cdb = workdir / "rules.cdb"
    subprocess.run([str(bin_dir / "tcprules"), str(cdb), str(workdir / "rules.tmp")],
                   input=b"127.:allow,RELAYCLIENT=\"\"\n:allow\n", check=True, timeout=60)
    return home, str(cdb)


def command(case: str, limit: int, bin_dir: pathlib.Path, cdb: str) -> list[str]:
    """The tcpserver command line for one case with `limit` bytes."""
    def under(program: str, n) -> list[str]:
        return [SOFTLIMIT, "-m", str(n), program]

    tcpserver, tcpenv, child = (str(bin_dir / name) for name in
                                ("tcpserver", "tcp-env", "smtpd-child"))
    options = ["-1", "-v", "-HR", "-l", "localhost", "-x", cdb, "127.0.0.1", "0"]
    if case == "tcpserver":
        return under(tcpserver, limit) + options + under(child, UNLIMITED)
    if case == "smtpd-child":
        return [tcpserver] + options + under(child, limit)
    if case == "tcp-env":
        return ([tcpserver] + options + under(tcpenv, limit)
                + ["-HR", "-x", cdb] + under(child, UNLIMITED))
    if case == "run script":
        return under(tcpserver, limit) + options + [child]
    if case == "run script, fork path":
        return under(tcpserver, limit) + ["-B", "banner\r\n"] + options + [child]
    raise ValueError(case)


def _reply(reader) -> bytes:
    """One SMTP reply (the last line of a multi-line one)."""
    while True:
        line = reader.readline(1024)
        if len(line) < 4 or line[3:4] != b"-":
            return line


def session(port: int, timeout: float = 20.0) -> bool:
    """One whole SMTP session; True when the message was accepted."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            reader = sock.makefile("rb")
            line = reader.readline(1024)
            while line and not line.startswith(b"220 "):  # a banner first
                line = reader.readline(1024)
            if not line:
                return False
            steps = [(b"HELO client.test\r\n", b"250"),
                     (b"MAIL FROM:<a@client.test>\r\n", b"250"),
                     (b"RCPT TO:<b@example.com>\r\n", b"250"), (b"DATA\r\n", b"354"),
                     (b"Subject: t\r\n\r\nhello\r\n.\r\n", b"250"), (b"QUIT\r\n", b"221")]
            for data, code in steps:
                sock.sendall(data)
                if not _reply(reader).startswith(code):
                    return False
            return True
    except OSError:
        return False


def spooled(home: pathlib.Path) -> int:
    return sum(len(files) for _, _, files in os.walk(home / "spool" / "new"))


def probe(argv: list[str], home: pathlib.Path, timeout: float = 20.0
          ) -> tuple[bool, int | None, bytes]:
    """Start tcpserver, run one session, stop it once the child has ended:
    (session worked, tcpserver's exit code if it ended by itself, stderr)."""
    env = {"PATH": "/usr/bin:/bin", "QMAILHOME": str(home)}
    before = spooled(home)
    code = None
    with tempfile.TemporaryFile() as log:
        # A group of its own: under a limit far too low, CPython 3.11 may spin
        # at start-up, in a child that would otherwise outlive tcpserver.
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, env=env,
                                start_new_session=True)
        try:
            port_line = proc.stdout.readline()
            ok = port_line.strip().isdigit() and session(int(port_line), timeout)
            ok = ok and spooled(home) == before + 1
            if not port_line:
                code = proc.wait(timeout)
            else:
                wait_for(log, b"tcpserver: end ", timeout)
        finally:
            for signum in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, signum)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(timeout / 4)
                    break
                except subprocess.TimeoutExpired:
                    continue
            proc.stdout.close()
        log.seek(0)
        return ok, code, log.read()


def wait_for(log, text: bytes, timeout: float) -> None:
    """Until `text` is in the log file (tcpserver -v logs each child's end)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log.seek(0)
        if text in log.read():
            return
        time.sleep(0.01)


def floor(case: str, bin_dir: pathlib.Path, home: pathlib.Path, cdb: str) -> int:
    """Smallest passing limit, to STEP (assumes failure is monotonic)."""
    low, high = LOW, HIGH  # low fails, high passes
    if not probe(command(case, high, bin_dir, cdb), home)[0]:
        raise RuntimeError(f"{case}: fails even with {high} bytes")
    while high - low > STEP:
        middle = (low + high) // 2 // STEP * STEP
        if probe(command(case, middle, bin_dir, cdb), home, PROBE_TIMEOUT)[0]:
            high = middle
        else:
            low = middle
    return high


CASES = ("tcpserver", "tcp-env", "smtpd-child", "run script", "run script, fork path")


def main() -> None:
    bin_dir = pathlib.Path(sys.argv[1] if len(sys.argv) > 1
                           else os.path.dirname(sys.executable)).absolute()
    with tempfile.TemporaryDirectory() as tmp:
        home, cdb = setup(pathlib.Path(tmp), bin_dir)
        for case in CASES:
            print(f"{case:24} softlimit -m {floor(case, bin_dir, home, cdb)}", flush=True)


if __name__ == "__main__":
    main()
