"""Checks `make install PREFIX=...` runs: can a service user read it all?

    python -m tcpserver_py.install.check interpreter
    python -m tcpserver_py.install.check tree DIR ...

The programs run as the users tcpserver -u/-g names, so the interpreter,
its standard library and the installed tree must be readable (and the
directories on the way searchable) by users other than the owner.
`interpreter` checks the interpreter running this script, before anything
is installed; `tree` every file and directory under the DIRs afterwards.
Exit 100 with one line per problem (at most 10) naming the path.
"""

from __future__ import annotations

import os
import stat
import sys
import sysconfig

LIMIT = 10


def blocked(path: str) -> str | None:
    """Why other users cannot reach `path` (following links), or None."""
    real = os.path.realpath(path)
    parts = real.split(os.sep)
    for end in range(2, len(parts)):
        directory = os.sep.join(parts[:end]) or os.sep
        mode = os.stat(directory).st_mode
        if not mode & stat.S_IXOTH:
            return f"{directory} is mode {stat.S_IMODE(mode):04o}: others cannot enter it"
    mode = os.stat(real).st_mode
    needed = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) or mode & stat.S_IXUSR else 0)
    if mode & needed != needed:
        return f"{real} is mode {stat.S_IMODE(mode):04o}: others cannot read it"
    return None


def interpreter_paths() -> list[str]:
    paths = [sys.executable, sys._base_executable]
    names = sysconfig.get_paths()
    paths += [names["stdlib"], names["platstdlib"],
              os.path.join(names["platstdlib"], "lib-dynload")]
    libdir = sysconfig.get_config_var("LIBDIR")
    library = sysconfig.get_config_var("LDLIBRARY")
    if libdir and library and sysconfig.get_config_var("Py_ENABLE_SHARED"):
        paths.append(os.path.join(libdir, library))
    return [path for path in paths if path and os.path.exists(path)]


def tree_paths(roots: list[str]) -> list[str]:
    paths = []
    for root in roots:
        paths.append(root)
        for directory, subdirs, files in os.walk(root):
            paths += [os.path.join(directory, name) for name in subdirs + files]
    return [path for path in paths if os.path.exists(path)]  # dangling links


def problems(paths: list[str]) -> list[str]:
    found = []
    for path in paths:
        why = blocked(path)
        if why and why not in found:
            found.append(why)
    return found


def main() -> None:
    if sys.argv[1:2] == ["interpreter"]:
        found = problems(interpreter_paths())
        advice = (f"the interpreter {os.path.realpath(sys.executable)} cannot be run by "
                  "the service users (-u/-g): choose one they can read, e.g. "
                  "make install PREFIX=... PYTHON=/usr/bin/python3")
    elif sys.argv[1:2] == ["tree"] and len(sys.argv) > 2:
        found = problems(tree_paths(sys.argv[2:]))
        advice = "the installed programs cannot be run by the service users (-u/-g)"
    else:
        sys.exit("usage: python -m tcpserver_py.install.check interpreter | tree DIR ...")
    if found:
        for why in found[:LIMIT]:
            sys.stderr.write(f"make install: {why}\n")
        sys.stderr.write(f"make install: {advice}\n")
        sys.exit(100)


if __name__ == "__main__":
    main()
