"""Which programs `tcpserver --preload` can run without exec (pure).

A program is run preloaded only when the file exec would run is one of the
launchers `make install` writes (tcpserver_py/install/launchers.py: `#!PYTHON
-IS`, the package's path, `run(b"NAME", "MODULE")`), for the same
interpreter as tcpserver's, and MODULE is listed here.  Anything else -- a C
program, a shell wrapper, `env VAR=x smtpd-child`, pip's own wrapper -- is
exec'd.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

# The modules whose main() may run in a forked tcpserver, each with the
# modules it would import later (after its greeting, or only for some
# sessions): importing them in the parent spares every child the work.
# smtpd-child reads its control files and environment in main(), at every
# call; what it keeps between calls is only a memo of what its control files
# say, keyed by their exact bytes (smtpd_child/session/controls.py), so one import
# serves every connection exactly as a fresh interpreter would.
# smtpd_child.session.driver is what smtpd-child imports once its greeting is out
# (the SMTP core, the policy, the configuration parser).
# (smtpd_child.session.tls brings ssl: a bigger parent to fork, but STARTTLS is
# common on port 25 and each such session is spared about 20 ms.)
PRELOADABLE: dict[str, tuple[str, ...]] = {
    "smtpd_child.main": ("smtpd_child.session.driver", "posixpath",
                         "smtpd_child.session.controls", "smtpd_child.session.config",
                         "smtpd_child.procenv", "smtpd_child.delivery.queue",
                         "smtpd_child.delivery.sweep", "cdbx", "array", "fcntl", "socket",
                         "struct", "smtpd_child.session.tls", "smtpd_child.auth.checkpassword",
                         "smtpd_child.usage"),
}

# Optional: a function of the preloaded module that tcpserver calls once
# after importing it, before -u/-g and before the first fork, so that work
# every child would repeat on the same input is done once (smtpd-child:
# its control files parsed, memoised by their contents; see
# smtpd_child/main.py prepare_preloaded).  Its failure is ignored: it is
# only a head start.
PRELOAD_HOOKS: dict[str, str] = {
    "smtpd_child.main": "prepare_preloaded",
}

_LAUNCHER = re.compile(
    rb"#!(?P<python>/[^\s]+) -IS\n"
    rb"import sys\n"
    rb"sys\.path\[:0\] = (?P<path>\[[^\n]*\])\n"
    rb"from tcpserver_py\.launch import run\n"
    rb"run\(b\"(?P<name>[\w.-]+)\", \"(?P<module>[A-Za-z_][\w.]*)\"\)\n\Z")


@dataclass(frozen=True)
class Launcher:
    python: str               # the interpreter of the #! line
    path: tuple[str, ...]     # what the launcher puts first on sys.path
    name: bytes               # the program's name, for launch.run's messages
    module: str               # whose main() it runs


def parse_launcher(text: bytes) -> Launcher | None:
    """The launcher written by `make install`, or None for any other file."""
    found = _LAUNCHER.match(text)
    if found is None:
        return None
    try:
        path = ast.literal_eval(found["path"].decode("utf-8"))
    except (ValueError, SyntaxError, UnicodeDecodeError):
        return None
    if not isinstance(path, list) or not all(isinstance(entry, str) for entry in path):
        return None
    return Launcher(python=found["python"].decode("utf-8", "surrogateescape"),
                    path=tuple(path), name=found["name"],
                    module=found["module"].decode("ascii"))


def exit_status(code: object) -> tuple[int, str | None]:
    """What CPython does with SystemExit(code): (exit status, text for stderr)."""
    if code is None:
        return 0, None
    if isinstance(code, bool) or isinstance(code, int):
        # exit() takes a C int: CPython passes the low bits on, as the kernel does.
        return int(code) & 0xFF, None
    return 1, str(code)
