"""tcpserver: accept TCP connections and run a program for each (edge).

`tcpserver [options] host port program [arg ...]`, as ucspi-tcp 0.88's.
"""

from __future__ import annotations

import os
import signal
import sys

from . import VERSION_LINE as VERSION, logfmt
from .environ import inherited_environment
from .errstr import error_str
from .exitcodes import PERMANENT, TEMPORARY
from .net.listen import ListenError, open_listener
from .options import QUIET, USAGE, InfoRequested, UsageError, parse_args
# Everything the server and its children run is imported now, before -u/-g
# may take away the right to read the interpreter's files.
from .server.loop import serve

PROG = "tcpserver"
C_INT_MASK = 0xFFFFFFFF


def main() -> None:
    # Like the C program, die quietly on SIGINT (no KeyboardInterrupt trace).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        opts = parse_args(sys.argv[1:], os.environ)
    except UsageError as exc:
        if not exc.quiet:
            os.write(2, ("\n".join(exc.lines) + "\n").encode("utf-8", "surrogateescape"))
        sys.exit(PERMANENT)
    except InfoRequested as exc:
        os.write(1, (VERSION if exc.option == "--version" else USAGE + "\n").encode())
        sys.exit(0)

    # The original catches SIGTERM (exit 0) before it binds; serve() later
    # replaces this with a handler that only records the signal.
    signal.signal(signal.SIGTERM, _exit_at_once)

    def fatal(text: str) -> None:
        if opts.verbosity != QUIET:
            os.write(2, logfmt.fatal(PROG, text))
        sys.exit(TEMPORARY)

    _open_standard_fds()
    try:
        listener = open_listener(opts.host, opts.port, opts.backlog, opts.family)
    except ListenError as exc:
        fatal(exc.text)
    port = listener.getsockname()[1]
    # The original tests the whole (long) number for zero, then passes it as
    # an int: -u 4294967296 is setuid(0), -u 4294967295 fails with EINVAL.
    if opts.gid:
        try:
            os.setgroups([opts.gid & C_INT_MASK])
            os.setgid(opts.gid & C_INT_MASK)
        except OSError as exc:
            fatal(f"unable to set gid: {error_str(exc.errno)}")
    if opts.uid:
        try:
            os.setuid(opts.uid & C_INT_MASK)
        except OSError as exc:
            fatal(f"unable to set uid: {error_str(exc.errno)}")
    if opts.print_port:
        try:
            os.write(1, b"%d\n" % port)
        except OSError:
            pass
    # The original closes fds 0 and 1 so a supervisor's pipes are released;
    # /dev/null keeps the numbers taken so a connection never lands on 0/1.
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    if null > 1:
        os.close(null)
    serve(listener, opts, inherited_environment(os.environb))


def _exit_at_once(signum, frame) -> None:
    os._exit(0)


def _open_standard_fds() -> None:
    """Started with fd 0, 1 or 2 closed, the listening socket could take one
    of those numbers and be replaced by /dev/null below: fill them first."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


if __name__ == "__main__":
    main()
