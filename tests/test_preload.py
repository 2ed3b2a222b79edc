"""tcpserver --preload: the forked smtpd-child sees exactly what exec gives it.

The child's view is read by the kernel's account (/proc/PID: signal
dispositions and mask, descriptors, ids, name) while it serves a session,
and its environment is the one it hands its queue program; each is compared
between our tcpserver exec'ing smtpd-child and --preload forking it.
"""

import ast
import importlib.util
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import our_program
from smtpd_servers import UNANSWERED_DNS, Client, make_home
from tcpserver_py.server.preloading.launcher import PRELOADABLE, exit_status, parse_launcher

# Stand-in for qmail-queue that records the environment it was given.
ENV_QUEUE = """#!/bin/sh
cat > /dev/null
cat <&1 > /dev/null
env > "$OUT/env.$$"
exit 0
"""
GLIBC_SPAWN_IGNORED = (1 << 31) | (1 << 32)      # signals 32 and 33
STATUS_FIELDS = ("SigBlk", "SigIgn", "SigCgt", "Uid", "Gid", "Groups")
NOBODY = 65534


def bit(signum: int) -> int:
    return 1 << (signum - 1)


class Server:
    """Our tcpserver running smtpd-child, by exec or --preload.  -h (a name
    lookup, refused at once) is done by the parent's poll loop
    (server/lookupwait.py) before the program is started."""

    def __init__(self, work: Path, preload: bool, extra=(), env=None, pass_fds=(),
                 lookups="-hRl0"):
        self.errors = work / "stderr"
        rules = work / "rules.cdb"
        if not rules.exists():
            subprocess.run([our_program("tcprules"), str(rules), str(work / "rules.tmp")],
                           input=b':allow,RULEVAR="from a rule",LC_CTYPE="C"\n', check=True, timeout=10)

        def start_state():
            # A supervisor's choices that exec keeps: an ignored SIGHUP
            # (nohup) and a blocked SIGUSR2.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})

        with open(self.errors, "wb") as err:
            self.proc = subprocess.Popen(
                [our_program("tcpserver"), *(["--preload"] if preload else []), "-v", "-1",
                 lookups, "-x", str(rules), *extra, "127.0.0.1", "0",
                 our_program("smtpd-child")],
                stdout=subprocess.PIPE, stderr=err, env={"DNSCACHEIP": UNANSWERED_DNS, **env},
                pass_fds=pass_fds,
                preexec_fn=start_state)
        self.port = int(self.proc.stdout.readline())

    def log(self) -> bytes:
        return self.errors.read_bytes()

    def child_pid(self, nth: int) -> int:
        """The pid of the nth (from 1) connection's child, from the -v log."""
        deadline = time.monotonic() + 10
        while True:
            pids = [int(line.split()[2]) for line in self.log().splitlines()
                    if line.startswith(b"tcpserver: pid ")]
            if len(pids) >= nth:
                return pids[nth - 1]
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.01)

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()


def describe_fds(pid: int) -> dict:
    """fd -> (what it is, its open flags), from /proc."""
    fds = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        target = os.readlink(f"/proc/{pid}/fd/{name}")
        kind = target.split(":", 1)[0] if target.startswith(("socket:", "pipe:")) else target
        with open(f"/proc/{pid}/fdinfo/{name}") as info:
            flags = next(line.split()[1] for line in info if line.startswith("flags:"))
        fds[int(name)] = (kind, flags)
    return fds


def snapshot(pid: int) -> dict:
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)
    with open(f"/proc/{pid}/comm") as comm:
        name = comm.read().strip()
    return {"status": {k: fields[k] for k in STATUS_FIELDS}, "fds": describe_fds(pid),
            "comm": name, "owner": os.stat(f"/proc/{pid}").st_uid}


def observe(work: Path, preload: bool, extra, pass_fd: int, lookups="-hRl0"):
    """Serve one session; return the child's /proc snapshot and its queue's environment."""
    home = work / "qmail"
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    out.chmod(0o777)
    env = {"PATH": "/usr/bin:/bin", "QMAILHOME": str(home), "QMAILQUEUE": str(work / "queue"),
           "OUT": str(out), "FOO": "bar baz", "TZ": "Europe/Paris", "TCPREMOTEHOST": "stale"}
    server = Server(work, preload, extra, env, pass_fds=(pass_fd,), lookups=lookups)
    try:
        client = Client(server.port)
        try:
            assert client.reply() == b"220 mail.example.com ESMTP\r\n"
            # Read once the child waits for a command: right after the 220
            # it still opens and closes files (its controls are parsed then).
            assert client.command(b"HELO x").startswith(b"250 ")
            seen = snapshot(server.child_pid(1))
            for line, reply in ((b"MAIL FROM:<a@b.test>", b"250 "),
                                (b"RCPT TO:<u@example.com>", b"250 "), (b"DATA", b"354 "),
                                (b"Subject: t\r\n\r\nhi\r\n.", b"250 "), (b"QUIT", b"221 ")):
                assert client.command(line).startswith(reply), line
        finally:
            client.close()
    finally:
        server.stop()
    (dump,) = out.iterdir()
    environment = dict(line.split("=", 1) for line in dump.read_text().splitlines())
    del environment["TCPREMOTEPORT"]          # a new client port each time,
    del environment["TCPLOCALPORT"]           # and a new server port
    return seen, environment


@pytest.fixture
def work():
    """A world-readable directory (the child may run as nobody)."""
    path = Path(tempfile.mkdtemp(prefix="preload-"))
    path.chmod(0o755)
    make_home(path)
    queue = path / "queue"
    queue.write_text(ENV_QUEUE)
    queue.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ids", [False, True], ids=["same-user", "with-u-g"])
@pytest.mark.parametrize("lookups", ["-hRl0", "-HRl0"], ids=["lookup", "quick-path"])
def test_preloaded_child_sees_what_exec_gives(work, ids, lookups):
    """Exec'd against preloaded, with a name lookup (done by the parent's
    poll loop) or none: both then take the parent's quick path."""
    if ids and os.getuid() != 0:
        pytest.skip("-u/-g need root to change user")
    extra = ["-u", str(NOBODY), "-g", str(NOBODY)] if ids else []
    read_end, write_end = os.pipe()       # inheritable only where passed on below
    os.set_inheritable(read_end, True)
    try:
        preloaded, env_preload = observe(work, True, extra, read_end, lookups)
        if ids and not nobody_can_run_python():
            # Only exec needs to read the interpreter as nobody; the
            # preloaded child was imported before the switch.
            print("exec as nobody impossible here (the interpreter is not readable by "
                  "uid 65534): only the preloaded child is checked")
            by_exec, env_exec = preloaded, env_preload
        else:
            by_exec, env_exec = observe(work, False, extra, read_end)
    finally:
        os.close(read_end)
        os.close(write_end)
    # The exec'd program is started by posix_spawn from the parent (the
    # lookups too are the parent's now): glibc leaves its internal signals
    # 32 and 33 ignored there (docs/tcpserver.md, How a connection is
    # served); the preloaded child, forked, has them as the server had them
    # -- ignored too when whatever started the server used posix_spawn
    # (GNU make does), as under the C tcpserver.  Every other signal must agree.
    for seen in (preloaded, by_exec):
        seen["status"]["SigIgn"] = "%016x" % (int(seen["status"]["SigIgn"], 16)
                                              & ~GLIBC_SPAWN_IGNORED)
    assert preloaded == by_exec
    assert env_preload == env_exec
    # ... and what both see is what a UCSPI child must see.
    status = by_exec["status"]
    assert int(status["SigIgn"], 16) & bit(signal.SIGHUP)             # kept from the start
    assert int(status["SigIgn"], 16) & bit(signal.SIGPIPE)            # CPython's own
    assert not int(status["SigIgn"], 16) & bit(signal.SIGTERM)
    assert not int(status["SigCgt"], 16) & (bit(signal.SIGTERM) | bit(signal.SIGCHLD))
    assert int(status["SigBlk"], 16) == bit(signal.SIGUSR2)
    assert sorted(by_exec["fds"]) == [0, 1, 2, read_end]
    assert by_exec["fds"][0][0] == by_exec["fds"][1][0] == "socket"
    assert by_exec["comm"] == "smtpd-child"
    if ids:
        assert by_exec["owner"] == NOBODY         # dumpable, as after exec
        assert status["Uid"].split() == [str(NOBODY)] * 4
        assert status["Gid"].split() == [str(NOBODY)] * 4
    assert env_exec["RULEVAR"] == "from a rule" and env_exec["FOO"] == "bar baz"
    assert env_exec["TZ"] == "Europe/Paris" and "TCPREMOTEHOST" not in env_exec
    # A rule's LC_CTYPE reaches the queue as written: exec'd, CPython's
    # coercion to C.UTF-8 is undone; preloaded, none was made.
    assert env_exec["LC_CTYPE"] == "C"
    assert env_exec["TCPREMOTEIP"] == "127.0.0.1" and env_exec["TCPLOCALHOST"] == "0"


def nobody_can_run_python() -> bool:
    def become_nobody():
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    try:
        return subprocess.run([our_program("smtpd-child")], input=b"", capture_output=True,
                              preexec_fn=become_nobody, timeout=20).returncode != 126
    except PermissionError:
        return False


def session_rcpt(port: int, recipient: bytes) -> bytes:
    client = Client(port)
    try:
        client.reply()
        client.command(b"HELO x")
        client.command(b"MAIL FROM:<a@b.test>")
        rcpt = client.command(b"RCPT TO:<" + recipient + b">")
        client.command(b"QUIT")
        return rcpt
    finally:
        client.close()


@pytest.mark.timeout(60)
def test_control_files_are_read_afresh_for_each_connection(work):
    env = {"PATH": "/usr/bin:/bin", "QMAILHOME": str(work / "qmail")}
    server = Server(work, True, env=env)
    try:
        assert session_rcpt(server.port, b"u@new.test").startswith(b"553 ")
        with open(work / "qmail" / "control" / "rcpthosts", "a") as rcpthosts:
            rcpthosts.write("new.test\n")
        assert session_rcpt(server.port, b"u@new.test") == b"250 ok\r\n"
    finally:
        server.stop()


@pytest.mark.timeout(60)
def test_a_crashing_child_never_reaches_the_server(work):
    env = {"PATH": "/usr/bin:/bin", "QMAILHOME": str(work / "qmail")}
    server = Server(work, True, env=env)
    try:
        doomed = Client(server.port)
        doomed.reply()
        pid = server.child_pid(1)
        os.kill(pid, signal.SIGSEGV)
        assert doomed.file.read() == b""
        doomed.close()
        deadline = time.monotonic() + 10
        while b"tcpserver: end %d status 11\n" % pid not in server.log():
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.01)
        assert server.proc.poll() is None
        assert session_rcpt(server.port, b"u@example.com") == b"250 ok\r\n"
    finally:
        server.stop()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("program", [["/bin/echo", "hello"], ["env", "GREETING=hello", "printenv",
                                                              "GREETING"]])
def test_any_other_program_is_execed(program):
    proc = subprocess.Popen([our_program("tcpserver"), "--preload", "-1", "-HRl0", "127.0.0.1",
                             "0", *program], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={"PATH": "/usr/bin:/bin"})
    try:
        port = int(proc.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert sock.makefile("rb").read() == b"hello\n"
    finally:
        proc.kill()
        proc.wait()
    warning = proc.stderr.read()
    assert warning.startswith(b"tcpserver: warning: not preloaded, run by exec: ")
    assert b"not a launcher of a preloadable program" in warning


def _is_module(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _function_level_imports(path):
    names = set()
    for function in ast.walk(ast.parse(path.read_text())):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, ast.Import):
                    names.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module:
                    for alias in node.names:   # a submodule, or a name in the module
                        sub = f"{node.module}.{alias.name}"
                        names.add(sub if _is_module(sub) else node.module)
    return names


def test_everything_smtpd_child_imports_late_is_preloaded():
    """After -u/-g the child may no longer read the installation (a checkout
    under a private directory): each module smtpd-child imports inside a
    function on its way through a session is imported by tcpserver first."""
    root = pathlib.Path(__file__).resolve().parent.parent / "smtpd_child"
    late = set()
    for name in ("main.py", "startup.py", "output.py", "session/driver.py",
                 "session/actions.py", "session/config.py"):
        late |= _function_level_imports(root / name)
    assert late, "no function-level import found: the check reads nothing"
    assert late <= set(PRELOADABLE["smtpd_child.main"]), late - set(PRELOADABLE["smtpd_child.main"])


def test_only_our_launchers_are_recognised():
    text = Path(our_program("smtpd-child")).read_bytes()
    launcher = parse_launcher(text)
    assert launcher is not None and launcher.module in PRELOADABLE
    assert os.path.samefile(launcher.python, Path(our_program("smtpd-child")).parent / "python")
    tcpserver = parse_launcher(Path(our_program("tcpserver")).read_bytes())
    assert tcpserver is not None and tcpserver.module not in PRELOADABLE
    # pip's wrapper, a shell script, an extra line: exec'd.
    assert parse_launcher(text.replace(b" -IS\n", b"\n")) is None
    assert parse_launcher(b"#!/bin/sh\nexec smtpd-child\n") is None
    assert parse_launcher(text + b"import os\n") is None
    assert parse_launcher(text.replace(b"sys.path[:0] = [", b"sys.path[:0] = [len(")) is None


@pytest.mark.parametrize("code, expected", [(None, (0, None)), (0, (0, None)), (3, (3, None)),
                                            (256 + 7, (7, None)), (True, (1, None)),
                                            ("fatal: no", (1, "fatal: no"))])
def test_exit_status_as_cpython_gives_it(code, expected):
    assert exit_status(code) == expected


@pytest.mark.timeout(30)
@pytest.mark.parametrize("path", [["-HRl0"], ["-hRl0"]], ids=["posix_spawn", "lookup"])
def test_signal_mask_passes_through_as_under_c(peer, path):
    """A signal blocked by whoever started tcpserver stays blocked in the
    program, as under the C tcpserver, on both of our exec paths."""
    masks = {}
    for name, exe in (("c", peer("/usr/bin/tcpserver")), ("ours", our_program("tcpserver"))):
        lookups = path if name == "ours" else ["-HRl0"]   # the C one always forks
        proc = subprocess.Popen(
            [exe, "-1", *lookups, "127.0.0.1", "0", "/bin/grep", "^SigBlk", "/proc/self/status"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin", "DNSCACHEIP": UNANSWERED_DNS},
            preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2}))
        try:
            port = int(proc.stdout.readline())
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                masks[name] = int(sock.makefile("rb").read().split()[1], 16)
        finally:
            proc.kill()
            proc.wait()
    assert masks["ours"] == masks["c"] == bit(signal.SIGUSR2)


@pytest.mark.timeout(30)
def test_no_finalizer_of_the_parent_closes_a_descriptor_of_the_program():
    """A socket lost in an unreachable cycle of the server must not be closed
    by the program's collector once its number has been reused: the
    preloaded program's own file stays open through a full collection."""
    import gc
    from tcpserver_py.server.preloading.noexec import Preloaded

    report_r, report_w = os.pipe()
    os.set_inheritable(report_w, True)         # kept through the close-on-exec step
    lost = socket.socket()                     # close-on-exec, as all of the server's
    number = lost.fileno()
    cycle = [lost]
    cycle.append(cycle)
    del lost, cycle                            # garbage now, collected by no one yet

    def program():
        # The program's own file on the number the lost socket had.
        fd = os.open(os.devnull, os.O_RDONLY)
        if fd != number:
            os.dup2(fd, number)
            os.close(fd)
        gc.collect()
        try:
            os.fstat(number)
            state = b"open"
        except OSError:
            state = b"closed"
        os.write(report_w, state)

    gc.disable()                  # the cycle must still exist when the child starts
    try:
        pid = os.fork()
        if pid == 0:
            Preloaded(b"/bin/true", (), program, quiet=True).run({b"PATH": b"/usr/bin:/bin"})
    finally:
        gc.enable()
    os.close(report_w)
    _, status = os.waitpid(pid, 0)
    report = os.read(report_r, 100)
    os.close(report_r)
    gc.collect()
    assert os.waitstatus_to_exitcode(status) == 0
    assert report == b"open"


@pytest.mark.timeout(60)
def test_the_preloading_server_has_no_at_fork_hooks():
    """threading and random register hooks that CPython runs in every forked
    child (about 0.2 ms and 100 copied pages for threading's): tcpserver with
    smtpd-child preloaded must import neither."""
    code = ("import sys; import tcpserver_py.tcpserver; "
            "from tcpserver_py.server.preloading.noexec import prepare; "
            "loaded, why = prepare((sys.argv[1],), b'/usr/bin:/bin'); "
            "assert loaded is not None, why; "
            "print(sorted({'threading', 'random'} & set(sys.modules)))")
    launcher = our_program("smtpd-child")
    python = str(Path(launcher).parent / "python")
    path = parse_launcher(Path(launcher).read_bytes()).path
    out = subprocess.run([python, "-I", "-S", "-c", f"import sys; sys.path[:0] = {list(path)!r}; "
                          + code, launcher], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def session_replies(port: int, commands) -> list:
    """The greeting and the reply to each command, then QUIT."""
    client = Client(port)
    try:
        found = [client.reply()] + [client.command(line) for line in commands]
        client.command(b"QUIT")
        return found
    finally:
        client.close()


# (control file, its text before (None: missing) and after, the session's
# commands, the reply that must change).  Each parsed control file, changed
# between two connections of one --preload server whose memo of parsed
# controls was warmed from these very files (smtpd_child/session/controls.py).
CHANGED_CONTROLS = [
    # Same size and the old mtime put back: only the bytes tell them apart.
    ("rcpthosts", "example.com\nmail.example.com\n", "exampla.com\nmail.example.com\n",
     [b"HELO x", b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>"], 3),
    ("rcpthosts", "example.com\n", None,
     [b"HELO x", b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>"], 3),
    ("badmailfrom", None, "#\n@B.test\n",
     [b"HELO x", b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>"], 3),
    ("badmailfrom", "a@b.test\n", "a@c.test\n",
     [b"HELO x", b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>"], 3),
    ("databytes", None, "10\n", [b"EHLO x", b"MAIL FROM:<a@b.test> SIZE=100"], 1),
    ("smtpgreeting", "one.example\n", "two.example\n", [b"HELO x"], 0),
    ("localiphost", "other.example\n", "mail.example.com\n",
     [b"HELO x", b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@[127.0.0.1]>"], 3),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name, before, after, commands, changed", CHANGED_CONTROLS)
def test_each_parsed_control_file_is_seen_afresh(work, name, before, after, commands, changed):
    control = work / "qmail" / "control"

    def write(text):
        if text is None:
            (control / name).unlink(missing_ok=True)
        else:
            (control / name).write_text(text)
    write(before)
    env = {"PATH": "/usr/bin:/bin", "QMAILHOME": str(work / "qmail")}
    exec_server = Server(work, False, env=env)
    server = Server(work, True, env=env)
    try:
        first = session_replies(server.port, commands)
        assert first == session_replies(exec_server.port, commands)
        stat = (control / name).stat() if before is not None else None
        write(after)
        if stat is not None and after is not None:
            os.utime(control / name, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        second = session_replies(server.port, commands)
        assert second == session_replies(exec_server.port, commands)
        assert first[changed] != second[changed], (first, second)
    finally:
        server.stop()
        exec_server.stop()


@pytest.mark.timeout(60)
def test_no_control_directory_at_start_up_is_no_warm_memo(work):
    later = work / "later"
    env = {"PATH": "/usr/bin:/bin", "QMAILHOME": str(later)}
    server = Server(work, True, env=env)
    try:
        (work / "qmail").rename(later)
        assert session_rcpt(server.port, b"u@example.com") == b"250 ok\r\n"
        assert session_rcpt(server.port, b"u@new.test").startswith(b"553 ")
    finally:
        server.stop()
    assert b"Traceback" not in server.log() and b"warning" not in server.log()
