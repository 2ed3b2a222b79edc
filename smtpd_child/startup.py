"""What smtpd-child reads before its greeting: every control file qmail-smtpd
reads at start-up, opened and read whole, nothing parsed beyond the greeting.

qmail-smtpd answers `421 unable to read controls` instead of its 220 when any
of them exists but cannot be read, so all of them are read here, in
qmail-smtpd's order; what they say (rcpthosts, badmailfrom, the numbers, the
TLS settings) is parsed by config.py after the greeting is out.  Control
files follow qmail's control.c: single-value files use their first line,
trailing spaces, tabs and the newline stripped.  A missing file takes its
default.

Imports only what a fresh interpreter already has (see output.py on `posix`).
"""

import errno
import posix
import sys

DEFAULT_QMAILHOME = b"/var/qmail"
DEFAULT_TIMEOUT = 1200          # qmail's timeoutsmtpd default, seconds per read
DEFAULT_DEADLINE = 3600         # whole session, seconds (SMTPD_DEADLINE overrides)
MAX_SECONDS = 10 ** 8           # about three years: longer waits would overflow select()
ULONG_MAX = 2 ** 64 - 1
TARPIT_CONTROLS = (b"tarpitcount", b"tarpitdelay")   # read only when the variable is unset


class ControlsUnreadable(Exception):
    pass


def text(path: bytes) -> str:
    """A path for a log line, as os.fsdecode gives it."""
    return path.decode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())


def read_file(path: bytes):
    """File bytes, None when missing; ControlsUnreadable for any other error.

    Through posix directly: open() would add a buffered file object, an
    isatty ioctl, two fstats and a seek to every file, at every session."""
    try:
        fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise ControlsUnreadable(f"unable to read {text(path)}: {e.strerror}") from None
    try:
        chunks = []
        while True:
            chunk = posix.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    except OSError as e:        # a directory (EISDIR), an I/O error
        raise ControlsUnreadable(f"unable to read {text(path)}: {e.strerror}") from None
    finally:
        posix.close(fd)


def first_line(data):
    """A single-value control file's value (None stays None)."""
    if data is None:
        return None
    return data.split(b"\n", 1)[0].rstrip(b" \t\n")


def leading_number(value: bytes):
    """qmail's scan_ulong: the leading decimal digits, None if there are none.

    Values beyond an unsigned long count as the largest one (and int() is
    never asked for thousands of digits, which Python refuses).
    """
    end = 0
    while end < len(value) and 0x30 <= value[end] <= 0x39:
        end += 1
    if end == 0:
        return None
    digits = value[:end].lstrip(b"0") or b"0"
    return ULONG_MAX if len(digits) > 20 else min(int(digits), ULONG_MAX)


def number(data, default):
    """qmail's control_readint: the leading number of the first line, else the default."""
    line = first_line(data)
    value = None if line is None else leading_number(line)
    return default if value is None else value


class Startup:
    """The raw control files (name -> bytes, or None when missing) and what
    the greeting needs: its text, the write timeout, the session deadline."""

    def __init__(self, home, files, greeting, timeout, deadline, cert, more_rcpthosts):
        self.home = home                    # absolute, bytes
        self.control = home + b"/control"
        self.files = files
        self.greeting = greeting
        self.timeout = timeout
        self.deadline = deadline
        self.cert = cert                    # control/servercert.pem exists
        self.more_rcpthosts = more_rcpthosts    # control/morercpthosts.cdb exists


def read(environ) -> Startup:
    """Everything that decides between the 220 and the 421, from `environ`
    (bytes names and values).  Raises ControlsUnreadable."""
    home = _absolute(environ.get(b"QMAILHOME") or DEFAULT_QMAILHOME)
    control = home + b"/control/"
    files = {}

    def read_control(name):
        files[name] = data = read_file(control + name)
        return data

    me = first_line(read_control(b"me"))
    greeting = first_line(read_control(b"smtpgreeting"))
    if greeting is None:
        greeting = me
    if greeting is None:
        raise ControlsUnreadable(_no_name(text(control), environ.get(b"QMAILHOME")))
    read_control(b"localiphost")
    timeout = number(read_control(b"timeoutsmtpd"), DEFAULT_TIMEOUT)
    timeout = min(max(timeout, 1), MAX_SECONDS)
    read_control(b"databytes")
    more = False
    if read_control(b"rcpthosts") is not None:
        # qmail opens the cdb at start-up too; a lookup reopens it (config.py).
        path = control + b"morercpthosts.cdb"
        try:
            posix.close(posix.open(path, posix.O_RDONLY))
            more = True
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise ControlsUnreadable(f"unable to read {text(path)}: {e.strerror}") from None
    read_control(b"badmailfrom")
    for name in TARPIT_CONTROLS:
        if environ.get(name.upper()) is None:
            read_control(name)
    cert = _lexists(control + b"servercert.pem")
    if cert:
        read_control(b"tlsciphers")
        read_control(b"tlsprotocols")
    deadline = leading_number(environ.get(b"SMTPD_DEADLINE", b"")) or DEFAULT_DEADLINE
    return Startup(home, files, greeting, timeout, min(deadline, MAX_SECONDS), cert, more)


def _absolute(path: bytes) -> bytes:
    """os.path.abspath's answer; the usual absolute, already normal path is
    taken as it is (posixpath would import os, for nothing)."""
    if (path.startswith(b"/") and not path.endswith(b"/") and b"//" not in path
            and b"/." not in path):
        return path
    import posixpath
    return posixpath.abspath(path)


def _lexists(path: bytes) -> bool:
    try:
        posix.lstat(path)
    except (OSError, ValueError):
        return False
    return True


def _no_name(control: str, qmailhome_variable):
    """The message for a qmail home without control/me and control/smtpgreeting."""
    if qmailhome_variable:
        used = f"QMAILHOME={text(qmailhome_variable)}"
    else:
        used = f"QMAILHOME is not set, so {text(DEFAULT_QMAILHOME)} is used"
    return (f"{control}me and {control}smtpgreeting "
            f"are both missing ({used}: a mistyped or unset QMAILHOME is the usual cause)")
