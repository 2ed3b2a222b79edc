"""`make install PREFIX=...`: a tree the service user can run, serving a whole
SMTP session under `softlimit -m` and `tcpserver -u nobody -g nogroup`, with
launchers and manual pages where docs/install.md says."""

import grp
import os
import pathlib
import pwd
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from bench.memory_floor import session, spooled, wait_for
from conftest import ROOT, peer_program
from tcpserver_py.install.check import blocked
from tcpserver_py.launch import ADVISED_LIMIT

PROGRAMS = re.search(r"^PROGRAMS := (.*?)(?<!\\)$", (ROOT / "Makefile").read_text(),
                     re.M | re.S).group(1).replace("\\\n", " ").split()


def readable_interpreter():
    """An interpreter (3.11 or newer) that other users can run, or None."""
    for python in (sys._base_executable, "/usr/bin/python3"):
        if not python or not os.path.exists(python):
            continue
        check = subprocess.run([python, "-c", "import sys, venv, ensurepip; "
                                "sys.exit(sys.version_info < (3, 11))"],
                               capture_output=True, timeout=60)
        ok = subprocess.run([python, "-m", "tcpserver_py.install.check", "interpreter"],
                            cwd=ROOT, capture_output=True, timeout=60)
        if check.returncode == 0 and ok.returncode == 0:
            return python
    return None


def service_ids():
    user = pwd.getpwnam("nobody")
    for name in ("nogroup", "nobody"):
        try:
            return user.pw_uid, grp.getgrnam(name).gr_gid
        except KeyError:
            continue
    return user.pw_uid, user.pw_gid


@pytest.fixture
def prefix():
    # Under /tmp, not pytest's tmp_path (mode 0700 under /tmp/pytest-of-root):
    # the service user must reach it.
    top = tempfile.mkdtemp(prefix="tcpserver-py-install-", dir="/tmp")
    os.chmod(top, 0o755)
    try:
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.timeout(900)
def test_prefix_install_serves_smtp_as_nobody(prefix):
    if os.geteuid() != 0:
        reason = "needs root: tcpserver -u/-g switches to nobody"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    python = readable_interpreter()
    if python is None:
        reason = ("no Python 3.11+ with venv and ensurepip readable by other users "
                  "(tried this one and /usr/bin/python3)")
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    softlimit = peer_program("/usr/bin/softlimit")
    dest = os.path.join(prefix, "opt")
    make = subprocess.run(["make", "install", f"PREFIX={dest}", f"PYTHON={python}"],
                          cwd=ROOT, capture_output=True, timeout=840)
    assert make.returncode == 0, make.stderr.decode()[-3000:]

    bin_dir = os.path.join(dest, "bin")
    names = sorted(entry.partition(":")[0] for entry in PROGRAMS)
    assert {"tcpserver", "tcprules", "tcprulescheck", "tcp-env", "smtpd-child",
            "smtpd-spool"} <= set(names)
    for name in names:
        launcher = open(os.path.join(bin_dir, name)).read()
        assert f"{dest}/lib/tcpserver-py/bin/python" in launcher, name
    pages = sorted(os.listdir(os.path.join(dest, "share", "man", "man1")))
    assert pages == sorted(page.name for page in (ROOT / "docs" / "man").glob("*.1"))
    assert {f"{name}.1" for name in names} <= set(pages)

    # Everything the service user needs, as that user.
    uid, gid = service_ids()
    work = os.path.join(prefix, "work")
    home = os.path.join(work, "qmail")
    os.makedirs(os.path.join(home, "control"))
    os.makedirs(os.path.join(home, "spool"))
    with open(os.path.join(home, "control", "me"), "w") as handle:
        handle.write("mail.example.com\n")
    with open(os.path.join(home, "control", "rcpthosts"), "w") as handle:
        handle.write("example.com\n")
    os.chown(os.path.join(home, "spool"), uid, gid)
    for path in (work, home, os.path.join(home, "control")):
        os.chmod(path, 0o755)
    cdb = os.path.join(work, "smtp.cdb")
    rules = subprocess.run([os.path.join(bin_dir, "tcprules"), cdb, cdb + ".tmp"],
                           input=b"127.:allow,RELAYCLIENT=\"\"\n:allow\n",
                           capture_output=True, timeout=60)
    assert rules.returncode == 0, rules.stderr
    assert blocked(cdb) is None

    # As docs/examples/smtpd/run does it, on a free port of 127.0.0.1.
    argv = [softlimit, "-m", str(ADVISED_LIMIT), os.path.join(bin_dir, "tcpserver"),
            "-1", "-v", "-HR", "-l", "localhost", "-x", cdb, "-u", str(uid), "-g", str(gid),
            "127.0.0.1", "0", os.path.join(bin_dir, "smtpd-child")]
    with tempfile.TemporaryFile() as stderr:
        server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr,
                                  env={"PATH": "/usr/bin:/bin", "QMAILHOME": home})
        try:
            port = int(server.stdout.readline())
            assert session(port, timeout=30)
            wait_for(stderr, b"tcpserver: end ", 30)
        finally:
            server.terminate()
            server.communicate(timeout=30)
        stderr.seek(0)
        log = stderr.read()
    log = log.decode(errors="replace")
    assert "Traceback" not in log and "internal error" not in log, log
    assert re.search(r"tcpserver: end \d+ status 0$", log, re.M), log
    new = os.path.join(home, "spool", "new")
    assert spooled(pathlib.Path(home)) == 1
    (message,) = os.listdir(new)
    assert os.stat(os.path.join(new, message)).st_uid == uid  # written as nobody


def test_paths_others_cannot_reach_are_named(prefix):
    hidden = os.path.join(prefix, "home")
    os.mkdir(hidden, 0o700)
    python = os.path.join(hidden, "python3")
    open(python, "w").close()
    os.chmod(python, 0o755)
    os.chmod(hidden, 0o700)
    assert blocked(python) == f"{hidden} is mode 0700: others cannot enter it"
    library = os.path.join(prefix, "lib.py")
    open(library, "w").close()
    os.chmod(library, 0o600)
    assert blocked(library) == f"{library} is mode 0600: others cannot read it"
    os.chmod(library, 0o644)
    assert blocked(library) is None
