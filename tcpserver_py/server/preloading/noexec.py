"""`tcpserver --preload`: run one of our Python programs in the forked child.

At start-up (before -u/-g) tcpserver imports the program's module once;
for each connection the ordinary child (child.py) does everything it does
today -- banner, lookups, rules, the environment, the socket on fd 0/1 --
and where it would exec the program it calls Preloaded.run instead, which
first makes the process what exec would have made it, then runs the
program's main() and ends in os._exit: it never returns into server code.

What exec would have made it (each step below says why):
  - descriptors: every close-on-exec descriptor closed (the listening
    socket, the wakeup pipe, anything of the interpreter's); inheritable
    ones (0, 1, 2 and any a supervisor passed on) kept;
  - signals: caught ones back to their defaults, ignored ones left ignored,
    then what a starting CPython sets (SIGPIPE and SIGXFSZ ignored, SIGINT
    raising KeyboardInterrupt); the mask is untouched, as exec leaves it;
  - the environment: os.environ and the C environment replaced by the one
    built from the rules, TZ read again, and the locale CPython's start-up
    would set (PEP 538: C.UTF-8 when it would be C).  CPython also puts
    LC_CTYPE=C.UTF-8 in os.environ then; smtpd-child takes it out again
    (smtpd_child/procenv.py), so it is not added here;
  - sys.argv and the process name (/proc/PID/comm) of the program, and the
    "dumpable" flag exec sets again after -u/-g cleared it (core dumps,
    /proc/PID owned by the user);
  - atexit: the parent's handlers dropped, the program's run at its exit;
    sys.exit() codes and uncaught exceptions end the process as CPython's
    own exit does.
Left as they are, being a start-up choice of the interpreter: the hash
seed, the UTF-8 mode, sys.flags and sys.path (the launcher's path is
already on it).  /proc/PID/cmdline and /proc/PID/environ still show
tcpserver's (the kernel's copies of the first exec), as with any server that
forks without exec.
"""

from __future__ import annotations

import _locale
# The C module: the `signal` wrapper turns every handler into an enum member,
# which costs each child about 0.2 ms for 64 signals.
import _signal as signal
import atexit
import gc
import importlib
import os
import sys
import time
from typing import Callable, NoReturn

from .. import signals
from .launcher import PRELOAD_HOOKS, PRELOADABLE, exit_status, parse_launcher

LAUNCHER_MAX = 4096          # our launchers are about 200 bytes
COERCION_TARGETS = ("C.UTF-8", "C.utf8", "UTF-8")    # CPython's, in its order
PYTHON_IGNORES = (signal.SIGPIPE, signal.SIGXFSZ)
PR_SET_NAME, PR_SET_DUMPABLE = 15, 4     # <linux/prctl.h>

# The program tcpserver preloaded (set once, at start-up, by prepare): the
# forked child (child.py) and the quick path (direct.py) run it instead of exec.
loaded: Preloaded | None = None


class Preloaded:
    """One imported program, run in each forked child instead of exec."""

    def __init__(self, path: bytes, args: tuple[str, ...], main: Callable[[], object],
                 quiet: bool = False):
        self.quiet = quiet           # -q: nothing at all on stderr
        self.path = path             # the launcher exec would have run
        self.args = args             # argv[1:] as given to tcpserver
        self.main = main
        # Built once here rather than in every child.
        self.argv = (os.fsdecode(path), *args)
        try:
            import ctypes            # only for --preload: prctl has no os wrapper
            self.comm = ctypes.c_char_p(os.path.basename(path)[:15])
            self.prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (ImportError, OSError, AttributeError):
            self.prctl = None

    def start(self, fd: int, env: dict[bytes, bytes]) -> int | None:
        """The quick path (direct.py): the parent has done the lookups and
        built `env`; fork a child that runs the program on `fd`.  Returns
        the pid, or None (fork failed: the caller tries the ordinary child)."""
        try:
            pid = os.fork()
        except OSError:
            return None
        if pid:
            return pid
        try:
            signals.restore_in_child()
            signal.set_wakeup_fd(-1)
            os.dup2(fd, 0)
            os.dup2(fd, 1)
            self.run(env)           # closes fd and the parent's others (close-on-exec)
        except BaseException:
            if not self.quiet:
                try:
                    os.write(2, b"tcpserver: warning: dropping connection, "
                                b"unable to start the preloaded program\n")
                except OSError:
                    pass
        finally:
            os._exit(111)

    def run(self, env: dict[bytes, bytes]) -> NoReturn:
        """In the forked child, with the socket on fd 0/1: become what exec
        would have made of this process, run main(), exit.  Never returns."""
        signal.set_wakeup_fd(-1)    # before its descriptor is closed below
        # Unreachable cycles of the parent may hold descriptors: their
        # finalizers must never run here, where they could close a number
        # the program has reused.  Freezing puts every object the parent
        # made out of the collector's reach for good; unlike gc.collect(),
        # it writes to no object (a collection clears the free lists and
        # walks every young object: some 60 pages copied per child).
        gc.freeze()
        _close_on_exec()
        _signals_as_after_exec()
        _replace_environment(env)
        sys.argv = list(self.argv)
        if self.prctl is not None:
            # What exec does for a program that is not set-id.
            self.prctl(PR_SET_NAME, self.comm, 0, 0, 0)
            self.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
        atexit._clear()
        status = 1
        try:
            try:
                code = self.main()
            except SystemExit as exc:
                code = exc.code
            status, text = exit_status(code)
            if text is not None:
                print(text, file=sys.stderr)
        except KeyboardInterrupt:
            # CPython ends with the signal itself (status: killed by SIGINT).
            _flush_and_run_atexit()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        except BaseException:
            try:
                sys.excepthook(*sys.exc_info())
            except BaseException:
                pass
            status = 1
        _flush_and_run_atexit()
        os._exit(status)


def prepare(program: tuple[str, ...], search_path: bytes,
            quiet: bool = False) -> tuple[Preloaded | None, str]:
    """Import PROGRAM if it can be preloaded: (Preloaded, "") or (None, why not)."""
    path = _find(program[0], search_path)
    if path is None:
        return None, f"{program[0]} not found"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            text = os.read(fd, LAUNCHER_MAX + 1)
        finally:
            os.close(fd)
    except OSError as exc:
        return None, f"unable to read {os.fsdecode(path)}: {exc.strerror}"
    launcher = parse_launcher(text) if len(text) <= LAUNCHER_MAX else None
    if launcher is None or launcher.module not in PRELOADABLE:
        return None, f"{os.fsdecode(path)} is not a launcher of a preloadable program"
    if not _same_interpreter(launcher.python):
        return None, f"{os.fsdecode(path)} runs another interpreter ({launcher.python})"
    for entry in reversed(launcher.path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    try:
        importlib.import_module(launcher.module).main
        from ... import launch
    except Exception as exc:
        return None, f"unable to import {launcher.module}: {type(exc).__name__}: {exc}"

    limits = launch.read_limits()     # the children inherit these limits

    def main() -> None:
        # What the launcher runs: its main() and launch's handling of
        # running out of memory (one line, exit 111).
        launch.run(launcher.name, launcher.module, limits)

    for name in PRELOADABLE[launcher.module]:
        try:
            importlib.import_module(name)
        except Exception:
            pass             # imported later by the child if it needs it, as under exec
    hook = PRELOAD_HOOKS.get(launcher.module)
    if hook is not None:
        try:
            getattr(sys.modules[launcher.module], hook)()
        except Exception:
            pass             # no head start: each child does the work itself
    global loaded
    loaded = Preloaded(path, program[1:], main, quiet)
    return loaded, ""


def _find(name: str, search_path: bytes) -> bytes | None:
    """The file exec_program would run: PATH searched as djb's pathexec does."""
    program = os.fsencode(name)
    if b"/" in program:
        candidates = [program]
    else:
        candidates = [(entry or b".") + b"/" + program for entry in search_path.split(b":")]
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _same_interpreter(python: str) -> bool:
    try:
        return os.path.samefile(python, sys.executable)
    except OSError:
        return False


def _close_on_exec() -> None:
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))   # no /proc: keep 0, 1, 2 only
        return
    for name in names:
        fd = int(name)
        if fd > 2:
            try:
                if not os.get_inheritable(fd):
                    os.close(fd)
            except OSError:
                pass             # the listing's own descriptor, already gone


def _signals_as_after_exec() -> None:
    getsignal, setsignal = signal.getsignal, signal.signal
    for signum in range(1, signal.NSIG):
        try:
            if callable(getsignal(signum)):   # caught: exec resets it to the default
                setsignal(signum, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    for signum in PYTHON_IGNORES:
        signal.signal(signum, signal.SIG_IGN)
    if signal.getsignal(signal.SIGINT) == signal.SIG_DFL:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _replace_environment(env: dict[bytes, bytes]) -> None:
    # The C environment through unsetenv/putenv, and os.environ's own dict
    # (CPython's _Environ._data: posix.environ, shared by os.environ and
    # os.environb, bytes to bytes) set directly: _Environ's item methods do
    # the same at twice the cost.  Without that dict, through those methods.
    environ = os.environb
    data = getattr(environ, "_data", None)
    if not isinstance(data, dict):
        data = None
    for key in list(environ if data is None else data):
        try:
            if data is None:
                del environ[key]
            else:
                os.unsetenv(key)
        except (OSError, ValueError):
            pass                 # a name unsetenv refuses ("", "a=b"): not a real entry
    if data is not None:
        data.clear()
    present = environ if data is None else data
    for key, value in env.items():
        # execve passes "key=value": a name with "=" in it is cut there.
        name, eq, rest = key.partition(b"=")
        if eq:
            value = rest + b"=" + value
        if not name or name in present:
            continue
        if data is None:
            environ[name] = value
        else:
            os.putenv(name, value)
            data[name] = value
    _coerce_locale(environ)
    time.tzset()


def _coerce_locale(environ) -> None:
    """CPython's start-up, for this environment: LC_CTYPE from it, and the C
    locale coerced to a UTF-8 one (PEP 538) unless LC_ALL is set.  The
    LC_CTYPE variable CPython adds with it is left out (see the top)."""
    try:
        current = _locale.setlocale(_locale.LC_CTYPE, "")
    except _locale.Error:
        current = _locale.setlocale(_locale.LC_CTYPE, "C")
    if environ.get(b"LC_ALL") or current not in ("C", "POSIX"):
        return
    for target in COERCION_TARGETS:
        try:
            _locale.setlocale(_locale.LC_CTYPE, target)
        except _locale.Error:
            continue
        return


def _flush_and_run_atexit() -> None:
    try:
        atexit._run_exitfuncs()
    except BaseException:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except BaseException:
            pass
