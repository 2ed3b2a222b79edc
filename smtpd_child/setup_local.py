"""Prepare a qmail home for a local test server (used by `make run`).

    python -m smtpd_child.setup_local QMAILHOME

Creates, only where missing: control/me (`localhost`), control/rcpthosts
(`localhost` and `example.org`: mail to those domains is accepted from any
client, everything else only from clients with RELAYCLIENT) and the built-in
spool QMAILHOME/spool/{tmp,new} (mode 0700).  Existing files are never changed, so it is
safe to run before every start.
"""

import os
import sys

DEFAULT_FILES = {
    "me": b"localhost\n",
    "rcpthosts": b"localhost\nexample.org\n",
}


def setup(home: str) -> list:
    """Create what is missing; returns the paths created."""
    created = []
    control = os.path.join(home, "control")
    spool = os.path.join(home, "spool")
    for directory in (control, spool, os.path.join(spool, "tmp"), os.path.join(spool, "new")):
        if not os.path.isdir(directory):
            os.makedirs(directory, exist_ok=True)
            if directory != control:
                # smtpd-child refuses a spool others can write: 0700 whatever the umask.
                os.chmod(directory, 0o700)
            created.append(directory)
    for name, content in DEFAULT_FILES.items():
        path = os.path.join(control, name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        created.append(path)
    return created


def main() -> None:
    if len(sys.argv) != 2:
        print("usage: python -m smtpd_child.setup_local QMAILHOME", file=sys.stderr)
        sys.exit(100)
    home = sys.argv[1]
    try:
        created = setup(home)
    except OSError as e:
        print(f"setup_local: unable to prepare {home}: {e.strerror}", file=sys.stderr)
        sys.exit(111)
    for path in created:
        print(f"created {path}")
    print(f"spool: {os.path.join(home, 'spool')} (read it with: smtpd-spool "
          f"{os.path.join(home, 'spool')} list)")


if __name__ == "__main__":
    main()
