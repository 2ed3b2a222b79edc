"""relay-ctrl-check program [args...]: let recently recorded clients relay.

Chain-loaded between tcpserver and the SMTP server.  When $RELAYCLIENT is
not already set and the record for $TCPREMOTEIP in $RELAY_CTRL_DIR is at
most $RELAY_CTRL_EXPIRY seconds old (default 900), sets RELAYCLIENT to
$RELAY_CTRL_RELAYCLIENT (default empty); then runs the program.

Fails closed: a missing or unreadable directory, a bad address or a bad
value of a variable relays nobody and is logged on stderr; the program runs
all the same (mail for our own domains must still be accepted).  Nothing
else in the environment is changed; records are never removed here
(relay-ctrl-age does that, as the user that owns the directory).
"""

import os
import sys
import time

from smtpd_child.chainexec import answered_info, EXIT_USAGE, exec_program, log
from smtpd_child.relayctrl import names, records

NAME = "relay-ctrl-check"
HELP = """\
usage: relay-ctrl-check program [args...]
       relay-ctrl-check --help | --version

Between tcpserver and the SMTP server: when $RELAYCLIENT is unset and
$TCPREMOTEIP was recorded by relay-ctrl-allow in $RELAY_CTRL_DIR at most
$RELAY_CTRL_EXPIRY seconds ago (default 900), sets RELAYCLIENT to
$RELAY_CTRL_RELAYCLIENT (default empty); then runs the program.
Any problem relays nobody and is written to stderr.
"""


def relayclient_for(env):
    """The value RELAYCLIENT should get, or None to relay nobody; logs why not."""
    verbose = "RELAY_CTRL_LOG_IPS" in env
    try:
        expiry = names.parse_expiry(env.get("RELAY_CTRL_EXPIRY"))
        value = names.parse_relayclient(env.get("RELAY_CTRL_RELAYCLIENT"))
        name = names.canonical_address(env.get("TCPREMOTEIP"))
    except names.BadValue as exc:
        log(NAME, f"relaying for nobody: {exc}")
        return None
    dirpath = env.get("RELAY_CTRL_DIR", "")
    try:
        recorded = records.in_directory(
            dirpath, lambda dirfd: records.recorded_at(dirfd, dirpath, name))
    except records.RecordError as exc:
        log(NAME, f"relaying for nobody: {exc}")
        return None
    if recorded is None or not names.is_fresh(recorded, time.time(), expiry):
        if verbose:
            log(NAME, f"{name} not recorded or expired: not relaying")
        return None
    if verbose:
        log(NAME, f"{name} recorded: setting RELAYCLIENT")
    return value


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if answered_info(argv, HELP):
        return 0
    if not argv:
        log(NAME, "usage: relay-ctrl-check program [args...]")
        return EXIT_USAGE
    changes = {}
    if "RELAYCLIENT" not in os.environ:
        value = relayclient_for(os.environ)
        if value is not None:
            changes["RELAYCLIENT"] = value
    exec_program(NAME, argv, changes)
    return 111      # not reached: exec_program runs argv or exits
