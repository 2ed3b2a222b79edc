"""What the chain-loading programs share: a log line on stderr, and exec.

relay-ctrl-allow, relay-ctrl-check and smtpd-checkpassword end by running
the rest of their command line in their own process, as UCSPI programs do.
"""

import os
# The C module: the `signal` wrapper imports enum, milliseconds of start-up
# for programs that run once per connection.
import _signal as signal

# CPython ignores these at start-up, and an ignored signal stays ignored
# across exec: the next program gets the defaults a C program would pass on.
EXEC_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)

EXIT_USAGE = 100
EXIT_TEMPORARY = 111


def log(program: str, message: str) -> None:
    try:
        os.write(2, f"{program}: {message}\n".encode("utf-8", "backslashreplace"))
    except OSError:
        pass


def exec_program(name: str, argv: list) -> None:
    """Run argv (searched in $PATH) in this process; on failure log and exit 111."""
    for signum in EXEC_DEFAULT_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        log(name, f"fatal: unable to run {argv[0]}: {exc.strerror or exc}")
    os._exit(EXIT_TEMPORARY)
