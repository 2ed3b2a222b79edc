"""relay-ctrl-age: remove the records older than $RELAY_CTRL_EXPIRY (from cron).

Exit 0 when done, 111 when the directory or a record could not be handled
(each logged with its path), 100 on a bad $RELAY_CTRL_EXPIRY or arguments.
"""

import os
import sys
import time

from smtpd_child.chainexec import answered_info, EXIT_TEMPORARY, EXIT_USAGE, log
from smtpd_child.relayctrl import names, records

NAME = "relay-ctrl-age"
HELP = """\
usage: relay-ctrl-age
       relay-ctrl-age --help | --version

Removes the records in $RELAY_CTRL_DIR older than $RELAY_CTRL_EXPIRY
seconds (default 900); run it from cron.
"""


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if answered_info(argv, HELP):
        return 0
    if argv:
        log(NAME, "usage: relay-ctrl-age (takes no arguments; see $RELAY_CTRL_DIR)")
        return EXIT_USAGE
    try:
        expiry = names.parse_expiry(os.environ.get("RELAY_CTRL_EXPIRY"))
    except names.BadValue as exc:
        log(NAME, f"fatal: {exc}")
        return EXIT_USAGE
    dirpath = os.environ.get("RELAY_CTRL_DIR", "")
    try:
        _, problems = records.in_directory(
            dirpath, lambda dirfd: records.remove_stale(dirfd, dirpath, expiry, time.time()))
    except records.RecordError as exc:
        log(NAME, f"fatal: {exc}")
        return EXIT_TEMPORARY
    for line in problems:
        log(NAME, line)
    return EXIT_TEMPORARY if problems else 0
