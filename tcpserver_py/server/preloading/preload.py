"""Load before -u/-g what the interpreter would otherwise load lazily.

After the privilege drop the service user may not be able to read the
interpreter's own files (a Python under a home directory such as
/root/.pyenv): anything imported later fails there.  Modules are imported at
the top of the server's modules; codecs are the lazy part (the first
text-mode open or str.encode with a named codec imports its module), so the
ones the server and its children use are looked up now and stay cached.

If something still fails to load after the drop, `load_failure` names the
directory that cannot be read any more and why, instead of a bare
`LookupError`.
"""

from __future__ import annotations

import codecs
import os
import sys

from ...errstr import error_str

# Looked up by name somewhere on the way to exec (text files, the socket
# module's host-name encoding, errors="replace" decoding).
CODECS = ("ascii", "latin-1", "utf-8", "idna")

_readable_at_start: list[str] = []


def preload() -> None:
    """Call before dropping privileges."""
    for name in CODECS:
        codecs.lookup(name)
    _readable_at_start[:] = [path for path in _import_directories() if _can_read(path) == 0]


def _import_directories() -> list[str]:
    found = []
    for path in [os.path.dirname(codecs.__file__), *sys.path]:
        if path and path not in found and os.path.isdir(path):
            found.append(path)
    return found


def _can_read(path: str) -> int:
    """0 if the directory can be opened, else the errno."""
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_DIRECTORY))
    except OSError as exc:
        return exc.errno or -1
    return 0


def load_failure(exc: BaseException) -> str:
    """The message for an import or codec failure after the drop."""
    text = f"internal error: {type(exc).__name__}: {exc}"
    for path in _readable_at_start:
        err = _can_read(path)
        if err:
            return (f"{text}: unable to read {path}: {error_str(err)} (the interpreter's "
                    f"files must be readable by the -u/-g user)")
    return text
