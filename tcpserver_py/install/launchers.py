"""Write the plain launchers `make install` puts in a bin directory.

    python -m tcpserver_py.install.launchers BIN_DIR PYTHON NAME:MODULE ...

pip's console-script wrappers import re (about 7 ms) only to tidy argv[0]:
every program gets a plain launcher instead (smtpd-child and tcp-env start
once per connection, tcprules on every rules change).  Each calls
tcpserver_py.launch.run, which turns a start-up failure under a memory
limit too low for Python into one line on stderr and exit 111.

The launchers start Python isolated and without site (`-I -S`: no PYTHON*
variables, no .pth files, no user site directory; site's work was a third
of smtpd-child's start-up) and put on sys.path themselves what site would
have: where this package is installed (the checkout, for the editable
install) and the environment's site-packages (cdbx, python-daemon), as that
interpreter reports them.  `tcpserver --preload` recognises these launchers
(server/preloading/launcher.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

# CPython will not even start with a directory as standard input ("Fatal
# Python error"): tcprules, which reads it, answers as the C tcprules does,
# from a shell launcher (about 1 ms).
SHELL_GUARDED = {"tcprules"}


def search_path(python: str) -> list[str] | None:
    """What the launchers put on sys.path: where `python` itself (isolated,
    with site, so not from the current directory) finds this package, then
    its site-packages.  None (the launchers keep site) if it cannot say."""
    probe = ("import json, os, sysconfig, tcpserver_py; print(json.dumps(["
             "os.path.dirname(os.path.dirname(os.path.abspath(tcpserver_py.__file__))), "
             "sysconfig.get_path('purelib'), sysconfig.get_path('platlib')]))")
    try:
        found = subprocess.run([python, "-I", "-c", probe], capture_output=True, timeout=60,
                               check=True).stdout
        paths = json.loads(found)
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        return None
    return list(dict.fromkeys(paths))


def code(name: str, module: str, path: list[str] | None = None) -> str:
    # json: a list of plain strings in double quotes, valid Python, and safe
    # inside the shell launcher's single quotes.
    prefix = "" if path is None else f"import sys\nsys.path[:0] = {json.dumps(path)}\n"
    return prefix + f'from tcpserver_py.launch import run\nrun(b"{name}", "{module}")\n'


def python_launcher(name: str, module: str, python: str) -> str:
    path = search_path(python)
    flags = "" if path is None else " -IS"
    return f"#!{python}{flags}\n" + code(name, module, path)


def shell_launcher(name: str, module: str, python: str) -> str:
    path = search_path(python)
    return (f"#!/bin/sh\n"
            f"if [ -d /dev/stdin ]; then\n"
            f'    echo "{name}: fatal: unable to read input: is a directory" >&2\n'
            f"    exit 111\n"
            f"fi\n"
            f"exec {python} {'-P' if path is None else '-I -S'} -c "
            f"'{code(name, module, path)}' \"$@\"\n")


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
        sys.exit("usage: python -m tcpserver_py.install.launchers BIN_DIR PYTHON NAME:MODULE ...")
    write(sys.argv[1], sys.argv[2], sys.argv[3:])
