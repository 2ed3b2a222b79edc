"""Write the plain launchers `make install` puts in a bin directory.

    python -m tcpserver_py.install.launchers BIN_DIR PYTHON NAME:MODULE ...

pip's console-script wrappers import re (about 7 ms) only to tidy argv[0]:
every program gets a plain launcher instead (smtpd-child and tcp-env start
once per connection, tcprules on every rules change).  Each calls
tcpserver_py.launch.run, which turns a start-up failure under a memory
limit too low for Python into one line on stderr and exit 111.
"""

from __future__ import annotations

import os
import sys

# CPython will not even start with a directory as standard input ("Fatal
# Python error"): tcprules, which reads it, answers as the C tcprules does,
# from a shell launcher (about 1 ms).
SHELL_GUARDED = {"tcprules"}


def code(name: str, module: str) -> str:
    return f'from tcpserver_py.launch import run\nrun(b"{name}", "{module}")\n'


def python_launcher(name: str, module: str, python: str) -> str:
    return f"#!{python}\n" + code(name, module)


def shell_launcher(name: str, module: str, python: str) -> str:
    return (f"#!/bin/sh\n"
            f"if [ -d /dev/stdin ]; then\n"
            f'    echo "{name}: fatal: unable to read input: is a directory" >&2\n'
            f"    exit 111\n"
            f"fi\n"
            f"exec {python} -P -c '{code(name, module)}' \"$@\"\n")


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
