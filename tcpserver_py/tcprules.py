"""tcprules: compile rule text into a cdb, as ucspi-tcp 0.88 does.

    tcprules rules.cdb rules.tmp < rules.txt
    tcprules --check < rules.txt
    tcprules --help | --version

The temporary file is created before any input is read (exclusively, never
through a symbolic link, mode 0644), records are streamed into it, and only
a complete, fsync'ed file is renamed over rules.cdb: on any failure the old
cdb is untouched and the temporary file removed.  Exit 100 on usage and
parse errors, 111 on I/O errors, 0 otherwise; warnings never change the
exit code.
"""

from __future__ import annotations

import errno
import gc
import os
import sys

import cdbx

from . import VERSION_LINE
from .errstr import error_str
from .exitcodes import BUG, PERMANENT, TEMPORARY
from .rules.compiler import CompileError, Compiler
from .rules.parse import show
from .rules.cover import covered_prefixes, prefix_keys
from .rules.shadow import first_lines, resolve

PROG = "tcprules"
USAGE = "tcprules: usage: tcprules rules.cdb rules.tmp"  # the original's, byte for byte
HELP = """\
usage: tcprules rules.cdb rules.tmp < rules.txt
       tcprules --check < rules.txt
       tcprules --help | --version

Compiles rule lines (ADDRESS:allow or ADDRESS:deny, then ,NAME="value" pairs)
into rules.cdb for tcpserver -x and tcp-env -x, through rules.tmp, which must
not exist (it is created exclusively, never through a symbolic link) and is
renamed over rules.cdb (mode 0644) only when complete.

Extensions to ucspi-tcp's tcprules:
  10.0.0.0/9           IPv4 CIDR blocks (compiled into prefix keys)
  2001:db8::1          IPv6 hosts; 2001:db8::/32, IPv6 blocks; ::ffff:a.b.c.d
  --check              parse and report only, write nothing
  warnings             for lines ignored or read differently by the original

Exit 0, 100 on usage and parse errors, 111 on I/O errors.  See tcprules(1).
"""
READ_SIZE = 1 << 16  # at most MAX_LINE, so Compiler.feed checks one line per chunk
MAX_WARNINGS = 100
# Finding prefix rules covered by longer keys takes a pass over every key in
# Python (about 0.3 s per million keys): done for files up to this many
# records, and always by --check.
COVER_LIMIT = 100_000
MODE = 0o644  # of every cdb written, whatever the umask or the old cdb's mode


class Fatal(Exception):
    """A message for stderr and the exit code that goes with it."""

    def __init__(self, code: int, text: str):
        super().__init__(text)
        self.code = code
        self.text = text


class Warnings:
    """Prints `tcprules: warning: line N: ...`, at most MAX_WARNINGS."""

    def __init__(self):
        self.count = 0

    def __call__(self, lineno: int, text: str) -> None:
        self.count += 1
        if self.count <= MAX_WARNINGS:
            _say(f"{PROG}: warning: line {lineno}: {text}")

    def close(self) -> None:
        if self.count > MAX_WARNINGS:
            _say(f"{PROG}: warning: {self.count - MAX_WARNINGS} more warnings not shown")


def _say(text: str) -> None:
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass  # no usable stderr: the exit code still tells


def _print(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _errtext(exc: OSError) -> str:
    return error_str(exc.errno if exc.errno else errno.EIO)


def _create(path: str) -> int:
    """Create the temporary file, ours alone: O_EXCL refuses a file already
    there (another tcprules at work, a leftover, or a file planted by someone
    who may write the directory) and, with O_NOFOLLOW, a symbolic link, which
    would otherwise decide where root's cdb is written and who owns it.  The
    mode is set explicitly, so the cdb is 0644 whatever the umask."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            what = ("a symbolic link" if os.path.islink(path) else
                    "a directory" if os.path.isdir(path) else "a file")
            raise Fatal(TEMPORARY, f"unable to create {path}: {what} is already there "
                                   f"(another tcprules running, or left over: remove it "
                                   f"and run again)") from None
        raise Fatal(TEMPORARY, f"unable to create {path}: {_errtext(exc)}") from None
    try:
        os.fchmod(fd, MODE)
    except OSError as exc:
        os.close(fd)
        _remove(path)
        raise Fatal(TEMPORARY, f"unable to set the mode of {path}: {_errtext(exc)}") from None
    return fd


def _remove(path: str) -> None:
    """Remove our own temporary file after a failure: left behind, it would
    make the next run refuse (O_EXCL)."""
    try:
        os.unlink(path)
    except OSError:
        pass


def _stream(maker, warn: Warnings, tmp_name: str) -> Compiler:
    """Read stdin to the end, feeding the compiler; map errors to Fatal."""
    compiler = Compiler(maker.add, warn)
    try:
        while True:
            try:
                chunk = os.read(0, READ_SIZE)
            except OSError as exc:
                raise Fatal(TEMPORARY, f"unable to read input: {_errtext(exc)}") from None
            if not chunk:
                break
            compiler.feed(chunk)
        compiler.finish()
    except CompileError as error:
        raise Fatal(PERMANENT, f"unable to parse line {error.lineno}: {error.reason}: "
                               f"{show(error.line)}") from None
    except OSError as exc:
        raise Fatal(TEMPORARY, f"unable to write to {tmp_name}: {_errtext(exc)}") from None
    return compiler


def _report_covered(db, compiler: Compiler, warn: Warnings) -> None:
    """Warn about prefix rules that longer keys cover completely."""
    prefixes = prefix_keys(iter(db))
    covered = covered_prefixes(iter(db), prefixes) if prefixes else {}
    if not covered:
        return
    lines = first_lines(db.keys(all=True), set(covered) | set(covered.values()),
                        compiler.linemap)
    for prefix, child in sorted(covered.items(), key=lambda item: lines[item[0]]):
        warn(lines[prefix], f"rule never matches: longer keys, from line {lines[child]} "
                            f"(\"{show(child)}\") on, decide every address it covers "
                            f"(key \"{show(prefix)}\")")


def build(fd: int, tmp_name: str, reopen, full_report: bool = False
          ) -> tuple[int, int, Warnings]:
    """Compile stdin into the cdb open on `fd`; return (final fd, records,
    warnings).  `reopen()` gives a fresh fd when records must be dropped and
    a second cdb written (the first stays readable through `fd`)."""
    warn = Warnings()
    try:
        maker = cdbx.CDB.make(fd)
    except OSError as exc:
        raise Fatal(TEMPORARY, f"unable to write to {tmp_name}: {_errtext(exc)}") from None
    compiler = _stream(maker, warn, tmp_name)
    try:
        db = maker.commit()
    except OSError as exc:
        raise Fatal(TEMPORARY, f"unable to write to {tmp_name}: {_errtext(exc)}") from None
    total = compiler.records
    try:
        result = resolve(total, compiler.linemap, compiler.wide,
                         lambda: db.keys(all=True), lambda: iter(db), len(db),
                         MAX_WARNINGS)
        for lineno, text in result.warnings:
            warn(lineno, text)
        warn.count += result.never_count - len(result.warnings)
        if total <= COVER_LIMIT or full_report:
            _report_covered(db, compiler, warn)
        if not result.drop:
            return fd, total, warn
        # A wide CIDR record sits before a more specific record of the same
        # key: write the cdb again without it.
        new_fd = reopen()
        maker = cdbx.CDB.make(new_fd)
        drop = result.drop
        for index, (key, value) in enumerate(db.items(all=True)):
            if index not in drop:
                maker.add(key, value)
        maker.commit()
    except OSError as exc:
        raise Fatal(TEMPORARY, f"unable to write to {tmp_name}: {_errtext(exc)}") from None
    os.close(fd)
    return new_fd, total - len(result.drop), warn


def _stdin_is_open() -> None:
    """Fail before creating anything when fd 0 is closed: the tmp file would
    otherwise become fd 0 and an empty cdb replace the real one."""
    try:
        os.fstat(0)
    except OSError as exc:
        raise Fatal(TEMPORARY, f"unable to read input: {_errtext(exc)}") from None


def compile_to(cdb_path: str, tmp_path: str) -> None:
    _stdin_is_open()
    fd = _create(tmp_path)
    owned = [True]  # tmp_path names a file this run created exclusively

    def reopen() -> int:
        # The first cdb stays readable through its open fd while a new
        # file takes the name.
        owned[0] = False
        _remove(tmp_path)
        new_fd = _create(tmp_path)
        owned[0] = True
        return new_fd

    try:
        fd, _, warn = build(fd, tmp_path, reopen)
        try:
            os.fsync(fd)
            os.close(fd)
        except OSError as exc:
            raise Fatal(TEMPORARY, f"unable to write to {tmp_path}: "
                                   f"{_errtext(exc)}") from None
        warn.close()
        try:
            os.rename(tmp_path, cdb_path)
        except OSError as exc:
            raise Fatal(TEMPORARY, f"unable to move {tmp_path} to {cdb_path}: "
                                   f"{_errtext(exc)}") from None
    except BaseException:
        # Left behind, our partial file would make the next run refuse.
        if owned[0]:
            _remove(tmp_path)
        raise


def check() -> None:
    """Compile into memory only and report; nothing is written to disk."""
    def scratch() -> int:
        try:
            return os.memfd_create("tcprules-check")
        except (AttributeError, OSError) as exc:
            raise Fatal(TEMPORARY, f"unable to create a scratch file: "
                                   f"{_errtext(exc) if isinstance(exc, OSError) else exc}") from None

    _stdin_is_open()
    fd, records, warn = build(scratch(), "memory", scratch, full_report=True)
    os.close(fd)
    warn.close()
    print(f"{PROG}: ok: {records} records, {warn.count} warnings")


def main() -> None:
    args = sys.argv[1:]
    gc.disable()  # short-lived, no reference cycles: skip scanning 1M objects
    try:
        if args[:1] == ["--help"]:
            _print(HELP)
        elif args[:1] == ["--version"]:
            _print(VERSION_LINE)
        elif args[:1] == ["--check"]:
            check()
        elif len(args) < 2:
            _say(USAGE)
            sys.exit(PERMANENT)
        else:
            compile_to(args[0], args[1])
    except Fatal as fatal:
        _say(f"{PROG}: fatal: {fatal.text}")
        sys.exit(fatal.code)
    except MemoryError:
        _say(f"{PROG}: fatal: out of memory")
        sys.exit(TEMPORARY)
    except KeyboardInterrupt:
        sys.exit(TEMPORARY)
    except Exception as exc:  # a bug: still one line, never a traceback
        _say(f"{PROG}: fatal: internal error: {exc!r}")
        sys.exit(BUG)
    sys.exit(0)


if __name__ == "__main__":
    main()
