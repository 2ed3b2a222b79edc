"""The README's first command: `make run` serves SMTP with the example rules.

Runs the real Makefile target (with VAR pointing into a temporary directory
and PORT=0) and talks SMTP to it: loopback may relay by rules/smtp.rules,
and every accepted message lands in the built-in spool.
"""

import os
import signal
import smtplib
import subprocess

import pytest

from conftest import ROOT, our_program


@pytest.mark.timeout(60)
def test_make_run_serves_smtp_into_the_spool(tmp_path):
    var = tmp_path / "var"
    server = subprocess.Popen(
        ["make", "-s", "--no-print-directory", "run", f"VAR={var}", "PORT=0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        port = None
        for line in server.stdout:
            if line.strip().isdigit():
                port = int(line)
                break
        assert port, "make run never printed the port"
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
            code, banner = client.ehlo("client.test")
            assert code == 250
            # A hosted domain (control/rcpthosts) and, because loopback has
            # RELAYCLIENT in rules/smtp.rules, a foreign domain too.
            refused = client.sendmail("s@client.test", ["a@example.org", "b@elsewhere.test"],
                                      b"Subject: hi\r\n\r\nhello\r\n")
            assert refused == {}
        listing = subprocess.run(
            [our_program("smtpd-spool"), str(var / "qmail" / "spool"), "list"],
            capture_output=True, timeout=20)
        assert listing.returncode == 0, listing.stderr
        text = listing.stdout.decode()
        assert "a@example.org" in text and "b@elsewhere.test" in text
        assert (var / "rules" / "smtp.cdb").exists()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)
