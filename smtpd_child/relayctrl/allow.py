"""relay-ctrl-allow [program [args...]]: record a client that logged in.

Run by a POP or IMAP server after a successful login, with the client's
address in $TCPREMOTEIP: creates, or renews, the record named after that
address in $RELAY_CTRL_DIR, then runs its arguments.  Under Courier
($AUTHUSER and $AUTHARGV0 set) only when $AUTHENTICATED says the login
succeeded, as relay-ctrl does.

A record that cannot be written is logged and the program still runs: the
customer can read mail and only relaying is withheld (relay-ctrl would end
the login with 111).  Without a program the exit code tells: 0 recorded or
nothing to record, 111 not recorded.
"""

import os
import sys

from smtpd_child.chainexec import answered_info, EXIT_TEMPORARY, exec_program, log
from smtpd_child.relayctrl import names, records

NAME = "relay-ctrl-allow"
HELP = """\
usage: relay-ctrl-allow [program [args...]]
       relay-ctrl-allow --help | --version

Run by a POP or IMAP server after a successful login: records $TCPREMOTEIP
in $RELAY_CTRL_DIR (for relay-ctrl-check), then runs the program.
"""


def authenticated(env) -> bool:
    if env.get("AUTHUSER") and env.get("AUTHARGV0"):    # Courier's login chain
        return bool(env.get("AUTHENTICATED"))
    return True                     # qmail-popup, pop3front-auth, dovecot: only on success


def allow(env) -> bool:
    """Record the client; False (after logging why) when that failed."""
    if not authenticated(env):
        return True
    try:
        name = names.canonical_address(env.get("TCPREMOTEIP"))
    except names.BadValue as exc:
        log(NAME, f"not recorded: TCPREMOTEIP: {exc}")
        return False
    dirpath = env.get("RELAY_CTRL_DIR", "")
    try:
        content = names.record_content(env.get("USER"), env.get("DOMAIN"))
        records.in_directory(dirpath,
                             lambda dirfd: records.record(dirfd, dirpath, name, content))
    except records.RecordError as exc:
        log(NAME, f"{name} not recorded: {exc}")
        return False
    if "RELAY_CTRL_LOG_IPS" in env:
        log(NAME, f"recorded {name}")
    return True


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if answered_info(argv, HELP):
        return 0
    recorded = allow(os.environ)
    if argv:
        exec_program(NAME, argv)
    return 0 if recorded else EXIT_TEMPORARY
