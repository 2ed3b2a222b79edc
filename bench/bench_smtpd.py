"""smtpd-child speed: exec-to-greeting, and whole SMTP sessions per second.

1. Time from exec to the 220 greeting of smtpd-child (console script of the
   virtualenv) against `python -I -c pass` from the same virtualenv (the
   floor of any Python child), interleaved, medians.
2. smtp-source (1 KB messages, 10 sessions in parallel, one message per
   session) against: C tcpserver + smtpd-child (built-in spool, fsync per
   message), our tcpserver + smtpd-child, C tcpserver + mailfront (queuedir
   backend), and aiosmtpd (its own long-running server, discarding) when it
   is installed in the virtualenv.  Interleaved rounds, medians.
"""

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
MESSAGES = 300
PARALLEL = 10
GREETING_ROUNDS = 25
SESSION_ROUNDS = 2

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
    assert line.startswith(b"220 "), line
    return elapsed


def time_exit(argv) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - started


def greeting_benchmark(home: Path) -> None:
    env = {"QMAILHOME": str(home), "PATH": "/usr/bin:/bin"}
    child = [str(VENV_BIN / "smtpd-child")]
    floor = [str(VENV_BIN / "python"), "-I", "-c", "pass"]
    ours, base = [], []
    for _ in range(GREETING_ROUNDS):
        ours.append(time_greeting(child, env))
        base.append(time_exit(floor))
    a, b = statistics.median(ours) * 1000, statistics.median(base) * 1000
    print(f"exec to greeting: smtpd-child {a:.1f} ms, python -I -c pass {b:.1f} ms "
          f"(ratio {a / b:.2f}, {GREETING_ROUNDS} runs each, medians)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_tcpserver(tcpserver, rules, program, env):
    proc = subprocess.Popen([tcpserver, "-1", "-HRl0", "-c", "40", "-b", "64", "-x", rules,
                             "127.0.0.1", "0", *program],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    return proc, int(proc.stdout.readline())


def start_aiosmtpd():
    port = free_port()
    proc = subprocess.Popen([str(VENV_BIN / "python"), "-c", AIOSMTPD_SERVER, str(port)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdout.readline().startswith(b"ready")
    return proc, port


def run_source(port: int) -> float:
    started = time.perf_counter()
    subprocess.run(["smtp-source", "-c", "-l", "1024", "-m", str(MESSAGES), "-s", str(PARALLEL),
                    "-f", "s@c.test", "-t", "r@example.org", "-M", "c.test",
                    f"127.0.0.1:{port}"], check=True, stdout=subprocess.DEVNULL, timeout=120)
    return MESSAGES / (time.perf_counter() - started)


def sessions_benchmark(root: Path, home: Path) -> None:
    rules = str(root / "rules.cdb")
    subprocess.run(["/usr/bin/tcprules", rules, str(root / "rules.tmp")], input=b":allow\n",
                   check=True)
    queuedir = root / "queuedir"
    (queuedir / "tmp").mkdir(parents=True)
    (queuedir / "new").mkdir()
    env = {"QMAILHOME": str(home), "PATH": "/usr/bin:/bin", "QUEUEDIR": str(queuedir)}
    child = [str(VENV_BIN / "smtpd-child")]
    setups = {
        "C tcpserver + smtpd-child": lambda: start_tcpserver("/usr/bin/tcpserver", rules, child, env),
        "our tcpserver + smtpd-child": lambda: start_tcpserver(str(VENV_BIN / "tcpserver"), rules,
                                                               child, env),
        "C tcpserver + mailfront": lambda: start_tcpserver(
            "/usr/bin/tcpserver", rules, ["/usr/sbin/mailfront", "smtp", "queuedir", "accept"], env),
    }
    try:
        import aiosmtpd  # noqa: F401
        setups["aiosmtpd (one process)"] = start_aiosmtpd
    except ImportError:
        print("aiosmtpd not installed in the virtualenv: skipped (pip install aiosmtpd)")
    results = {name: [] for name in setups}
    for _ in range(SESSION_ROUNDS):
        for name, start in setups.items():
            try:
                proc, port = start()
            except (OSError, ValueError, AssertionError) as e:
                print(f"{name}: could not start ({e})")
                continue
            try:
                results[name].append(run_source(port))
            except (subprocess.SubprocessError, OSError) as e:
                print(f"{name}: smtp-source failed ({e})")
            finally:
                proc.kill()
                proc.wait()
            time.sleep(0.5)
    base = statistics.median(results["C tcpserver + smtpd-child"] or [float("nan")])
    print(f"sessions/s, smtp-source -l 1024 -m {MESSAGES} -s {PARALLEL}, "
          f"median of {SESSION_ROUNDS} rounds:")
    for name, values in results.items():
        if values:
            value = statistics.median(values)
            print(f"  {name:32s} {value:8.1f}/s  (x{value / base:.2f} of C tcpserver + smtpd-child)")
    spooled = len(os.listdir(home / "spool" / "new"))
    print(f"  (messages in the smtpd-child spool: {spooled})")


def main() -> int:
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
            sessions_benchmark(root, home)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
