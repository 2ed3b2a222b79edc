"""smtpd-child speed: exec-to-greeting, and whole SMTP sessions per second.

1. Time from exec to the 220 greeting of smtpd-child (its launcher: python
   -I -S) against `python -I -S -c pass` from the same virtualenv (the floor
   of any Python program), interleaved, medians.
2. smtp-source (postfix; 1 KB messages, 1 recipient, 10 sessions in
   parallel, one message per session) against, in interleaved rounds:
     our tcpserver --preload + smtpd-child (built-in spool: two fsyncs a message)
     our tcpserver (exec) + smtpd-child, C tcpserver + smtpd-child
     C tcpserver + mailfront (queuedir backend)
     aiosmtpd (one long-running process, a handler that discards each message)
   Sessions per second (medians) and the server's CPU per session: the
   listening process plus its reaped children (tcpserver's utime, stime,
   cutime, cstime), or the aiosmtpd process.

Run: python -m bench.bench_smtpd [messages-per-round] [rounds]
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
MESSAGES = 400
PARALLEL = 10
GREETING_ROUNDS = 40
SESSION_ROUNDS = 5
TICKS = os.sysconf("SC_CLK_TCK")

AIOSMTPD_SERVER = """
import asyncio, sys
from aiosmtpd.controller import Controller
class Discard:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"
controller = Controller(Discard(), hostname="127.0.0.1", port=int(sys.argv[1]),
                        server_hostname="bench.test")
controller.start()
print("ready", flush=True)
sys.stdin.read()
controller.stop()
"""

PRELOAD = "ours --preload + smtpd-child"
AIOSMTPD = "aiosmtpd (discarding)"
MAILFRONT = "C tcpserver + mailfront"
RESULTS: list[dict] = []       # read by bench.report


def make_home(root: Path) -> Path:
    home = root / "qmail"
    (home / "control").mkdir(parents=True)
    (home / "spool").mkdir()
    (home / "control" / "me").write_text("localhost\n")
    (home / "control" / "rcpthosts").write_text("localhost\nexample.org\n")
    return home


def time_greeting(argv, env) -> float:
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - started
    proc.stdin.close()
    proc.wait()
    proc.stdout.close()
    assert line.startswith(b"220 "), line
    return elapsed


def time_exit(argv) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - started


def greeting_benchmark(home: Path) -> None:
    env = {"QMAILHOME": str(home), "PATH": "/usr/bin:/bin"}
    child = [str(VENV_BIN / "smtpd-child")]
    floor = [str(VENV_BIN / "python"), "-I", "-S", "-c", "pass"]
    site = [str(VENV_BIN / "python"), "-I", "-c", "pass"]
    ours, base, with_site = [], [], []
    for _ in range(GREETING_ROUNDS):
        ours.append(time_greeting(child, env))
        base.append(time_exit(floor))
        with_site.append(time_exit(site))
    a, b, c = (statistics.median(x) * 1000 for x in (ours, base, with_site))
    print(f"exec to greeting: smtpd-child {a:.1f} ms, python -I -S -c pass {b:.1f} ms "
          f"(ratio {a / b:.2f}); python -I -c pass {c:.1f} ms; {GREETING_ROUNDS} runs each, "
          "medians")
    RESULTS.append({"scenario": "exec to greeting", "unit": "ms", "ours": a,
                    "peers": {"python -I -S -c pass": b}, "ratio": a / b,
                    "command": "smtpd-child (launcher: python -I -S) vs python -I -S -c pass"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_tcpserver(tcpserver, rules, program, env, extra=()):
    proc = subprocess.Popen([tcpserver, *extra, "-1", "-HRl0", "-c", "40", "-b", "64", "-x",
                             rules, "127.0.0.1", "0", *program],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    return proc, int(proc.stdout.readline())


def start_aiosmtpd():
    port = free_port()
    proc = subprocess.Popen([str(VENV_BIN / "python"), "-c", AIOSMTPD_SERVER, str(port)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdout.readline().startswith(b"ready")
    return proc, port


def cpu_seconds(pid: int) -> float:
    """The process's CPU plus that of its reaped children."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / TICKS


def source_command(port: int, messages: int) -> list[str]:
    return ["smtp-source", "-l", "1024", "-m", str(messages), "-s", str(PARALLEL),
            "-f", "s@c.test", "-t", "r@example.org", "-M", "c.test", f"127.0.0.1:{port}"]


def run_source(proc, port: int, messages: int) -> tuple[float, float]:
    """(sessions per second, server CPU ms per session)."""
    cpu0 = cpu_seconds(proc.pid)
    started = time.perf_counter()
    subprocess.run(source_command(port, messages), check=True, stdout=subprocess.DEVNULL,
                   timeout=300)
    rate = messages / (time.perf_counter() - started)
    time.sleep(0.3)                       # the last children reaped
    return rate, (cpu_seconds(proc.pid) - cpu0) / messages * 1000


def session_setup(root: Path, home: Path) -> tuple[str, dict]:
    """The rules cdb (`:allow`) and the environment every server in the
    sessions benchmark runs with (mailfront's queuedir included)."""
    rules = str(root / "rules.cdb")
    subprocess.run(["/usr/bin/tcprules", rules, str(root / "rules.tmp")], input=b":allow\n",
                   check=True)
    queuedir = root / "queuedir"
    (queuedir / "tmp").mkdir(parents=True)
    (queuedir / "new").mkdir()
    return rules, {"QMAILHOME": str(home), "PATH": "/usr/bin:/bin", "QUEUEDIR": str(queuedir)}


def sessions_benchmark(root: Path, home: Path, messages: int, rounds: int) -> None:
    rules, env = session_setup(root, home)
    child = [str(VENV_BIN / "smtpd-child")]
    ours = str(VENV_BIN / "tcpserver")
    setups = {
        PRELOAD: lambda: start_tcpserver(ours, rules, child, env, ["--preload"]),
        "ours (exec) + smtpd-child": lambda: start_tcpserver(ours, rules, child, env),
        "C tcpserver + smtpd-child": lambda: start_tcpserver("/usr/bin/tcpserver", rules,
                                                             child, env),
        MAILFRONT: lambda: start_tcpserver(
            "/usr/bin/tcpserver", rules, ["/usr/sbin/mailfront", "smtp", "queuedir", "accept"],
            env),
    }
    try:
        import aiosmtpd  # noqa: F401
        setups[AIOSMTPD] = start_aiosmtpd
    except ImportError:
        print("aiosmtpd not installed in the virtualenv: skipped (make bench installs it)")
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in setups}
    for _ in range(rounds):
        for name, start in setups.items():
            try:
                proc, port = start()
            except (OSError, ValueError, AssertionError) as e:
                print(f"{name}: could not start ({e})")
                continue
            try:
                results[name].append(run_source(proc, port, messages))
            except (subprocess.SubprocessError, OSError) as e:
                print(f"{name}: smtp-source failed ({e})")
            finally:
                proc.kill()
                proc.wait()
                proc.stdout.close()
            time.sleep(0.3)
    print(f"sessions/s: {' '.join(source_command(0, messages)[:-1])} HOST:PORT, "
          f"median of {rounds} interleaved rounds; server CPU per session (median)")
    medians = {}
    for name, values in results.items():
        if values:
            rate = statistics.median(v[0] for v in values)
            cpu = statistics.median(v[1] for v in values)
            medians[name] = (rate, cpu)
            print(f"  {name:32s} {rate:8.1f}/s   {cpu:6.2f} ms CPU/session")
    if PRELOAD in medians:
        ours_rate = medians[PRELOAD][0]
        peers = {name: medians[name][0] for name in medians if name != PRELOAD}
        for peer in (AIOSMTPD, MAILFRONT):
            if peer in medians:
                print(f"  ratio {PRELOAD} / {peer}: {ours_rate / medians[peer][0]:.2f}")
        RESULTS.append({"scenario": "SMTP sessions/s", "unit": "sessions/s", "ours": ours_rate,
                        "ours_name": PRELOAD, "peers": peers,
                        "cpu_ms": {name: cpu for name, (_, cpu) in medians.items()},
                        "ratio": {peer: ours_rate / medians[peer][0] for peer in
                                  (AIOSMTPD, MAILFRONT) if peer in medians},
                        "command": " ".join(source_command(0, messages)[:-1]) + " 127.0.0.1:PORT"})
    spooled = len(os.listdir(home / "spool" / "new"))
    print(f"  (messages in the smtpd-child spool: {spooled})")


def main(argv: list[str] | None = None) -> int:
    argv = argv or []
    messages = int(argv[0]) if argv else MESSAGES
    rounds = int(argv[1]) if len(argv) > 1 else SESSION_ROUNDS
    missing = [p for p in ("/usr/bin/tcpserver", "/usr/bin/tcprules", "/usr/sbin/mailfront")
               if not os.access(p, os.X_OK)]
    if not shutil.which("smtp-source"):
        missing.append("smtp-source")
    root = Path(tempfile.mkdtemp(prefix="bench-smtpd-"))
    try:
        home = make_home(root)
        greeting_benchmark(home)
        if missing:
            print("session benchmark skipped, missing: " + ", ".join(missing))
        else:
            sessions_benchmark(root, home, messages, rounds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
