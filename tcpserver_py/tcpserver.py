"""tcpserver: accept TCP connections and run a program for each (edge).

`tcpserver [options] host port program [arg ...]`, as ucspi-tcp 0.88's;
`tcpserver [options] - - program [arg ...]` serves a socket handed over
(systemd socket activation, or fd 0): see docs/deploy/.
"""

from __future__ import annotations

import os
import signal
import sys

from . import VERSION_LINE as VERSION, logfmt
from .environ import inherited_environment, relay_warning
from .errstr import error_str
from .exitcodes import PERMANENT, TEMPORARY
from .helptext import TCPSERVER_HELP
from .net.handed import ACTIVATION_VARIABLES, handed_listener, wants_handed_socket
from .net.listen import ListenError, open_listener
from .options import QUIET, InfoRequested, UsageError, parse_args
# Everything the server and its children run is imported now, before -u/-g
# may take away the right to read the interpreter's files (preload() below
# adds the codecs that would be imported lazily; --preload, the program).
from .server.child import DEFAULT_PATH
from .server.loop import serve
from .server.daemonize import DaemonError, Pidfile, absolute_paths, detach, open_log
from .server.preloading.noexec import prepare as prepare_preload
from .server.preloading.preload import preload

PROG = "tcpserver"


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
        os.write(1, (VERSION if exc.option == "--version" else TCPSERVER_HELP).encode())
        sys.exit(0)

    # The original catches SIGTERM (exit 0) before it binds; serve() later
    # replaces this with a handler that only records the signal.
    signal.signal(signal.SIGTERM, _exit_at_once)

    def fatal(text: str) -> None:
        if opts.verbosity != QUIET:
            os.write(2, logfmt.fatal(PROG, text))
        sys.exit(TEMPORARY)

    _open_standard_fds()
    pidfile = log = None
    # Read while the process may still read its own /proc entry: after
    # setuid it is no longer dumpable, and the fallback (the interpreter's
    # os.environ) carries the LC_CTYPE=C.UTF-8 that start-up added.
    base_env = inherited_environment(os.environb)
    try:
        if opts.pidfile is not None:
            pidfile = Pidfile(opts.pidfile)
            pidfile.lock()      # before binding: "already running" says more
        if opts.daemon:
            opts = absolute_paths(opts)
            log = open_log(opts.log)
    except DaemonError as exc:
        fatal(exc.text)
    try:
        if wants_handed_socket(opts.host, opts.port):
            listener = handed_listener(base_env, os.getpid(), opts.fdname)
            for name in ACTIVATION_VARIABLES:
                base_env.pop(name, None)
        else:
            listener = open_listener(opts.host, opts.port, opts.backlog, opts.family,
                                     opts.reuseport)
    except ListenError as exc:
        if pidfile is not None:
            pidfile.remove()
        fatal(exc.text)
    port = listener.getsockname()[1]
    relay = relay_warning(PROG, base_env)
    if relay and opts.verbosity != QUIET:
        os.write(2, logfmt.warning(PROG, relay))
    preload()
    if opts.preload:
        # Imported now, while the interpreter's files are surely readable.
        preloaded, why_not = prepare_preload(opts.program, base_env.get(b"PATH", DEFAULT_PATH),
                                             opts.verbosity == QUIET)
        if preloaded is None and opts.verbosity != QUIET:
            os.write(2, logfmt.warning(PROG, f"not preloaded, run by exec: {why_not}"))
    _drop_privileges(opts, fatal)
    if opts.print_port:
        try:
            os.write(1, b"%d\n" % port)
        except OSError:
            pass
    ready = None
    if opts.daemon:
        try:
            ready = detach([listener.fileno()] + ([pidfile.fd] if pidfile else []), log)
        except Exception as exc:   # python-daemon's DaemonOSEnvironmentError and kin
            fatal(f"unable to detach: {exc}")
    if pidfile is not None:
        try:
            pidfile.write(os.getpid())
        except DaemonError as exc:
            pidfile.remove()
            fatal(exc.text)
    if ready is not None:
        ready()         # the foreground process exits 0 now
    # The original closes fds 0 and 1 so a supervisor's pipes are released;
    # /dev/null keeps the numbers taken so a connection never lands on 0/1.
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    if null > 1:
        os.close(null)
    serve(listener, opts, base_env, at_exit=pidfile.remove if pidfile else None)


def _drop_privileges(opts, fatal) -> None:
    """-g, then -u.  Unlike the original, -u always drops the supplementary
    groups (root's stay otherwise), and a group left at 0 is warned about.
    The values were checked to be real ids (options.read_id)."""
    if opts.gid:
        try:
            os.setgroups([opts.gid])
            os.setgid(opts.gid)
        except OSError as exc:
            fatal(f"unable to set gid: {error_str(exc.errno)}")
    if opts.uid and not opts.gid:
        try:
            os.setgroups([])
        except OSError as exc:
            # Only root may change its groups; anyone else has no root
            # groups to lose, and setuid() below says what is wrong.
            if os.geteuid() == 0:
                fatal(f"unable to set groups: {error_str(exc.errno)}")
    if opts.uid:
        if not opts.gid and os.getgid() == 0 and opts.verbosity != QUIET:
            os.write(2, logfmt.warning(PROG, f"-u {opts.uid} without -g: the group stays 0 "
                                             f"(root); add -g $(id -g USER)"))
        try:
            os.setuid(opts.uid)
        except OSError as exc:
            fatal(f"unable to set uid: {error_str(exc.errno)}")


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
