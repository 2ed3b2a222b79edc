"""smtpd-spool: look at the built-in spool.

    smtpd-spool SPOOLDIR list          one line per message: ID, size, sender, recipients
    smtpd-spool SPOOLDIR show ID       the envelope, a blank line, then the message
    smtpd-spool SPOOLDIR remove ID     delete one message

SPOOLDIR is QMAILHOME/spool (var/qmail/spool under `make run`).
"""

import os
import sys

from smtpd_child import spoolfile

USAGE = "usage: smtpd-spool SPOOLDIR list | show ID | remove ID"


def fail(message: str, code: int = 111):
    print(f"smtpd-spool: {message}", file=sys.stderr)
    sys.exit(code)


def message_path(spool: str, ident: str) -> str:
    if not ident or "/" in ident or ident.startswith("."):
        fail(f"bad message id: {ident!r}", 100)
    return os.path.join(spool, "new", ident)


def read_message(path: str):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        fail(f"unable to read {path}: {e.strerror}")
    parsed = spoolfile.parse(data)
    if parsed is None:
        fail(f"{path} is not a spool file")
    return parsed


def show_address(address: bytes) -> str:
    return "<" + address.decode("utf-8", "backslashreplace") + ">"


def list_messages(spool: str) -> None:
    new = os.path.join(spool, "new")
    try:
        names = sorted(os.listdir(new), key=lambda n: (n.split(".")[0].zfill(20), n))
    except OSError as e:
        fail(f"unable to list {new}: {e.strerror}")
    for name in names:
        sender, recipients, message = read_message(os.path.join(new, name))
        print(name, len(message), show_address(sender),
              " ".join(show_address(r) for r in recipients))


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


def main() -> None:
    args = sys.argv[1:]
    if len(args) == 2 and args[1] == "list":
        list_messages(args[0])
    elif len(args) == 3 and args[1] == "show":
        show_message(args[0], args[2])
    elif len(args) == 3 and args[1] == "remove":
        remove_message(args[0], args[2])
    else:
        fail(USAGE, 100)


if __name__ == "__main__":
    main()
