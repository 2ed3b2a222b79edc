"""The only reader of the environment and of $QMAILHOME/control (qmail rules).

Control files follow qmail's control.c: single-value files use their first
line, list files (rcpthosts, badmailfrom) every line; trailing spaces, tabs
and the newline are stripped; in lists, empty lines and lines starting with
`#` are skipped.  A missing file takes its default; a file that exists but
cannot be read is ControlsUnreadable (the caller answers 421 instead of the
greeting, as qmail does).
"""

import errno
import os

from smtpd_child.auth.options import parse_smtpauth
from smtpd_child.smtp.policy import ControlReadError, Policy
from smtpd_child.smtp.protocol import SessionConfig

DEFAULT_QMAILHOME = "/var/qmail"
DEFAULT_TIMEOUT = 1200          # qmail's timeoutsmtpd default, seconds per read
DEFAULT_DEADLINE = 3600         # whole session, seconds (SMTPD_DEADLINE overrides)
DEFAULT_ERRORS = 20             # error replies before 421 (SMTPD_ERROR_LIMIT overrides)
MAX_SECONDS = 10 ** 8           # about three years: longer waits would overflow select()
SPOOL_DIRNAME = "spool"


class ControlsUnreadable(Exception):
    pass


class Settings:
    """What main.py needs: the session's config plus the driver's knobs."""

    tls_cert = None         # control/servercert.pem when it exists
    tls_ciphers = None      # first line of control/tlsciphers
    tls_protocols = None    # control/tlsprotocols

    def __init__(self, session, timeout, deadline, qmailhome, queue_program,
                 spool_dir, warnings):
        self.session = session
        self.timeout = timeout
        self.deadline = deadline
        self.qmailhome = qmailhome
        self.queue_program = queue_program   # path, or None for the built-in spool
        self.spool_dir = spool_dir
        self.warnings = warnings             # lines for stderr


def _read(path):
    """File bytes, None when missing; ControlsUnreadable for any other error."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise ControlsUnreadable(f"unable to read {path}: {e.strerror}") from None


def _strip(line: bytes) -> bytes:
    return line.rstrip(b" \t\n")


def control_line(path):
    """First line of a control file, trailing whitespace stripped, or None."""
    data = _read(path)
    if data is None:
        return None
    return _strip(data.split(b"\n", 1)[0])


def control_list(path):
    """Entries of a list control file, or None if it is missing."""
    data = _read(path)
    if data is None:
        return None
    entries = []
    for line in data.split(b"\n"):
        line = _strip(line)
        if line and not line.startswith(b"#"):
            # qmail's constmap takes NUL-separated entries: a NUL splits a line.
            entries.extend(line.split(b"\0"))
    return entries


ULONG_MAX = 2 ** 64 - 1


def leading_number(text: bytes):
    """qmail's scan_ulong: the leading decimal digits, None if there are none.

    Values beyond an unsigned long count as the largest one (and int() is
    never asked for thousands of digits, which Python refuses).
    """
    end = 0
    while end < len(text) and 0x30 <= text[end] <= 0x39:
        end += 1
    if end == 0:
        return None
    digits = text[:end].lstrip(b"0") or b"0"
    return ULONG_MAX if len(digits) > 20 else min(int(digits), ULONG_MAX)


def control_int(path, default):
    line = control_line(path)
    if line is None:
        return default
    value = leading_number(line)
    return default if value is None else value


def _env(environ, name, default=None):
    value = environ.get(name)
    return default if value is None else os.fsencode(value)


def more_rcpthosts_lookup(path):
    """A lookup in morercpthosts.cdb, opened per lookup so a rebuilt file is seen."""
    def lookup(key: bytes) -> bool:
        import cdbx         # only sessions that need it pay for the import
        try:
            db = cdbx.CDB(path, mmap=False)
            try:
                return key in db
            finally:
                db.close()
        except OSError as e:
            raise ControlReadError(str(e)) from None
    return lookup


def local_ipv4_checker(tcplocalip):
    """is_local_ip(ip) over this host's interface addresses, found on first use."""
    found = []

    def is_local_ip(ip: str) -> bool:
        if not found:
            # netqmail's ipme_init() counts 0.0.0.0 ("this host") as local too.
            found.append(_interface_addresses() | {"0.0.0.0", "127.0.0.1", tcplocalip})
        return ip in found[0]
    return is_local_ip


def _interface_addresses():
    """This host's IPv4 addresses as qmail's ipme_init() sees them (SIOCGIFCONF).

    SIOCGIFCONF lists every address with its own label (eth0:1 aliases too),
    which per-interface SIOCGIFADDR would miss.
    """
    import array
    import fcntl
    import socket
    import struct
    addresses = set()
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError:
        return addresses
    record = 40 if struct.calcsize("P") == 8 else 32      # sizeof(struct ifreq)
    with probe:
        size = record * 64
        while size <= record * 65536:
            buffer = array.array("B", bytes(size))
            request = struct.pack("iP", size, buffer.buffer_info()[0])
            try:
                used = struct.unpack("iP", fcntl.ioctl(probe.fileno(), 0x8912, request))[0]
            except OSError:
                return addresses
            if used + record <= size:       # not truncated (qmail grows it the same way)
                break
            size *= 2
        data = buffer.tobytes()[:used]
        for offset in range(0, used - record + 1, record):
            family = struct.unpack("H", data[offset + 16:offset + 18])[0]
            if family == socket.AF_INET:
                addresses.add(socket.inet_ntoa(data[offset + 20:offset + 24]))
    return addresses


def _no_name(control, qmailhome_variable):
    """The message for a qmail home without control/me and control/smtpgreeting."""
    if qmailhome_variable:
        used = f"QMAILHOME={qmailhome_variable}"
    else:
        used = f"QMAILHOME is not set, so {DEFAULT_QMAILHOME} is used"
    return (f"{os.path.join(control, 'me')} and {os.path.join(control, 'smtpgreeting')} "
            f"are both missing ({used}: a mistyped or unset QMAILHOME is the usual cause)")


def error_limit(environ):
    """SMTPD_ERROR_LIMIT: 4xx/5xx replies before the 421; as SMTPD_DEADLINE, a
    positive number (empty, 0 or no digits: the default)."""
    return leading_number(os.fsencode(environ.get("SMTPD_ERROR_LIMIT", ""))) or DEFAULT_ERRORS


def load(environ=None, clock=None, auth_checker=False) -> Settings:
    """Read everything once, before the greeting.  Raises ControlsUnreadable.

    auth_checker: a checkpassword command was given (AUTH can be offered)."""
    environ = os.environ if environ is None else environ
    home = os.path.abspath(environ.get("QMAILHOME") or DEFAULT_QMAILHOME)
    control = os.path.join(home, "control")
    warnings = []

    me = control_line(os.path.join(control, "me"))
    greeting = control_line(os.path.join(control, "smtpgreeting"))
    if greeting is None:
        greeting = me
    if greeting is None:
        raise ControlsUnreadable(_no_name(control, environ.get("QMAILHOME")))
    local_ip_host = control_line(os.path.join(control, "localiphost"))
    if local_ip_host is None:
        local_ip_host = me

    timeout = control_int(os.path.join(control, "timeoutsmtpd"), DEFAULT_TIMEOUT)
    timeout = min(max(timeout, 1), MAX_SECONDS)
    databytes = control_int(os.path.join(control, "databytes"), 0)
    if "DATABYTES" in environ:
        databytes = leading_number(os.fsencode(environ["DATABYTES"])) or 0

    rcpthosts = control_list(os.path.join(control, "rcpthosts"))
    more = None
    relayclient = _env(environ, "RELAYCLIENT")
    if rcpthosts is None:
        if relayclient is None:      # a RELAYCLIENT session never reads rcpthosts
            warnings.append(f"{os.path.join(control, 'rcpthosts')} is missing: "
                            f"refusing to relay for every domain")
    else:
        cdb_path = os.path.join(control, "morercpthosts.cdb")
        try:
            os.close(os.open(cdb_path, os.O_RDONLY))
            more = more_rcpthosts_lookup(cdb_path)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise ControlsUnreadable(f"unable to read {cdb_path}: {e.strerror}") from None
    badmailfrom = control_list(os.path.join(control, "badmailfrom")) or []

    tcplocalip = environ.get("TCPLOCALIP", "")
    session = SessionConfig(
        greeting=greeting,
        databytes=databytes,
        policy=Policy(rcpthosts, more, relayclient, badmailfrom),
        local_ip_host=local_ip_host,
        is_local_ip=local_ipv4_checker(tcplocalip),
        remotehost=_env(environ, "TCPREMOTEHOST", b"unknown"),
        remoteip=_env(environ, "TCPREMOTEIP", b"unknown"),
        remoteinfo=_env(environ, "TCPREMOTEINFO"),
        local=_env(environ, "TCPLOCALHOST", _env(environ, "TCPLOCALIP", b"unknown")),
        clock=clock or (lambda: 0),
        max_errors=error_limit(environ),
        **_extensions(environ, control, greeting, clock or (lambda: 0), auth_checker, warnings),
    )

    deadline = leading_number(os.fsencode(environ.get("SMTPD_DEADLINE", ""))) or DEFAULT_DEADLINE
    deadline = min(deadline, MAX_SECONDS)
    # Set but empty is still set: qmail would exec "" and answer 451, so do we.
    queue_program = environ.get("QMAILQUEUE")
    if queue_program is None:
        candidate = os.path.join(home, "bin", "qmail-queue")
        if os.path.exists(candidate):
            queue_program = candidate
    settings = Settings(session, timeout, deadline, home, queue_program,
                        os.path.join(home, SPOOL_DIRNAME), warnings)
    cert = os.path.join(control, "servercert.pem")
    if os.path.lexists(cert):
        settings.tls_cert = cert
        settings.tls_ciphers = control_line(os.path.join(control, "tlsciphers"))
        settings.tls_protocols = _read(os.path.join(control, "tlsprotocols"))
    return settings


def _extensions(environ, control, greeting, clock, auth_checker, warnings):
    """SessionConfig's AUTH, submission and tarpit settings (docs/smtpd.md)."""
    auth, notes = parse_smtpauth(_env(environ, "SMTPAUTH"), auth_checker)
    warnings += notes
    # sagredo's qmail: AUTH only after STARTTLS unless FORCETLS=0.
    auth.without_tls = environ.get("FORCETLS") == "0"
    tarpit = {}
    for name in ("tarpitcount", "tarpitdelay"):
        value = _env(environ, name.upper())
        if value is None:
            value = control_line(os.path.join(control, name)) or b"0"
        number = leading_number(value)
        if number is None:
            warnings.append(f"{name.upper()}={value.decode(errors='replace')!r} is not a number:"
                            " no tarpit")
        tarpit[name] = min(number or 0, MAX_SECONDS)
    pid = os.getpid()

    def challenge():
        return b"<%d.%s.%d@%s>" % (pid, os.urandom(6).hex().encode(), clock(), greeting)
    return dict(auth=auth, challenge=challenge, tarpit_count=tarpit["tarpitcount"],
                tarpit_delay=tarpit["tarpitdelay"])
