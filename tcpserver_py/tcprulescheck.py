"""tcprulescheck: show which rule of a cdb applies to a client.

    tcprulescheck rules.cdb [address]
    tcprulescheck --help | --version

Reads TCPREMOTEIP (default 0.0.0.0), TCPREMOTEHOST and TCPREMOTEINFO from
the environment, as ucspi-tcp 0.88 does, and prints exactly what it prints:
`rule KEY:`, one `set environment variable NAME=VALUE` per variable, then
`allow connection` or `deny connection`; `default:` when no key matches.
An address given as second argument replaces TCPREMOTEIP.  IPv6 and
IPv4-mapped addresses are looked up with our keys (see rules.keys); any other
text is looked up literally, as the original does.
"""

from __future__ import annotations

import errno
import os
import sys

import cdbx

from . import VERSION_LINE
from .errstr import error_str
from .exitcodes import PERMANENT, TEMPORARY
from .rules.keys import candidate_keys, canonical_ip, raw_items, text_candidate_keys

USAGE = "tcprulescheck: usage: tcprulescheck rules.cdb"  # the original's
HELP = """\
usage: tcprulescheck rules.cdb [address]
       tcprulescheck --help | --version

Shows which rule of rules.cdb applies to a client, as tcpserver -x would
apply it: the address is TCPREMOTEIP (default 0.0.0.0), with TCPREMOTEHOST
and TCPREMOTEINFO for name and ident rules, all from the environment.

Extensions to ucspi-tcp's tcprulescheck:
  address              given as an argument, replaces TCPREMOTEIP
  IPv6 addresses       looked up with the IPv6 keys tcprules writes;
                       ::ffff:a.b.c.d with the IPv4 ones

Exit 0 (allow or deny), 100 on usage errors, 111 when rules.cdb cannot be
read.  See tcprulescheck(1).
"""


def lookup_keys(ip: bytes, host: bytes | None, info: bytes | None):
    """Candidate keys: ours for real IPv6/IPv4-mapped addresses, the
    original's text rule for anything else (dotted quads agree)."""
    if b":" in ip:
        try:
            canonical = canonical_ip(ip.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
        else:
            return candidate_keys(canonical, host, info)
    return text_candidate_keys(ip, host, info)


def describe(key: bytes, data: bytes) -> bytes:
    """The original's report for a matched rule: items are printed up to
    their NUL, `D` stops at `deny connection`, other items are skipped."""
    out = [b"rule " + key + b":\n"]
    for item in raw_items(data):
        if item[:1] == b"D":
            out.append(b"deny connection\n")
            return b"".join(out)
        if item[:1] == b"+":
            out.append(b"set environment variable " + item[1:] + b"\n")
    out.append(b"allow connection\n")
    return b"".join(out)


def check(path: str, ip: bytes, host: bytes | None, info: bytes | None) -> bytes:
    """Report for one client; raises OSError when the cdb cannot be read."""
    with open(path, "rb") as handle:
        db = cdbx.CDB(handle, mmap=False)
        try:
            for key in lookup_keys(ip, host, info):
                data = db.get(key)
                if data is not None:
                    return describe(key, data)
        finally:
            db.close()
    return b"default:\nallow connection\n"


def main() -> None:
    args = sys.argv[1:]
    if args[:1] in (["--help"], ["--version"]):
        sys.stdout.write(HELP if args[0] == "--help" else VERSION_LINE)
        sys.stdout.flush()
        sys.exit(0)
    if not args:
        sys.stderr.write(USAGE + "\n")
        sys.exit(PERMANENT)
    path = args[0]
    env = os.environb
    ip = os.fsencode(args[1]) if len(args) > 1 else env.get(b"TCPREMOTEIP", b"0.0.0.0")
    try:
        report = check(path, ip, env.get(b"TCPREMOTEHOST"), env.get(b"TCPREMOTEINFO"))
    except (OSError, ValueError) as exc:
        err = getattr(exc, "errno", None) or errno.EPROTO  # cdbx: corrupt file
        sys.stderr.write(f"tcprulescheck: fatal: unable to read {path}: {error_str(err)}\n")
        sys.exit(TEMPORARY)
    sys.stdout.buffer.write(report)
    sys.stdout.flush()
    sys.exit(0)


if __name__ == "__main__":
    main()
