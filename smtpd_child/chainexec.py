"""What the chain-loading programs share: a log line on stderr, and exec.

relay-ctrl-allow, relay-ctrl-check and smtpd-checkpassword end by running
the rest of their command line in their own process, as UCSPI programs do,
with the environment they were given plus only what they set themselves.
CPython may add LC_CTYPE=C.UTF-8 to its own environment at start-up (PEP 538
locale coercion), so the environment handed on is read back from
/proc/self/environ, which start-up changes do not touch.
"""

import os
# The C module: the `signal` wrapper imports enum, milliseconds of start-up
# for programs that run once per connection.
import _signal as signal

from smtpd_child import procenv, usage

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


def answered_info(argv: list, help_text: str) -> bool:
    """Print the help or version text when `--help`/`--version` is the one
    argument (as for smtpd-child); True when it was."""
    text = usage.info(argv, help_text)
    if text is None:
        return False
    data = text.encode()
    while data:
        data = data[os.write(1, data):]
    return True


def exec_program(name: str, argv: list, changes=None) -> None:
    """Run argv (searched in the inherited $PATH) in this process, with the
    inherited environment and `changes`; on failure log and exit 111."""
    env = procenv.initial_environment()
    if env is None:
        env = dict(os.environb)
    for key, value in (changes or {}).items():
        env[os.fsencode(key)] = os.fsencode(value)
    for signum in EXEC_DEFAULT_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        log(name, f"fatal: unable to run {argv[0]}: {exc.strerror or exc}")
    os._exit(EXIT_TEMPORARY)
