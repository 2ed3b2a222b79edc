"""tcpserver command line: getopt-style argv -> frozen Options (pure).

Mirrors ucspi-tcp 0.88's option handling: djb getopt (clustered flags, an
argument attached or in the next word, `--` ends options, the first word not
starting with `-` ends options), later options override earlier ones, and
numeric arguments are read with a lenient leading-digits scan (no digits is
0, trailing junk ignored).  Extras beyond the original: -4, -6 (address
family), -C n (per-IP concurrency limit) and -M text (sent to clients
refused by that limit).  One deliberate difference: -u, -g and -U's $UID
and $GID must be numbers a uid_t holds, since the original's lenient
reading leaves the child running as root (`-u qmaild` is uid 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .net.proxy import parse_sources

PROG = "tcpserver"
USAGE = ("tcpserver: usage: tcpserver [ -1UXpPhHrRoOdDqQv46 ] [ -c limit ] "
         "[ -x rules.cdb ] [ -B banner ] [ -g gid ] [ -u uid ] [ -b backlog ] "
         "[ -l localname ] [ -t timeout ] [ -C perip ] [ -M message ] "
         "[ --ipv4 ] [ --ipv6 ] [ --per-ip-limit perip ] [ --per-ip-message message ] "
         "[ --proxy-from cidr,... ] [ --proxy-timeout seconds ] [ --reuseport ] "
         "[ --fdname name ] [ --daemon ] [ --pidfile file ] [ --log file|syslog ] "
         "[ --stop-timeout seconds ] [ --preload ] "
         "[ --help ] [ --version ] host port program")


QUIET, DEFAULT, VERBOSE = 0, 1, 2


class UsageError(Exception):
    """Bad command line.  `lines` are printed to stderr (unless -q), exit 100."""

    def __init__(self, lines: list[str], quiet: bool):
        super().__init__("\n".join(lines))
        self.lines = lines
        self.quiet = quiet


@dataclass(frozen=True)
class Options:
    host: str = ""
    port: str = ""
    program: tuple[str, ...] = ()
    limit: int = 40                    # -c
    rules: str | None = None           # -x
    rules_missing_ok: bool = False     # -X
    banner: bytes = b""                # -B, raw bytes, no escapes
    gid: int = 0                       # -g / -U
    uid: int = 0                       # -u / -U
    print_port: bool = False           # -1
    backlog: int = 20                  # -b
    verbosity: int = DEFAULT           # -q / -Q / -v
    remote_host_lookup: bool = True    # -h / -H
    paranoid: bool = False             # -p / -P
    local_name: bytes | None = None    # -l
    ident: bool = True                 # -r / -R
    ident_timeout: int = 26            # -t
    kill_ip_options: bool = True       # -O / -o
    nodelay: bool = False              # -D / -d
    family: int = 0                    # 0 as the host says, 4 (-4), 6 (-6)
    per_ip_limit: int = 0              # -C, 0 = no per-IP limit
    per_ip_message: bytes = b""        # -M
    # Deployment (docs/deploy/): PROXY protocol, handed-over sockets, daemon.
    proxy_from: tuple = ()             # --proxy-from CIDR[,CIDR...]
    proxy_timeout: int = 10            # --proxy-timeout seconds
    reuseport: bool = False            # --reuseport
    fdname: str | None = None          # --fdname (which LISTEN_FDNAMES socket)
    daemon: bool = False               # --daemon
    pidfile: str | None = None         # --pidfile FILE
    log: str | None = None             # --log FILE|syslog (with --daemon)
    stop_timeout: int = 30             # --stop-timeout seconds (SIGQUIT drain)
    preload: bool = False              # --preload


ULONG_MODULUS = 1 << 64


def scan_number(text: str) -> int:
    """djb scan_ulong: the value of the leading decimal digits, 0 if none.
    No overflow check: the value wraps as the C unsigned long does, so
    `-c 18446744073709551617` is a limit of 1, as in the original."""
    value = 0
    for ch in text:
        if not "0" <= ch <= "9":
            break
        value = (value * 10 + ord(ch) - 48) % ULONG_MODULUS
    return value


# The largest uid/gid: (uid_t)-1, one more, means "no change" to setuid().
LARGEST_ID = 0xFFFFFFFE
ID_COMMAND = {"u": "id -u", "g": "id -g"}


def _id_value(text: str) -> int | None:
    """A uid/gid written as decimal digits, at most LARGEST_ID; else None."""
    if text.isascii() and text.isdigit() and int(text) <= LARGEST_ID:
        return int(text)
    return None


def read_id(opt: str, text: str) -> int:
    """-u / -g: decimal digits only, at most LARGEST_ID.  The original reads
    `-u qmaild` as 0 and passes `-u 4294967296` to setuid() as 0: both leave
    the child running as root, so both are refused here, saying what to
    write instead."""
    value = _id_value(text)
    if value is not None:
        return value
    what = "not a number" if not (text.isascii() and text.isdigit()) else "out of range"
    looks_like_name = text[:1].isalpha() and text.isascii() and \
        all(ch.isalnum() or ch in "._-" for ch in text)
    user = text if looks_like_name else "USER"
    raise UsageError([f"{PROG}: -{opt} {text}: {what} (a numeric id up to {LARGEST_ID} "
                      f"is needed); write -{opt} $({ID_COMMAND[opt]} {user}), or run "
                      f"envuidgid {user} {PROG} -U ..."], False)


def read_env_id(name: str, text: str) -> int:
    """-U: $UID / $GID as envuidgid sets them, checked as -u / -g are."""
    value = _id_value(text)
    if value is not None:
        return value
    raise UsageError([f"{PROG}: -U: ${name} is {text!r}, not a numeric id up to "
                      f"{LARGEST_ID}; set it with envuidgid USER {PROG} -U ..."], False)


def as_bytes(text: str) -> bytes:
    """argv words as the kernel gave them (Python decodes with surrogateescape)."""
    return text.encode("utf-8", "surrogateescape")


def first_byte(opt: str) -> str:
    """The C getopt works on bytes: for `-é` it complains about its first
    byte.  Returned as a surrogate-escaped str, printed back as that byte."""
    return as_bytes(opt)[:1].decode("utf-8", "surrogateescape")


# Flags: option letter -> (field, value it sets).
FLAG_FIELDS = {
    "1": ("print_port", True), "X": ("rules_missing_ok", True),
    "p": ("paranoid", True), "P": ("paranoid", False),
    "h": ("remote_host_lookup", True), "H": ("remote_host_lookup", False),
    "r": ("ident", True), "R": ("ident", False),
    "o": ("kill_ip_options", False), "O": ("kill_ip_options", True),
    "d": ("nodelay", False), "D": ("nodelay", True),
    "q": ("verbosity", QUIET), "Q": ("verbosity", DEFAULT),
    "v": ("verbosity", VERBOSE), "4": ("family", 4), "6": ("family", 6),
}

# Options with an argument: option letter -> (field, how the argument is read).
ARGUMENT_FIELDS = {
    "c": ("limit", scan_number), "x": ("rules", str), "B": ("banner", as_bytes),
    "g": ("gid", None), "u": ("uid", None), "b": ("backlog", scan_number),
    "l": ("local_name", as_bytes), "t": ("ident_timeout", scan_number),
    "C": ("per_ip_limit", scan_number), "M": ("per_ip_message", as_bytes),
}

FLAGS = "".join(FLAG_FIELDS) + "U"
WITH_ARGUMENT = "".join(ARGUMENT_FIELDS)

# Long options are ours (the original has none; to its getopt `--name` is the
# illegal option `-`).  `--name value` and `--name=value` both work.
# Flags: option -> (field, value it sets); with an argument: option -> (field,
# how the argument is read).  --help and --version are answered by main.
def proxy_sources(text: str) -> tuple:
    try:
        return parse_sources(text)
    except ValueError:
        raise UsageError([f"{PROG}: bad address in --proxy-from: {text}", USAGE],
                         False) from None


LONG_FLAG_FIELDS: dict[str, tuple[str, object]] = {
    "--ipv4": FLAG_FIELDS["4"], "--ipv6": FLAG_FIELDS["6"],
    "--preload": ("preload", True),
    # Deployment (docs/deploy/).
    "--reuseport": ("reuseport", True), "--daemon": ("daemon", True),
}
LONG_ARGUMENT_FIELDS: dict[str, tuple[str, object]] = {
    "--per-ip-limit": ARGUMENT_FIELDS["C"], "--per-ip-message": ARGUMENT_FIELDS["M"],
    # Deployment (docs/deploy/).
    "--proxy-from": ("proxy_from", proxy_sources),
    "--proxy-timeout": ("proxy_timeout", scan_number),
    "--fdname": ("fdname", str), "--pidfile": ("pidfile", str), "--log": ("log", str),
    "--stop-timeout": ("stop_timeout", scan_number),
}
INFO_OPTIONS = ("--help", "--version")


class InfoRequested(Exception):
    """--help or --version: main prints the answer on stdout and exits 0."""

    def __init__(self, option: str):
        super().__init__(option)
        self.option = option


def _apply(values: dict, opt: str, arg: str | None, env: Mapping[str, str]) -> None:
    if opt in FLAG_FIELDS:
        name, value = FLAG_FIELDS[opt]
        values[name] = value
    elif opt in ARGUMENT_FIELDS:
        name, read = ARGUMENT_FIELDS[opt]
        values[name] = read_id(opt, arg) if read is None else read(arg)
    elif opt == "U":
        # envuidgid convention; an unset variable leaves the value alone,
        # as in the original (`-u 7 -U` without $UID keeps uid 7).
        if "UID" in env:
            values["uid"] = read_env_id("UID", env["UID"])
        if "GID" in env:
            values["gid"] = read_env_id("GID", env["GID"])


def _apply_long(values: dict, opt: str, arg: str | None) -> None:
    if opt in INFO_OPTIONS:
        raise InfoRequested(opt)
    if opt in LONG_ARGUMENT_FIELDS:
        if arg is None:
            raise UsageError([f"{PROG}: option requires an argument -- {opt}", USAGE], False)
        name, read = LONG_ARGUMENT_FIELDS[opt]
        values[name] = read(arg)
    elif opt in LONG_FLAG_FIELDS:
        if arg is not None:
            raise UsageError([f"{PROG}: option takes no argument -- {opt}", USAGE], False)
        name, value = LONG_FLAG_FIELDS[opt]
        values[name] = value
    else:
        raise UsageError([f"{PROG}: illegal option -- {opt}", USAGE], False)


def getopt(argv: list[str], with_argument: str,
           long_with_argument: Mapping[str, object] = {}) -> tuple[list[tuple[str, str | None]], int]:
    """djb getopt: the (option, argument) pairs in order, and the index of the
    first word after the options.  Flags may be clustered; an option in
    `with_argument` takes the rest of its word or the next word; `--` or the
    first word not starting with `-` ends the options.  An option whose
    argument is missing is the last pair, with argument None.

    Our extension: a word `--name` or `--name=value` is one long option,
    paired as ("--name", value); one in `long_with_argument` without `=`
    takes the next word.  A long flag given `=value` is paired with that
    value, for the caller to refuse."""
    pairs: list[tuple[str, str | None]] = []
    index = 0
    while index < len(argv):
        word = argv[index]
        if word == "--":
            return pairs, index + 1
        if not word.startswith("-") or word == "-":
            break
        index += 1
        if word.startswith("--"):
            name, equals, value = word.partition("=")
            if equals:
                pairs.append((name, value))
            elif name in long_with_argument:
                if index >= len(argv):
                    pairs.append((name, None))
                    return pairs, index
                pairs.append((name, argv[index]))
                index += 1
            else:
                pairs.append((name, None))
            continue
        pos = 1
        while pos < len(word):
            opt = word[pos]
            pos += 1
            if opt in with_argument:
                if pos < len(word):
                    pairs.append((opt, word[pos:]))
                elif index < len(argv):
                    pairs.append((opt, argv[index]))
                    index += 1
                else:
                    pairs.append((opt, None))
                    return pairs, index
                break
            pairs.append((opt, None))
    return pairs, index


def parse_args(argv: list[str], env: Mapping[str, str] | None = None) -> Options:
    """Parse argv (without the program name).  Raises UsageError."""
    env = env or {}
    values: dict = {}
    pairs, index = getopt(argv, WITH_ARGUMENT, LONG_ARGUMENT_FIELDS)
    for opt, arg in pairs:
        if opt.startswith("--"):
            _apply_long(values, opt, arg)
            continue
        if opt in WITH_ARGUMENT and arg is None:
            raise UsageError([f"{PROG}: option requires an argument -- {opt}", USAGE], False)
        if opt not in FLAGS and opt not in WITH_ARGUMENT:
            raise UsageError([f"{PROG}: illegal option -- {first_byte(opt)}", USAGE], False)
        _apply(values, opt, arg, env)
    rest = argv[index:]
    if len(rest) < 3:
        # The original silences stderr (-q) only once the options are read,
        # so getopt complaints always show but a missing host/port does not.
        raise UsageError([USAGE], values.get("verbosity") == QUIET)
    if values.get("log") is not None and not values.get("daemon"):
        raise UsageError([f"{PROG}: --log is for --daemon (in the foreground, "
                          "stderr is the log)", USAGE], False)
    return Options(host=rest[0], port=rest[1], program=tuple(rest[2:]), **values)



@dataclass(frozen=True)
class TcpEnvOptions:
    """`tcp-env [-rR] [-hH] [-pP] [-l localname] [-t timeout] [-x rules.cdb [-X]] program`.

    qmail's tcp-env knows -r, -R and -t (default 30 s) and ignores unknown
    options; -x/-X (rules, as tcpserver applies them), -H (no remote name
    lookup), -p/-P (tcpserver's paranoid check of TCPREMOTEHOST) and -l
    (local name, no local lookup) are ours, as are --help and --version."""
    program: tuple[str, ...] = ()
    ident: bool = True
    ident_timeout: int = 30
    rules: str | None = None
    rules_missing_ok: bool = False
    remote_host_lookup: bool = True
    paranoid: bool = False
    local_name: bytes | None = None
    proxy_from: tuple = ()             # --proxy-from CIDR[,CIDR...]
    proxy_timeout: int = 10            # --proxy-timeout seconds


# tcp-env's long options: option -> (field, reader); a bad value is no program.
TCPENV_LONG = {"--proxy-from": ("proxy_from", parse_sources),
               "--proxy-timeout": ("proxy_timeout", scan_number)}


TCPENV_FLAGS = {"r": ("ident", True), "R": ("ident", False),
                "X": ("rules_missing_ok", True), "h": ("remote_host_lookup", True),
                "H": ("remote_host_lookup", False), "p": ("paranoid", True),
                "P": ("paranoid", False)}


def parse_tcpenv_args(argv: list[str]) -> TcpEnvOptions | None:
    """Parse tcp-env's argv (without its name); None when no program is
    given.  Raises InfoRequested for --help and --version."""
    values: dict = {}
    pairs, index = getopt(argv, "txl", TCPENV_LONG)
    for opt, arg in pairs:
        if opt in INFO_OPTIONS:
            raise InfoRequested(opt)
        if opt in TCPENV_LONG:
            if arg is None:
                return None
            name, read = TCPENV_LONG[opt]
            try:
                values[name] = read(arg)
            except ValueError:
                return None
        elif opt.startswith("--"):
            continue                # ignored, as qmail's ignores unknown options
        elif opt in ("t", "x", "l"):
            if arg is None:
                return None
            if opt == "t":
                values["ident_timeout"] = scan_number(arg)
            elif opt == "x":
                values["rules"] = arg
            else:
                values["local_name"] = as_bytes(arg)
        elif opt in TCPENV_FLAGS:   # anything else is ignored, as qmail's does
            name, value = TCPENV_FLAGS[opt]
            values[name] = value
    if index >= len(argv):
        return None
    return TcpEnvOptions(program=tuple(argv[index:]), **values)
