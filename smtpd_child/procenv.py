"""Give the programs smtpd-child starts the environment it was started with.

CPython adds LC_CTYPE=C.UTF-8 to its own environment at start-up when the
locale is C or unset (PEP 538 locale coercion), and os.environ is what
qmail-queue and the checkpassword program inherit.  qmail-smtpd hands them
exactly its own environment, so on Linux the start-up additions are undone
from the initial block in /proc/self/environ, which they do not touch.
Variables set later on purpose (SMTPAUTHUSER after AUTH) are unaffected.
"""

import os


def undo_startup_changes(environ=None) -> None:
    """Make `environ` (os.environb by default) the initial environment again."""
    environ = os.environb if environ is None else environ
    try:
        with open("/proc/self/environ", "rb") as handle:
            block = handle.read()
    except OSError:
        return
    initial = {}
    for entry in block.split(b"\0"):
        name, eq, value = entry.partition(b"=")
        if eq and name and name not in initial:
            initial[name] = value
    for name in list(environ):
        if name not in initial:
            del environ[name]
        elif environ[name] != initial[name]:
            environ[name] = initial[name]
