"""Start a program for its launcher (edge).

The launchers `make install` writes (tcpserver_py/install/launchers.py) are two lines:
`from tcpserver_py.launch import run` and `run(b"NAME", "package.module")`.
This module is imported first, while memory is plentiful, so that a start-up
failure under an address-space limit too low for Python (a module that
cannot be mapped, a MemoryError) still ends with one line on stderr and exit
111, instead of a traceback that supervise would repeat every second.  Under
inetd stderr may be the client's connection: nothing is written there.
"""

# os's C half: `os` itself (posixpath, stat, collections.abc) costs about
# 1 ms of every exec'd program's start-up, and smtpd-child writes its
# greeting without it (smtpd_child/main.py).
import posix
import sys

# The limit the example run scripts use (docs/install.md: the floor measured
# with `python -m bench.memory_floor` is about 18 MB with Python 3.11).
ADVISED_LIMIT = 32000000
ENOMEM = 12


def read_limits() -> bytes:
    """/proc/self/limits, read before anything can run out of memory."""
    try:
        fd = posix.open("/proc/self/limits", posix.O_RDONLY)
        try:
            return posix.read(fd, 8192)
        finally:
            posix.close(fd)
    except OSError:
        return b""


def memory_limit(limits: bytes) -> int | None:
    """The lower of the address-space and data soft limits; None when
    neither is set."""
    found = []
    for line in limits.split(b"\n"):
        if line.startswith((b"Max address space", b"Max data size")):
            soft = line.split()[3]
            if soft.isdigit():
                found.append(int(soft))
    return min(found) if found else None


def out_of_memory(exc: BaseException, limit: int | None) -> bool:
    """A MemoryError or ENOMEM always is; under a limit, so is a module that
    cannot be mapped (ImportError, or SystemError from a half-built object).
    Anything else is a broken installation: the traceback says where."""
    if isinstance(exc, MemoryError) or getattr(exc, "errno", None) == ENOMEM:
        return True
    if isinstance(exc, ModuleNotFoundError):
        return False  # a file missing (an upgrade half done), not memory
    return limit is not None and isinstance(exc, (ImportError, SystemError))


def too_low_line(name: bytes, limit: int | None) -> bytes:
    if limit is None:
        return b"%s: fatal: out of memory\n" % name
    return (b"%s: fatal: out of memory: the address space limit (softlimit -m) of %d "
            b"bytes is too low; allow %d or more\n" % (name, limit, ADVISED_LIMIT))


def stderr_is_the_connection() -> bool:
    """Under inetd/xinetd fd 2 is often the client's socket, as fd 0 is:
    nothing meant for the administrator may be written there."""
    try:
        err, conn = posix.fstat(2), posix.fstat(0)
    except OSError:
        return False
    return (err.st_dev, err.st_ino) == (conn.st_dev, conn.st_ino)


def _too_low(name: bytes, limits: bytes) -> None:
    try:
        posix.fstat(0)         # no fd 0: nothing to tell the two apart, say nothing
        if not stderr_is_the_connection():
            posix.write(2, too_low_line(name, memory_limit(limits)))
    except Exception:
        pass
    posix._exit(111)


def run(name: bytes, module: str, limits: bytes | None = None) -> None:
    """Import `module` and exit with what its main() returns.  `limits`:
    /proc/self/limits as already read (tcpserver --preload reads it once:
    its children inherit its limits)."""
    if limits is None:
        limits = read_limits()
    try:
        main = __import__(module, fromlist=("main",)).main
    except Exception as exc:
        if out_of_memory(exc, memory_limit(limits)):
            _too_low(name, limits)
        raise
    try:
        sys.exit(main())
    except MemoryError:
        _too_low(name, limits)
