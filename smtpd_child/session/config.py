"""The environment and $QMAILHOME/control, parsed into Settings (qmail rules).

startup.py reads the control files before the greeting (a file that exists
but cannot be read is ControlsUnreadable: the caller answers 421 instead of
the greeting, as qmail does); this module makes sense of what it read, after
the greeting.  List files (rcpthosts, badmailfrom) use every line, trailing
spaces, tabs and the newline stripped, empty lines and lines starting with
`#` skipped; single-value files their first line.
"""

import os
import posix

from smtpd_child import startup
from smtpd_child.session import controls as parsed_controls
from smtpd_child.session.controls import list_entries  # noqa: F401 (tests use it)
from smtpd_child.auth.options import parse_smtpauth
from smtpd_child.smtp.policy import ControlReadError, Policy
from smtpd_child.smtp.protocol import SessionConfig
# ControlsUnreadable: load() raises it, callers may catch config.ControlsUnreadable.
from smtpd_child.startup import (ControlsUnreadable, MAX_SECONDS, first_line,  # noqa: F401
                                 leading_number, number)

DEFAULT_ERRORS = 20             # error replies before 421 (SMTPD_ERROR_LIMIT overrides)
SPOOL_DIRNAME = "spool"


class Settings:
    """What driver.py needs: the session's config plus the driver's knobs."""

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


def control_list(path):
    """Entries of a list control file, or None if it is missing."""
    return list_entries(startup.read_file(os.fsencode(path)))


def _bytes_environment(environ):
    """`environ` as a dict of bytes: for os.environ its own dict, without a
    copy (posix.environ: os.environ's methods keep it in step, bytes to
    bytes; main.py reads it too), any other mapping encoded as os.environb
    would see it.  Plain dict lookups of bytes: each through os.environ
    would be four calls of Python code, and the value encoded back."""
    if environ is os.environ:
        return posix.environ
    return {os.fsencode(name): os.fsencode(value) for name, value in environ.items()}


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
    """is_local_ip(ip) over this host's interface addresses, found on first use
    (TCPLOCALIP as text, or as bytes: decoded then)."""
    found = []

    def is_local_ip(ip: str) -> bool:
        if not found:
            local = tcplocalip if isinstance(tcplocalip, str) else os.fsdecode(tcplocalip)
            # netqmail's ipme_init() counts 0.0.0.0 ("this host") as local too.
            found.append(_interface_addresses() | {"0.0.0.0", "127.0.0.1", local})
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


def error_limit(env):
    """SMTPD_ERROR_LIMIT (`env`: bytes to bytes): 4xx/5xx replies before the
    421; as SMTPD_DEADLINE, a positive number (empty, 0 or no digits: the
    default)."""
    return leading_number(env.get(b"SMTPD_ERROR_LIMIT", b"")) or DEFAULT_ERRORS


def load(environ=None, clock=None, auth_checker=False) -> Settings:
    """Read and parse everything at once.  Raises ControlsUnreadable."""
    environ = os.environ if environ is None else environ
    raw = startup.read({os.fsencode(k): os.fsencode(v) for k, v in environ.items()})
    return build(raw, environ, clock, auth_checker)


class Paths:
    """The paths build() names under one qmail home, as text."""

    def __init__(self, home_bytes, control_bytes):
        self.home = home = os.fsdecode(home_bytes)
        self.control = control = os.fsdecode(control_bytes)
        self.rcpthosts = os.path.join(control, "rcpthosts")
        self.more_rcpthosts = os.path.join(control, "morercpthosts.cdb")
        self.servercert = os.path.join(control, "servercert.pem")
        self.queue = os.path.join(home, "bin", "qmail-queue")
        self.spool = os.path.join(home, SPOOL_DIRNAME)


_last_paths = []        # [(home, control, Paths)]: the latest home only


def paths(home, control) -> Paths:
    """Paths(home, control), kept for the next session under the same home
    (warmed in the server under --preload, as controls.py's memo)."""
    if _last_paths and _last_paths[0][0] == home and _last_paths[0][1] == control:
        return _last_paths[0][2]
    found = Paths(home, control)
    _last_paths[:] = [(home, control, found)]
    return found


def build(raw, environ, clock=None, auth_checker=False) -> Settings:
    """Settings from startup.read's files and the environment.

    auth_checker: a checkpassword command was given (AUTH can be offered)."""
    files = raw.files
    env = _bytes_environment(environ)
    where = paths(raw.home, raw.control)
    warnings = []
    greeting = raw.greeting
    # The files' own values, parsed once per contents (controls.py).
    values = parsed_controls.parsed(files)
    databytes = values.databytes
    if b"DATABYTES" in env:
        databytes = leading_number(env[b"DATABYTES"]) or 0
    rcpthosts = values.rcpthosts
    more = None
    relayclient = env.get(b"RELAYCLIENT")
    if rcpthosts is None:
        if relayclient is None:      # a RELAYCLIENT session never reads rcpthosts
            warnings.append(f"{where.rcpthosts} is missing: "
                            f"refusing to relay for every domain")
    elif raw.more_rcpthosts:
        more = more_rcpthosts_lookup(where.more_rcpthosts)

    session = SessionConfig(
        greeting=greeting,
        databytes=databytes,
        policy=Policy.from_sets(rcpthosts, more, relayclient, values.badmailfrom),
        local_ip_host=values.local_ip_host,
        is_local_ip=local_ipv4_checker(env.get(b"TCPLOCALIP", b"")),
        remotehost=env.get(b"TCPREMOTEHOST", b"unknown"),
        remoteip=env.get(b"TCPREMOTEIP", b"unknown"),
        remoteinfo=env.get(b"TCPREMOTEINFO"),
        local=env.get(b"TCPLOCALHOST", env.get(b"TCPLOCALIP", b"unknown")),
        clock=clock or (lambda: 0),
        max_errors=error_limit(env),
        **_extensions(env, values, greeting, clock or (lambda: 0), auth_checker, warnings),
    )

    # Set but empty is still set: qmail would exec "" and answer 451, so do we.
    queue_program = env.get(b"QMAILQUEUE")
    if queue_program is not None:
        queue_program = os.fsdecode(queue_program)
    else:
        if os.path.exists(where.queue):     # looked for at every session
            queue_program = where.queue
    settings = Settings(session, raw.timeout, raw.deadline, where.home, queue_program,
                        where.spool, warnings)
    if raw.cert:
        settings.tls_cert = where.servercert
        settings.tls_ciphers = values.tls_ciphers
        settings.tls_protocols = values.tls_protocols
    return settings


def _extensions(env, values, greeting, clock, auth_checker, warnings):
    """SessionConfig's AUTH, submission and tarpit settings (docs/smtpd.md)."""
    auth, notes = parse_smtpauth(env.get(b"SMTPAUTH"), auth_checker)
    warnings += notes
    # sagredo's qmail: AUTH only after STARTTLS unless FORCETLS=0.
    auth.without_tls = env.get(b"FORCETLS") == b"0"
    tarpit = {}
    for name in ("tarpitcount", "tarpitdelay"):
        value = env.get(name.upper().encode())
        if value is None:
            value = getattr(values, name) or b"0"
        found = leading_number(value)
        if found is None:
            warnings.append(f"{name.upper()}={value.decode(errors='replace')!r} is not a number:"
                            " no tarpit")
        tarpit[name] = min(found or 0, MAX_SECONDS)
    pid = os.getpid()

    def challenge():
        return b"<%d.%s.%d@%s>" % (pid, os.urandom(6).hex().encode(), clock(), greeting)
    return dict(auth=auth, challenge=challenge, tarpit_count=tarpit["tarpitcount"],
                tarpit_delay=tarpit["tarpitdelay"])
