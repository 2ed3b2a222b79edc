"""smtpd-child [checkprogram subprogram [args...]]: SMTP on fd 0/1 for
tcpserver, tcp-env/inetd, or plain pipes; with a checkpassword command, AUTH.

The time from exec to the greeting is the cost of every connection, and a
client sends nothing before it has read the greeting.  So this module
imports only what the greeting needs: startup.py reads every control file
qmail-smtpd reads at start-up (one that exists but cannot be read is
answered `421 unable to read controls` instead of the 220, as qmail does),
output.py writes the 220.  Only then are the SMTP core, the relay policy,
AUTH, TLS and the queue imported and the control files parsed (driver.py).
Should that fail -- out of memory, a broken installation -- the client's
first command is answered 421 and the failure logged: a session never runs
without its configuration.
"""

import posix
import select
# The C module itself: the `signal` wrapper imports enum, about 4 ms of
# every session's start-up, for names this module does not use.
import _signal as signal
import sys
import time

from smtpd_child import startup
from smtpd_child.output import Finished, Output, log, log_nomem  # noqa: F401 (tests use them)
from smtpd_child.smtp import replies

READ_SIZE = 65536


def main() -> None:
    started = time.monotonic()
    if len(sys.argv) == 2:
        _answer_info_request(sys.argv[1:])
    # A SIGCHLD inherited as ignored would make a failed queue look like success.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    output = Output(1, startup.DEFAULT_TIMEOUT)
    checker = sys.argv[1:] or None          # checkprogram subprogram [args...]
    if checker is not None and len(checker) < 2:
        log("usage: smtpd-child [checkprogram subprogram [args...]]")
        output.add(replies.CONTROLS)
        _exit(output, 100)
    try:
        # os.environb's own data: under tcpserver --preload, this connection's.
        raw = startup.read(posix.environ)
    except MemoryError:
        log_nomem()
        output.add(replies.OUT_OF_MEMORY)
        _exit(output, 1)
    except startup.ControlsUnreadable as e:
        log(str(e))
        output.add(replies.CONTROLS)
        _exit(output, 1)
    try:
        posix.chdir(raw.home)               # as qmail-smtpd: relative paths are under it
    except OSError as e:
        log(f"unable to enter the qmail home {startup.text(raw.home)}: {e.strerror}")
        output.add(replies.CONTROLS)
        _exit(output, 1)
    output.timeout = raw.timeout
    output.deadline = started + raw.deadline
    output.add(replies.greeting(raw.greeting))
    try:
        output.flush()
    except Finished:
        sys.exit(1)
    try:
        from smtpd_child.session import driver
        session = driver.prepare(raw, checker, output)
    except MemoryError:
        log_nomem()
        _refuse_next(output, replies.OUT_OF_MEMORY)
    except Exception as e:
        log(f"unable to start the session: {type(e).__name__}: {e}")
        _refuse_next(output, replies.INTERNAL_ERROR)
    _exit(output, session.run(started))


def prepare_preloaded() -> None:
    """Called once by `tcpserver --preload` in the server, after importing
    this module and before -u/-g and the first fork (launcher.PRELOAD_HOOKS).
    Every child it forks inherits what is done here:
      - procenv learns that this process image will not be exec'd for a
        connection, so a child need not compare /proc/self/environ (the
        server's) with its environment to find that out;
      - the server's control files are parsed into controls.py's memo, so a
        child that reads the same bytes skips the parse (and the paths
        under its qmail home are written out once, config.paths).
    Best effort: a missing or unreadable control directory only means no
    warm memo (each child reads and reports its files itself, as always)."""
    from smtpd_child import procenv
    procenv.forked_without_exec = True
    try:
        from smtpd_child.session import config, controls
        raw = startup.read(posix.environ)
        controls.parsed(raw.files)
        config.paths(raw.home, raw.control)
    except Exception:
        pass


def _refuse_next(output, reply):
    """The session cannot run after all: `reply` answers the client's first
    command, which is read first (closing with it unread would reset the
    connection, and the reply could be lost)."""
    try:
        if select.select([0], [], [], output.wait_time())[0]:
            posix.read(0, READ_SIZE)
    except (OSError, ValueError):
        pass
    output.add(reply)
    _exit(output, 1)


def _exit(output, code):
    try:
        output.flush()
    except Finished:
        pass
    sys.exit(code)


def _answer_info_request(arguments):
    """`--help` or `--version` alone: the text on stdout, exit 0."""
    from smtpd_child import usage
    text = usage.info(arguments, usage.SMTPD_CHILD_HELP)
    if text is None:
        return
    try:
        posix.write(1, text.encode())
    except OSError as e:
        log(f"unable to write to stdout: {e.strerror}")
        sys.exit(111)
    sys.exit(0)


if __name__ == "__main__":
    main()
