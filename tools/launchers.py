"""Write the plain launchers `make install` puts in a bin directory.

    python tools/launchers.py BIN_DIR PYTHON NAME:MODULE ...

pip's console-script wrappers import re (about 7 ms) only to tidy argv[0]:
every program gets a plain launcher instead (smtpd-child and tcp-env start
once per connection, tcprules on every rules change).  Each launcher turns a
start-up failure under an address-space limit too low for Python (a module
that cannot be mapped, a MemoryError) into one line on stderr and exit 111,
instead of a traceback that supervise would repeat every second.  Under
inetd stderr may be the client's connection: nothing is written there.
"""

from __future__ import annotations

import os
import sys

# The address-space limit the example run scripts use (docs/install.md:
# measured floor about 17 MB with Python 3.11, `python -m bench.memory_floor`).
ADVISED_LIMIT = 32000000

# CPython will not even start with a directory as standard input ("Fatal
# Python error"): tcprules, which reads it, answers as the C tcprules does,
# from a shell launcher (about 1 ms).
SHELL_GUARDED = {"tcprules"}

BODY = '''\
import os
try:  # read now: once memory has run out, even this may fail
    _fd = os.open("/proc/self/limits", os.O_RDONLY)
    _limits = os.read(_fd, 8192)
    os.close(_fd)
except OSError:
    _limits = b""
def _limit():
    """The lower of the address-space and data limits, None when neither is set."""
    found = [int(line.split()[3]) for line in _limits.split(b"\\n")
             if line.startswith((b"Max address space", b"Max data size"))
             and line.split()[3].isdigit()]
    return min(found) if found else None
def _too_low(limit):
    text = (b"%s: fatal: out of memory: the address space limit (softlimit -m) of %d bytes "
            b"is too low; allow %d or more\\n" % (b"{name}", limit, {advised})
            if limit else b"{name}: fatal: out of memory\\n")
    # Never onto the connection of a client (inetd gives it fds 0, 1 and 2).
    try:
        err, inp = os.fstat(2), os.fstat(0)
        if (err.st_dev, err.st_ino) != (inp.st_dev, inp.st_ino):
            os.write(2, text)
    except OSError:
        pass
    os._exit(111)
try:
    import sys
    from {module} import main
except Exception as exc:
    # Out of memory shows as a MemoryError, as ENOMEM, or, under a limit,
    # as a module that cannot be mapped; anything else is a broken
    # installation, and the traceback says where.
    if isinstance(exc, MemoryError) or getattr(exc, "errno", None) == 12 or (
            isinstance(exc, (ImportError, SystemError)) and _limit()):
        _too_low(_limit())
    raise
try:
    sys.exit(main())
except MemoryError:
    _too_low(_limit())
'''


def python_launcher(name: str, module: str, python: str) -> str:
    return f"#!{python}\n" + BODY.format(name=name, module=module, advised=ADVISED_LIMIT)


def shell_launcher(name: str, module: str, python: str) -> str:
    code = BODY.format(name=name, module=module, advised=ADVISED_LIMIT)
    assert "'" not in code  # it goes inside single quotes
    return (f"#!/bin/sh\n"
            f"if [ -d /dev/stdin ]; then\n"
            f'    echo "{name}: fatal: unable to read input: is a directory" >&2\n'
            f"    exit 111\n"
            f"fi\n"
            f"exec {python} -P -c '{code}' \"$@\"\n")


def write(bin_dir: str, python: str, entries: list[str]) -> None:
    os.makedirs(bin_dir, exist_ok=True)
    for entry in entries:
        name, _, module = entry.partition(":")
        make = shell_launcher if name in SHELL_GUARDED else python_launcher
        path = os.path.join(bin_dir, name)
        temporary = path + ".new"
        with open(temporary, "w") as handle:
            handle.write(make(name, module, python))
        os.chmod(temporary, 0o755)
        os.replace(temporary, path)  # never half a launcher on the PATH


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit("usage: python tools/launchers.py BIN_DIR PYTHON NAME:MODULE ...")
    write(sys.argv[1], sys.argv[2], sys.argv[3:])
