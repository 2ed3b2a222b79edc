"""smtpd-spool: look at the built-in spool.

    smtpd-spool SPOOLDIR list          one line per message: ID, size, sender, recipients
    smtpd-spool SPOOLDIR show ID       the envelope, a blank line, then the message
    smtpd-spool SPOOLDIR remove ID     delete one message
    smtpd-spool SPOOLDIR sweep [HOURS] remove tmp/ files abandoned by killed
                                       sessions, unchanged for HOURS (36)

SPOOLDIR is QMAILHOME/spool (var/qmail/spool under `make run`).
"""

import os
import sys

from smtpd_child import usage
from smtpd_child.delivery import spoolfile

USAGE = ("usage: smtpd-spool SPOOLDIR list | show ID | remove ID | sweep [HOURS]"
         " | --help | --version")


def fail(message: str, code: int = 111):
    print(f"smtpd-spool: {message}", file=sys.stderr)
    sys.exit(code)


def message_path(spool: str, ident: str) -> str:
    if not ident or "/" in ident or ident.startswith("."):
        fail(f"bad message id: {ident!r}", 100)
    return os.path.join(spool, "new", ident)


class Unreadable(Exception):
    pass


def load_message(path: str):
    """(sender, recipients, message); Unreadable with a one-line reason."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise Unreadable(f"unable to read {path}: {e.strerror}") from None
    parsed = spoolfile.parse(data)
    if parsed is None:
        raise Unreadable(f"{path} is not a spool file")
    return parsed


def read_message(path: str):
    try:
        return load_message(path)
    except Unreadable as e:
        fail(str(e))


def show_address(address: bytes) -> str:
    return "<" + address.decode("utf-8", "backslashreplace") + ">"


def list_messages(spool: str) -> None:
    new = os.path.join(spool, "new")
    try:
        names = sorted(os.listdir(new), key=lambda n: (n.split(".")[0].zfill(20), n))
    except FileNotFoundError:
        if not os.path.isdir(spool):
            fail(f"unable to list {new}: no such spool directory")
        names = []          # new/ is made with the first message: an empty spool
    except OSError as e:
        fail(f"unable to list {new}: {e.strerror}")
    problems = 0
    out = sys.stdout.buffer
    for name in names:
        # One bad file is reported and skipped: the rest of the spool still shows.
        try:
            sender, recipients, message = load_message(os.path.join(new, name))
        except Unreadable as e:
            sys.stdout.flush()
            print(f"smtpd-spool: {e}", file=sys.stderr)
            problems += 1
            continue
        line = " ".join([name, str(len(message)), show_address(sender)]
                        + [show_address(r) for r in recipients])
        out.write(os.fsencode(line) + b"\n")
    out.flush()
    if problems:
        sys.exit(111)


def show_message(spool: str, ident: str) -> None:
    sender, recipients, message = read_message(message_path(spool, ident))
    out = sys.stdout.buffer
    out.write(b"From: <" + sender + b">\n")
    for recipient in recipients:
        out.write(b"To: <" + recipient + b">\n")
    out.write(b"\n")
    out.write(message)
    out.flush()


def remove_message(spool: str, ident: str) -> None:
    path = message_path(spool, ident)
    try:
        os.unlink(path)
    except OSError as e:
        fail(f"unable to remove {path}: {e.strerror}")


def sweep_tmp(spool: str, hours) -> None:
    import time
    from smtpd_child.delivery import sweep
    if hours is not None and not hours.isdigit():
        fail(f"bad number of hours: {hours!r}", 100)
    if not os.path.isdir(os.path.join(spool, "tmp")):
        fail(f"unable to sweep {os.path.join(spool, 'tmp')}: no such directory")
    age = sweep.AGE if hours is None else int(hours) * 3600
    removed, busy = sweep.sweep(spool, time.time(), age)
    print(f"removed {removed}, kept {busy} still being written")


def main() -> None:
    args = sys.argv[1:]
    try:
        text = usage.info(args, usage.SMTPD_SPOOL_HELP)
        if text is not None:
            sys.stdout.write(text)
            sys.stdout.flush()
        elif len(args) == 2 and args[1] == "list":
            list_messages(args[0])
        elif len(args) == 3 and args[1] == "show":
            show_message(args[0], args[2])
        elif len(args) == 3 and args[1] == "remove":
            remove_message(args[0], args[2])
        elif len(args) in (2, 3) and args[1] == "sweep":
            sweep_tmp(args[0], args[2] if len(args) == 3 else None)
        else:
            fail(USAGE, 100)
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as cat would.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        sys.exit(111)


if __name__ == "__main__":
    main()
