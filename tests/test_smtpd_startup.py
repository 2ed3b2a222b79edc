"""smtpd-child's start-up: what is read before the greeting, what after it.

Every control file qmail-smtpd reads at start-up is read before the 220 (an
unreadable one is qmail's 421 instead of the greeting); the SMTP core and
the parsing of those files come after it, and a failure there is answered
421 to the client's first command, never a session without its policy.
"""

import resource
import shutil
import socket
import subprocess
import sys

import pytest

import smtpd_servers
from conftest import ROOT, VENV_BIN, our_program
from smtpd_child.output import NOMEM_LINE
from smtpd_child.smtp import replies
from smtpd_servers import smtpd_mode  # noqa: F401 (fixture: exec and preload)

SESSION = (b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.com>\r\n"
           b"DATA\r\nSubject: t\r\n\r\nhello\r\n.\r\nQUIT\r\n")
GREETING = b"220 mail.example.com ESMTP\r\n"


def run_child(home, client, mode="exec", argv=None, preexec_fn=None, **env):
    environment = {"PATH": "/usr/bin:/bin", "QMAILHOME": str(home), **env}
    if argv is None:
        return smtpd_servers.run_smtpd(mode, client, environment, 30, preexec_fn)
    result = subprocess.run(argv, input=client, capture_output=True, env=environment,
                            timeout=30, preexec_fn=preexec_fn)
    return result.stdout, result.stderr, result.returncode


def spooled(home):
    new = home / "spool" / "new"
    return sorted(new.iterdir()) if new.exists() else []


@pytest.mark.parametrize("name", ["smtpgreeting", "localiphost", "timeoutsmtpd", "databytes",
                                  "badmailfrom", "tarpitcount", "tarpitdelay", "tlsciphers",
                                  "tlsprotocols"])
def test_every_start_up_control_file_is_read_before_the_greeting(tmp_path, name, smtpd_mode):
    """The files read besides me/rcpthosts/morercpthosts.cdb (test_smtpd_main):
    one that cannot be read is the 421, with no 220 before it."""
    home = smtpd_servers.make_home(tmp_path)
    if name.startswith("tls"):
        (home / "control" / "servercert.pem").write_text("not used before the first EHLO\n")
    (home / "control" / name).mkdir()                   # reading it fails with EISDIR
    out, err, code = run_child(home, SESSION, smtpd_mode)
    assert out == replies.CONTROLS and code == 1
    assert f"unable to read {home}/control/{name}: Is a directory".encode() in err
    assert spooled(home) == []


def test_a_tarpit_variable_spares_its_control_file(tmp_path):
    # As today: TARPITCOUNT set means control/tarpitcount is never read.
    home = smtpd_servers.make_home(tmp_path)
    (home / "control" / "tarpitcount").mkdir()
    out, err, code = run_child(home, b"QUIT\r\n", TARPITCOUNT="0")
    assert out == GREETING + b"221 mail.example.com\r\n" and code == 0, err


def test_nothing_but_the_greeting_is_imported_before_it(tmp_path):
    """The launcher's start-up, as `python -X importtime` shows it: neither os
    nor the SMTP core, the policy or the configuration parser before the 220."""
    home = smtpd_servers.make_home(tmp_path)
    launcher = our_program("smtpd-child")
    result = subprocess.run([str(VENV_BIN / "python"), "-X", "importtime", "-I", "-S", launcher],
                            input=b"QUIT\r\n", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={"QMAILHOME": str(home)}, timeout=30)
    before, greeting, after = result.stdout.partition(GREETING)
    assert greeting, result.stdout

    def modules(text):
        return {line.rsplit(b"|", 1)[-1].strip().decode() for line in text.splitlines()
                if line.startswith(b"import time:") and b"|" in line}
    late = {"os", "smtpd_child.session.driver", "smtpd_child.session.config", "smtpd_child.smtp.protocol",
            "smtpd_child.smtp.policy", "smtpd_child.auth.options"}
    assert "smtpd_child.startup" in modules(before)
    assert not modules(before) & late, modules(before) & late
    assert late - {"os"} <= modules(after)          # the check reads the right lines


@pytest.mark.timeout(60)
def test_out_of_memory_parsing_after_the_greeting_fails_closed(tmp_path):
    """rcpthosts is read whole before the greeting, parsed after it: a file
    that fits in memory but whose entries do not is answered `421 out of
    memory` (qmail's die_nomem) at the first command, and nothing is queued."""
    home = smtpd_servers.make_home(tmp_path, rcpthosts="example.com\n")
    with open(home / "control" / "rcpthosts", "r+b") as f:
        # 200 MB of NULs (sparse: no disk used) in one line: each NUL separates
        # an entry, 8 bytes of list each -- 1.6 GB to parse.
        f.truncate(200 << 20)

    def small_address_space():
        resource.setrlimit(resource.RLIMIT_AS, (600 << 20, 600 << 20))
    out, err, code = run_child(home, SESSION, preexec_fn=small_address_space)
    assert out == GREETING + replies.OUT_OF_MEMORY and code == 1, (out, err)
    assert err == NOMEM_LINE
    assert spooled(home) == []


def test_a_broken_installation_after_the_greeting_fails_closed(tmp_path):
    """A half-done upgrade (the SMTP core missing): greeting, then 421 at the
    first command with the reason logged -- never a traceback, never mail."""
    package = tmp_path / "lib" / "smtpd_child"
    shutil.copytree(ROOT / "smtpd_child", package,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (package / "smtp" / "protocol.py").unlink()
    home = smtpd_servers.make_home(tmp_path)
    start = (f"import sys; sys.path[:0] = [{str(tmp_path / 'lib')!r}, {str(ROOT)!r}]\n"
             "from tcpserver_py.launch import run\nrun(b'smtpd-child', 'smtpd_child.main')\n")
    argv = [sys.executable, "-I", "-S", "-c", start]
    out, err, code = run_child(home, SESSION, argv=argv)
    assert out == GREETING + replies.INTERNAL_ERROR and code == 1, (out, err)
    assert err.startswith(b"smtpd-child: unable to start the session: ModuleNotFoundError: ")
    assert b"smtpd_child.smtp.protocol" in err and b"Traceback" not in err
    assert spooled(home) == []


@pytest.mark.timeout(60)
def test_preloaded_child_reads_the_connection_environment_before_its_greeting(tmp_path):
    """Under --preload the greeting's QMAILHOME is the one the rules give this
    connection, not tcpserver's own."""
    own = smtpd_servers.make_home(tmp_path / "own", me="tcpserver.example\n")
    ruled = smtpd_servers.make_home(tmp_path / "ruled", me="ruled.example\n")
    rules = f':allow,QMAILHOME="{ruled}"\n'
    with smtpd_servers.c_tcpserver(tmp_path, own, rules, preload=True) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(b"QUIT\r\n")
            data = b""
            while not data.endswith(b"221 ruled.example\r\n"):
                chunk = sock.recv(4096)
                assert chunk, data
                data += chunk
    assert data == b"220 ruled.example ESMTP\r\n221 ruled.example\r\n"
