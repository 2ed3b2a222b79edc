"""--pidfile and --daemon: for init scripts that start a server and return.

Under supervise, runit, s6 or systemd none of this is used: tcpserver stays
in the foreground (the supervisor is the parent, stderr is the log pipe).

The order matters, so that every mistake is reported on the terminal:
1. `Pidfile.lock` (before binding): a second start with the same pidfile
   refuses, naming the running pid.  The lock is flock(2) on the open file,
   held as long as the server lives; a file left by a crashed run is not
   locked, so it never blocks a start.
2. the caller binds (a port in use fails in the foreground, as always),
   changes uid/gid, prints the port for -1;
3. `detach`: python-daemon's DaemonContext forks into the background, new
   session, working directory /, the invoking umask kept, stdin/stdout
   /dev/null, stderr to the --log file (appended) or to syslog through
   logger(1), the listening socket and the pidfile kept open; the pidfile
   then gets the daemon's pid, and only then does the command that started
   it exit (0), so `start` in an init script returns with the pidfile there.
At exit (SIGTERM, or the SIGQUIT graceful stop) the pidfile is removed.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
import shutil
from typing import Callable

import daemon  # python-daemon; imported now, before -u/-g (see tcpserver.py)

from ..errstr import error_str
from ..options import Options

SYSLOG_FACILITY = "mail"


class DaemonError(Exception):
    """A fatal start-up problem; `text` follows `tcpserver: fatal: `."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


class Pidfile:
    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.fd = -1

    def lock(self) -> None:
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise DaemonError(f"unable to open pidfile {self.path}: "
                                  f"{error_str(exc.errno)}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                running = _read_pid(fd)
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                    who = f"pid {running}" if running else "another process"
                    raise DaemonError(f"pidfile {self.path} is locked: "
                                      f"already running as {who}") from None
                raise DaemonError(f"unable to lock pidfile {self.path}: "
                                  f"{error_str(exc.errno)}") from None
            # A server that was just exiting may have removed the file we
            # opened: then our lock is on a file nobody else will look at.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except OSError:
                same = False
            if same:
                self.fd = fd
                return
            os.close(fd)
        raise DaemonError(f"unable to lock pidfile {self.path}: it keeps changing")

    def write(self, pid: int) -> None:
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, b"%d\n" % pid, 0)
        except OSError as exc:
            raise DaemonError(f"unable to write pidfile {self.path}: "
                              f"{error_str(exc.errno)}") from None

    def remove(self) -> None:
        """At exit.  After -u the directory may not let us unlink: then the
        file is emptied (an unlocked file never blocks a start anyway)."""
        if self.fd < 0:
            return
        try:
            os.unlink(self.path)
        except OSError:
            try:
                os.ftruncate(self.fd, 0)
            except OSError:
                pass
        os.close(self.fd)
        self.fd = -1


def _read_pid(fd: int) -> int:
    try:
        text = os.pread(fd, 32, 0)
        return int(text.split()[0]) if text.split() else 0
    except (OSError, ValueError):
        return 0


def open_log(target: str | None):
    """The daemon's stderr: None (/dev/null), a file, or logger(1) for
    `syslog` / `syslog:FACILITY`.  Opened before -u takes the rights away."""
    if target is None:
        return None
    if target == "syslog" or target.startswith("syslog:"):
        facility = target.partition(":")[2] or SYSLOG_FACILITY
        import subprocess   # here only: it brings threading, whose at-fork hook
        #                     every --preload child would run (about 0.2 ms)
        logger = shutil.which("logger")
        if logger is None:
            raise DaemonError("unable to log to syslog: logger(1) not found")
        try:
            proc = subprocess.Popen([logger, "-t", "tcpserver", "-p", f"{facility}.info"],
                                    stdin=subprocess.PIPE, start_new_session=True,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError as exc:
            raise DaemonError(f"unable to run {logger}: {error_str(exc.errno)}") from None
        return proc.stdin
    try:
        return open(target, "ab", buffering=0)
    except OSError as exc:
        raise DaemonError(f"unable to open log {target}: {error_str(exc.errno)}") from None


def absolute_paths(opts: Options) -> Options:
    """The daemon works in /: the paths given relative to where it was
    started (-x rules, a program path with a slash) are made absolute."""
    changes = {}
    if opts.rules is not None:
        changes["rules"] = os.path.abspath(opts.rules)
    if opts.program and "/" in opts.program[0]:
        changes["program"] = (os.path.abspath(opts.program[0]),) + opts.program[1:]
    return dataclasses.replace(opts, **changes)


def detach(keep: list[int], log) -> Callable[[], None]:
    """Become a daemon (python-daemon's DaemonContext) keeping the fds in
    `keep`.  The process that called us waits until the daemon calls the
    returned `ready` (pidfile written) and then exits 0, so an init script's
    `start` returns only once the pidfile is there; if the daemon dies
    first, it exits 111."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        answer = b""
        while True:
            chunk = os.read(read_end, 64)
            if not chunk:
                break
            answer += chunk
        os.waitpid(pid, 0)
        if answer == b"ok":
            os._exit(0)
        os.write(2, b"tcpserver: fatal: the daemon exited during start-up (see its log)\n")
        os._exit(111)
    os.close(read_end)
    umask = os.umask(0)
    os.umask(umask)
    context = daemon.DaemonContext(working_directory="/", umask=umask,
                                   detach_process=True, files_preserve=keep + [write_end],
                                   stderr=log, signal_map={}, prevent_core=False)
    context.open()

    def ready() -> None:
        try:
            os.write(write_end, b"ok")
        except OSError:
            pass
        os.close(write_end)
    return ready
