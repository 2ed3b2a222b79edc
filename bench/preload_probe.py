"""Run by bench_fork in a fresh interpreter: where a preloaded session's CPU goes.

    python -I -S preload_probe.py MODE COUNT LAUNCHER     (sys.path set by the caller)

The process becomes what `tcpserver --preload` is when it forks a child:
tcpserver's modules imported, smtpd-child preloaded by noexec.prepare (the
launcher found and read as tcpserver reads it), the collector frozen.  It
listens on 127.0.0.1, and for each session it connects to itself, accepts,
and forks the child with Preloaded.start (direct.py's call); then it plays
the client (greeting, EHLO, MAIL, RCPT, DATA with 1 KB, QUIT, one reply at
a time) and reaps the child with wait4, whose rusage is the child's whole
cost.  MODE:
  floor    fork, and the child calls os._exit(0) at once (nothing else);
  session  a whole session; the child records its own CPU time and minor
           faults (getrusage) at each step into a shared page: when run()
           starts (after fork's return and the at-fork hooks), when main()
           starts (the exec emulation done), after each reply it writes,
           around each fsync, and at os._exit;
  warm     measurement only, never what tcpserver does: one child runs
           main() for COUNT sessions in turn; the later ones show what the
           same work costs once nothing is cold and no page is shared.
Prints JSON: a row per session, and which of the modules known to register
at-fork hooks (threading, random) the process has imported.
"""

import gc
import json
import mmap
import os
import resource
import shutil
import socket
import struct
import sys
from pathlib import Path

import tcpserver_py.tcpserver  # noqa: F401  (the parent's modules, as in tcpserver)
from smtpd_child import main as smtpd_main
from tcpserver_py.server.preloading import noexec

MESSAGE = (b"From: s@c.test\r\nTo: r@example.org\r\nSubject: bench\r\n\r\n"
           + (b"x" * 70 + b"\r\n") * 13 + b".\r\n")
DIALOGUE = [b"EHLO c.test\r\n", b"MAIL FROM:<s@c.test>\r\n", b"RCPT TO:<r@example.org>\r\n",
            b"DATA\r\n", MESSAGE, b"QUIT\r\n"]
SLOTS = 16                  # marks per child: 8-byte (cpu, faults) pairs
FSYNC_SLOT = SLOTS - 1      # running total of the time inside fsync
RECORD = struct.Struct("dd")


def usage() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, float(r.ru_minflt)


class Marks:
    """The child's marks, in a shared anonymous page the parent reads."""

    def __init__(self):
        self.page = mmap.mmap(-1, RECORD.size * SLOTS)
        self.next = 0

    def reset(self) -> None:
        self.page[:] = bytes(len(self.page))
        self.next = 0

    def mark(self) -> None:
        if self.next < FSYNC_SLOT:
            RECORD.pack_into(self.page, self.next * RECORD.size, *usage())
            self.next += 1

    def add(self, cpu: float, faults: float) -> None:
        old = RECORD.unpack_from(self.page, FSYNC_SLOT * RECORD.size)
        RECORD.pack_into(self.page, FSYNC_SLOT * RECORD.size, old[0] + cpu, old[1] + faults)

    def read(self) -> list[tuple[float, float]]:
        return [RECORD.unpack_from(self.page, i * RECORD.size) for i in range(SLOTS)]


def instrument(loaded, marks: Marks) -> None:
    """Wrap the steps of the child; done before gc.freeze(), as tcpserver
    would have imported everything by then."""
    run, main, flush, fsync, _exit = (noexec.Preloaded.run, loaded.main,
                                      smtpd_main.Output.flush, os.fsync, os._exit)

    def marked_run(self, env):
        marks.mark()
        run(self, env)

    def marked_main():
        marks.mark()
        return main()

    def marked_flush(self):
        had = bool(self.pending)
        flush(self)
        if had:
            marks.mark()

    def timed_fsync(fd):
        before = usage()
        fsync(fd)
        after = usage()
        marks.add(after[0] - before[0], after[1] - before[1])

    def marked_exit(status):
        marks.mark()
        _exit(status)

    noexec.Preloaded.run = marked_run
    loaded.main = marked_main
    smtpd_main.Output.flush = marked_flush
    os.fsync = timed_fsync
    os._exit = marked_exit


def replies(client: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = client.recv(4096)
        if not chunk:
            return data
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) > 1 and lines[-2][3:4] == b" ":
            return data


def converse(client: socket.socket) -> None:
    if not replies(client).startswith(b"220 "):
        raise SystemExit("no greeting")
    for line in DIALOGUE:
        client.sendall(line)
        if replies(client)[:1] not in b"23":
            raise SystemExit(f"refused: {line!r}")


def make_home(root: Path) -> Path:
    home = root / "qmail"
    (home / "control").mkdir(parents=True)
    (home / "spool").mkdir(mode=0o700)
    (home / "control" / "me").write_text("localhost\n")
    (home / "control" / "rcpthosts").write_text("localhost\nexample.org\n")
    return home


def environment(home: Path) -> dict[bytes, bytes]:
    return {b"QMAILHOME": os.fsencode(home), b"PATH": b"/usr/bin:/bin", b"PROTO": b"TCP",
            b"TCPLOCALIP": b"127.0.0.1", b"TCPLOCALPORT": b"25", b"TCPLOCALHOST": b"0",
            b"TCPREMOTEIP": b"127.0.0.1", b"TCPREMOTEPORT": b"40000"}


def forked_sessions(mode, count, loaded, env, listener, marks) -> list:
    rows = []
    for _ in range(count):
        client = socket.create_connection(listener.getsockname())
        fd = listener.accept()[0].detach()
        marks.reset()
        before = usage()
        if mode == "floor":
            pid = os.fork()
            if pid == 0:
                os._exit(0)
        else:
            pid = loaded.start(fd, env)
        after = usage()
        os.close(fd)
        if mode == "session":
            converse(client)
        client.close()
        _, status, child = os.wait4(pid, 0)
        if status:
            raise SystemExit(f"child status {status}")
        rows.append({"parent": [after[0] - before[0], after[1] - before[1]],
                     "child": [child.ru_utime + child.ru_stime, child.ru_minflt],
                     "marks": marks.read()})
    return rows


def warm_sessions(count, loaded, env, listener) -> list:
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        noexec._signals_as_after_exec()
        noexec._replace_environment(env)
        rows = []
        for _ in range(count):
            conn = listener.accept()[0]
            os.dup2(conn.fileno(), 0)
            os.dup2(conn.fileno(), 1)
            conn.close()
            before = usage()
            try:
                loaded.main()
            except SystemExit:
                pass
            after = usage()
            rows.append([after[0] - before[0], after[1] - before[1]])
        os.write(report_w, json.dumps(rows).encode())
        os._exit(0)
    os.close(report_w)
    for _ in range(count):
        with socket.create_connection(listener.getsockname()) as client:
            converse(client)
    os.waitpid(pid, 0)
    with os.fdopen(report_r, "rb") as report:
        return json.loads(report.read())


def main() -> None:
    mode, count, launcher = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    # Not tempfile: it imports random, whose at-fork hook (a reseed) would
    # run in every child, as threading's would; tcpserver imports neither.
    root = Path(f"/tmp/bench-preload-{os.getpid()}")
    root.mkdir(mode=0o700)
    try:
        env = environment(make_home(root))
        # As tcpserver is started with the QMAILHOME its children get: the
        # preload hook (launcher.PRELOAD_HOOKS) reads the control files there.
        os.environ["QMAILHOME"] = os.fsdecode(env[b"QMAILHOME"])
        loaded, why = noexec.prepare((launcher,), b"/usr/bin:/bin", False)
        if loaded is None:
            raise SystemExit(why)
        marks = Marks()
        if mode == "session":
            instrument(loaded, marks)
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        gc.freeze()
        if mode == "warm":
            rows = warm_sessions(count, loaded, env, listener)
        else:
            rows = forked_sessions(mode, count, loaded, env, listener, marks)
        # Modules whose at-fork hooks CPython runs in every child.
        hooked = sorted({"random", "threading"} & set(sys.modules))
        print(json.dumps({"rows": rows, "at_fork_hooks": hooked}))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
