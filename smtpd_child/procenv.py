"""The environment smtpd-child was started with, for the qmail-queue program.

CPython adds LC_CTYPE=C.UTF-8 to its own environment at start-up when the
locale is C or unset (PEP 538 locale coercion); qmail-smtpd hands qmail-queue
exactly the environment it was given, so on Linux the initial block is read
back from /proc/self/environ, which start-up changes do not touch.
"""

import os


def initial_environment():
    """The initial environment as a bytes mapping, else os.environb."""
    try:
        with open("/proc/self/environ", "rb") as handle:
            block = handle.read()
    except OSError:
        return os.environb
    env = {}
    for entry in block.split(b"\0"):
        name, eq, value = entry.partition(b"=")
        if eq and name and name not in env:
            env[name] = value
    return env
