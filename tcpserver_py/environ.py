"""The environment the program was started with, for the children.

CPython may add LC_CTYPE=C.UTF-8 to its own environment at start-up (PEP 538
locale coercion).  A UCSPI server must hand its children exactly what it was
given, so on Linux the initial environment block is read back from
/proc/self/environ, which start-up changes do not touch.
"""

from __future__ import annotations

from typing import Mapping


def inherited_environment(current: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
    """Return the process's initial environment, else a copy of `current`."""
    try:
        with open("/proc/self/environ", "rb") as handle:
            block = handle.read()
    except OSError:
        return dict(current)
    env: dict[bytes, bytes] = {}
    for entry in block.split(b"\0"):
        name, eq, value = entry.partition(b"=")
        if eq and name and name not in env:
            env[name] = value
    return env


def relay_warning(prog: str, env: Mapping[bytes, bytes]) -> str | None:
    """An inherited RELAYCLIENT reaches every client and lets it relay (in
    the C programs too): the text to warn with, or None."""
    if b"RELAYCLIENT" not in env:
        return None
    return (f"RELAYCLIENT is set in {prog}'s own environment: every client it serves "
            f"may relay mail through this host; start {prog} with a clean environment "
            f"(env -i PATH=/usr/bin:/bin {prog} ...) and set RELAYCLIENT only in rules (-x)")
