"""The README's first command: `make run` serves SMTP with the example rules.

Runs the real Makefile target (with VAR pointing into a temporary directory
and PORT=0) and talks SMTP to it: loopback may relay by rules/smtp.rules,
and every accepted message lands in the built-in spool.
"""

import os
import re
import signal
import smtplib
import ssl
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
        port = submission = user = None
        for line in server.stdout:
            text = line.decode()
            if m := re.match(r"test user for AUTH \(after STARTTLS\): (\S+) password (\S+)$", text):
                user = m.groups()
            elif m := re.match(r"submission port (\d+)$", text):
                submission = int(m.group(1))
            elif text.strip().isdigit():
                port = int(text)
            if port and submission:
                break
        assert port, "make run never printed the port"
        assert submission and user, "make run never printed the submission port and test user"
        _submission_needs_the_printed_user(submission, user)
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
        assert "far@elsewhere.test" in text       # relayed for the test user
        assert (var / "rules" / "smtp.cdb").exists()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)


def _submission_needs_the_printed_user(port, user):
    """The submission listener refuses MAIL before AUTH, offers AUTH only
    after STARTTLS, and relays for the test user make run printed."""
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE      # setup_local's self-signed certificate
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.ehlo("client.test")
        assert not client.has_extn("auth")
        code, _ = client.mail("s@client.test")
        assert code == 530
        client.rset()
        client.starttls(context=insecure)
        client.ehlo("client.test")
        assert "PLAIN" in client.esmtp_features["auth"].upper()
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(user[0], user[1] + "x")
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.starttls(context=insecure)
        client.login(*user)
        assert client.sendmail("s@client.test", ["far@elsewhere.test"],
                               b"Subject: sub\r\n\r\nvia submission\r\n") == {}
