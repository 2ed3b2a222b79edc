"""Give the programs smtpd-child starts the environment it was started with.

CPython adds LC_CTYPE=C.UTF-8 to its own environment at start-up when the
locale is C or unset (PEP 538 locale coercion), and os.environ is what
qmail-queue and the checkpassword program inherit.  qmail-smtpd hands them
exactly its own environment, so on Linux the start-up addition is undone
from the initial block in /proc/self/environ, which it does not touch.
Only LC_CTYPE is looked at, the one variable CPython's start-up sets, and
only when the initial block is the environment this process was given: under
`tcpserver --preload` (forked, not exec'd) /proc/self/environ is
tcpserver's, os.environ is already the connection's, LC_CTYPE was never
added, and a rule's LC_CTYPE must reach the queue as written.  Variables set
later on purpose (SMTPAUTHUSER after AUTH) are unaffected.
"""

import os


STARTUP_VARIABLES = (b"LC_CTYPE",)       # PEP 538 locale coercion

# Set by main.prepare_preloaded in a `tcpserver --preload` server: its
# children run without exec, so there is no start-up change to undo and
# /proc/self/environ (the server's) need not be read to find that out.
forked_without_exec = False


def initial_environment() -> dict | None:
    """The environment this process was exec'd with (the first of each
    name, as getenv finds it), or None when /proc cannot tell."""
    try:
        with open("/proc/self/environ", "rb") as handle:
            block = handle.read()
    except OSError:
        return None
    initial = {}
    for entry in block.split(b"\0"):
        name, eq, value = entry.partition(b"=")
        if eq and name and name not in initial:
            initial[name] = value
    return initial


def undo_startup_changes(environ=None) -> None:
    """Give `environ` (os.environb by default) the initial values of the
    variables CPython's start-up may have set."""
    if forked_without_exec:
        return
    environ = os.environb if environ is None else environ
    initial = initial_environment()
    if initial is None or not _same_apart_from_startup(initial, environ):
        return      # not our exec's block (forked by tcpserver --preload)
    for name in STARTUP_VARIABLES:
        if name not in initial:
            environ.pop(name, None)
        elif environ.get(name) != initial[name]:
            environ[name] = initial[name]


def _same_apart_from_startup(initial: dict, environ) -> bool:
    """Is `initial` the block `environ` came from (start-up changes aside)?"""
    skip = STARTUP_VARIABLES
    return ({k: v for k, v in initial.items() if k not in skip}
            == {k: v for k, v in environ.items() if k not in skip})
