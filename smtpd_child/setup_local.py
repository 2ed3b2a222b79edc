"""Prepare a qmail home for a local test server (used by `make run`).

    python -m smtpd_child.setup_local QMAILHOME

Creates, only where missing: control/me (`localhost`), control/rcpthosts
(`localhost` and `example.org`: mail to those domains is accepted from any
client, everything else only from clients with RELAYCLIENT), the built-in
spool QMAILHOME/spool/{tmp,new} (mode 0700), a test user for SMTP AUTH in
control/smtppasswd (its password, made up once, kept in QMAILHOME/test-user,
mode 0600) and a self-signed control/servercert.pem for STARTTLS (made by
`openssl`; without it STARTTLS, and so AUTH, is not offered, and this says
so).  Existing files are never changed, so it is safe to run before every
start.
"""

import os
import secrets
import shutil
import subprocess
import sys
import tempfile

from smtpd_child.passwords import passfile, store

TEST_USER = b"test"

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
    created += _test_user(home)
    created += _certificate(control)
    return created


def test_user(home: str) -> tuple[str, str]:
    """(name, password) of the local test user, as created by setup()."""
    with open(os.path.join(home, "test-user"), encoding="ascii") as handle:
        return TEST_USER.decode(), handle.read().strip()


def _test_user(home: str) -> list:
    secret_path = os.path.join(home, "test-user")
    try:
        fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return []
    password = secrets.token_urlsafe(12)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(password + "\n")
    encoded = passfile.encode(password.encode(), os.urandom(passfile.SALT_BYTES))
    passwords = os.path.join(home, "control", "smtppasswd")
    store.update(passwords, lambda old: (passfile.with_entry(old, TEST_USER, encoded), None))
    return [passwords, secret_path]


def _certificate(control: str) -> list:
    path = os.path.join(control, "servercert.pem")
    if os.path.exists(path):
        return []
    openssl = shutil.which("openssl")
    if openssl is None:
        print("setup_local: openssl not found: no control/servercert.pem, so STARTTLS "
              "and AUTH are not offered (install openssl and start again)", file=sys.stderr)
        return []
    with tempfile.TemporaryDirectory(dir=control) as work:
        key, cert = os.path.join(work, "key.pem"), os.path.join(work, "cert.pem")
        made = subprocess.run(
            [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
             "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
            stdin=subprocess.DEVNULL, capture_output=True)
        if made.returncode != 0:
            print(f"setup_local: openssl could not make a certificate: "
                  f"{made.stderr.decode(errors='replace').strip()}", file=sys.stderr)
            return []
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            for part in (cert, key):
                with open(part, "rb") as handle:
                    out.write(handle.read())
        os.rename(path + ".tmp", path)
    return [path]


def main() -> None:
    if len(sys.argv) != 2:
        print("usage: python -m smtpd_child.setup_local QMAILHOME", file=sys.stderr)
        sys.exit(100)
    home = sys.argv[1]
    try:
        created = setup(home)
    except (OSError, store.StoreError) as e:
        print(f"setup_local: unable to prepare {home}: {getattr(e, 'strerror', None) or e}",
              file=sys.stderr)
        sys.exit(111)
    for path in created:
        print(f"created {path}")
    print(f"spool: {os.path.join(home, 'spool')} (read it with: smtpd-spool "
          f"{os.path.join(home, 'spool')} list)")
    name, password = test_user(home)
    print(f"test user for AUTH (after STARTTLS): {name} password {password}")


if __name__ == "__main__":
    main()
