"""smtpd-child under hostile clients and broken installations: the spool's
modes, the error limit, DATA over databytes, messages that name the cause,
--help/--version, and fd 0/1 left as they were found."""

import fcntl
import os
import socket
import stat
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

import smtpd_servers
from conftest import our_program
from test_smtpd_protocol import FakeQueue, drive, make_config, qmail_blast
from smtpd_child.delivery.spool import Spool
from smtpd_child.smtp import framing, replies

NOW = 1795543254


def make_home(tmp_path, **controls):
    return smtpd_servers.make_home(tmp_path, **{"rcpthosts": "example.com\n", **controls})


def lines(*items):
    return b"".join(item + b"\r\n" for item in items)


def without_privileges():
    """A command prefix that leaves root without its capabilities, so that file
    modes apply to it as to the service user it stands for (nothing for others)."""
    if os.getuid() != 0:
        return []
    return ["setpriv", "--bounding-set", "-all", "--inh-caps", "-all", "--"]


def run_child(home, client: bytes, prefix=(), umask=None, **env):
    environment = {"PATH": "/usr/bin:/bin", "QMAILHOME": str(home), "TCPREMOTEIP": "127.0.0.1",
                   "TCPLOCALIP": "127.0.0.1", **env}
    preexec = (lambda: os.umask(umask)) if umask is not None else None
    result = subprocess.run([*prefix, our_program("smtpd-child")], input=client,
                            capture_output=True, env=environment, timeout=30,
                            preexec_fn=preexec)
    return result.stdout, result.stderr, result.returncode


MESSAGE = lines(b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>", b"DATA",
                b"Subject: t", b"", b"hello", b".")
SESSION = MESSAGE + lines(b"QUIT")


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def spooled(home):
    new = home / "spool" / "new"
    return sorted(new.iterdir()) if new.exists() else []


# -- 1. the spool's modes ----------------------------------------------------

@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077, 0o277])
def test_spool_directories_are_created_0700_whatever_the_umask(tmp_path, umask):
    (tmp_path / "spool").mkdir()
    spool = Spool(str(tmp_path / "spool"), lambda: NOW)
    previous = os.umask(umask)
    try:
        assert spool.open(b"a@b.test", [b"u@example.org"])
        spool.write(b"x\n")
        assert spool.commit().startswith(b"250 ")
    finally:
        os.umask(previous)
    assert mode(tmp_path / "spool" / "tmp") == 0o700
    assert mode(tmp_path / "spool" / "new") == 0o700


def test_spool_made_by_a_session_under_umask_0_is_private(tmp_path):
    home = make_home(tmp_path)
    out, err, code = run_child(home, SESSION, umask=0)
    assert b"\r\n250 ok " in out and code == 0, err
    assert mode(home / "spool" / "tmp") == mode(home / "spool" / "new") == 0o700


def test_setup_local_makes_a_private_spool_under_umask_0(tmp_path):
    home = tmp_path / "home"
    subprocess.run([sys.executable, "-m", "smtpd_child.setup_local", str(home)], check=True,
                   capture_output=True, preexec_fn=lambda: os.umask(0))
    for sub in ("spool", "spool/tmp", "spool/new"):
        assert mode(home / sub) == 0o700, sub


@pytest.mark.parametrize("where", ["spool", "spool/tmp", "spool/new"])
@pytest.mark.parametrize("unsafe,reason", [(0o777, b"writable by every user"),
                                           (0o1777, b"writable by every user"),
                                           (0o770, b"writable by its group")])
def test_a_spool_others_can_write_is_refused(tmp_path, where, unsafe, reason):
    home = make_home(tmp_path)
    for sub in ("spool/tmp", "spool/new"):
        (home / sub).mkdir(mode=0o700)
    os.chmod(home / where, unsafe)
    out, err, code = run_child(home, SESSION)
    assert replies.QQT_FAILURE in out and replies.GO_AHEAD not in out
    assert spooled(home) == []
    assert err.startswith(b"smtpd-child: refusing to write into " + bytes(home / where) + b": ")
    assert reason in err and b"Traceback" not in err


def test_a_group_shared_spool_marked_setgid_is_accepted(tmp_path):
    home = make_home(tmp_path)
    for sub in ("spool", "spool/tmp", "spool/new"):
        (home / sub).mkdir(exist_ok=True)
        os.chmod(home / sub, 0o2770)
    out, err, _ = run_child(home, SESSION)
    assert b"\r\n250 ok " in out and err == b""
    assert len(spooled(home)) == 1


# -- 3. messages that name the cause ---------------------------------------

def test_missing_spool_names_the_directory_and_the_reason(tmp_path):
    home = make_home(tmp_path)
    (home / "spool").rmdir()
    out, err, _ = run_child(home, SESSION)
    assert replies.QQT_FAILURE in out
    assert err.startswith(b"smtpd-child: unable to use the spool " + bytes(home / "spool")
                          + b": No such file or directory")


def test_spool_the_service_user_cannot_write(tmp_path):
    home = make_home(tmp_path)
    os.chmod(home / "spool", 0o500)          # tmp/ and new/ cannot be made
    out, err, _ = run_child(home, SESSION, prefix=without_privileges())
    assert replies.QQT_FAILURE in out and replies.GO_AHEAD not in out
    assert (b"smtpd-child: unable to create " + bytes(home / "spool" / "tmp")
            + b": Permission denied\n") in err


def test_new_that_the_service_user_cannot_write_is_found_before_the_message(tmp_path):
    # e.g. new/ made by root with `mkdir`: the rename at the end would fail.
    home = make_home(tmp_path)
    (home / "spool" / "tmp").mkdir(mode=0o700)
    (home / "spool" / "new").mkdir(mode=0o700)
    os.chmod(home / "spool" / "new", 0o500)
    out, err, _ = run_child(home, SESSION, prefix=without_privileges())
    assert replies.QQT_FAILURE in out and replies.GO_AHEAD not in out
    assert (b"smtpd-child: unable to write into " + bytes(home / "spool" / "new")
            + b": Permission denied\n") in err
    assert list((home / "spool" / "tmp").iterdir()) == []


def test_a_write_failure_is_logged_with_the_path_and_reason(tmp_path, monkeypatch):
    (tmp_path / "spool").mkdir()
    logged = []
    spool = Spool(str(tmp_path / "spool"), lambda: NOW, logged.append)
    assert spool.open(b"a@b.test", [b"u@example.org"])
    path = os.path.join(spool.directory, "tmp", spool.name)

    def full(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    assert spool.commit() == b"451 qq write error or disk full (#4.3.0)\r\n"
    assert logged == [f"unable to fsync {path}: No space left on device"]


@pytest.mark.parametrize("case", ["missing", "not-executable", "relative", "empty"])
def test_queue_program_that_cannot_run_is_named(tmp_path, case):
    home = make_home(tmp_path)
    program = tmp_path / "queue"
    if case == "not-executable":
        program.write_text("#!/bin/sh\nexit 0\n")
        program.chmod(0o644)
    value = {"relative": "bin/qmail-queue", "empty": ""}.get(case, str(program))
    out, err, code = run_child(home, SESSION, QMAILQUEUE=value)
    assert replies.GO_AHEAD + b"451 unable to exec qq (#4.3.0)\r\n" in out and code == 0
    expected = {
        "missing": f"unable to run the queue program {program}: No such file or directory",
        "not-executable": f"unable to run the queue program {program}: Permission denied",
        "relative": f"unable to run the queue program {home}/bin/qmail-queue (QMAILQUEUE="
                    f"bin/qmail-queue is relative to the qmail home): No such file or directory",
        "empty": "unable to run the queue program: QMAILQUEUE is set but empty",
    }[case]
    assert f"smtpd-child: {expected}\n".encode() in err


@pytest.mark.parametrize("set_home", [True, False])
def test_no_me_and_no_greeting_names_the_directory_and_qmailhome(tmp_path, set_home):
    if not set_home and (os.path.exists("/var/qmail/control/me")
                         or os.path.exists("/var/qmail/control/smtpgreeting")):
        pytest.skip("this host has a qmail home in /var/qmail: QMAILHOME unset would use it")
    home = make_home(tmp_path)
    (home / "control" / "me").unlink()
    env = {"QMAILHOME": str(home)} if set_home else {}
    result = subprocess.run([our_program("smtpd-child")], input=b"QUIT\r\n", capture_output=True,
                            env={"PATH": "/usr/bin:/bin", **env}, timeout=30)
    assert result.stdout == replies.CONTROLS and result.returncode == 1
    control = f"{home}/control" if set_home else "/var/qmail/control"
    err = result.stderr.decode()
    assert err.startswith(f"smtpd-child: {control}/me and {control}/smtpgreeting are both "
                          f"missing (")
    assert ("QMAILHOME=" + str(home) if set_home else "QMAILHOME is not set") in err
    assert "mistyped or unset QMAILHOME" in err


def test_missing_rcpthosts_is_named_absolutely_and_not_for_relay_clients(tmp_path):
    home = make_home(tmp_path, rcpthosts=None)
    _, err, _ = run_child(home, lines(b"QUIT"))
    assert err == (f"smtpd-child: {home}/control/rcpthosts is missing: "
                   f"refusing to relay for every domain\n").encode()
    out, err, _ = run_child(home, lines(b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@other.test>",
                                        b"QUIT"), RELAYCLIENT="")
    assert replies.OK * 2 in out and err == b""


# -- 2. the error limit and DATA over databytes -------------------------------

def test_a_client_sending_only_errors_gets_421_after_20():
    sent, _, code = drive(b"\r\n" * 1000 + lines(b"QUIT"))
    assert sent.count(replies.UNIMPLEMENTED) == 20
    assert sent.endswith(replies.UNIMPLEMENTED + replies.TOO_MANY_ERRORS) and code == 1


def test_every_kind_of_error_counts_and_a_delivered_message_resets_the_count():
    # RSET (250), RCPT before MAIL (503), a control byte (555), FOO (502), too long (500)
    errors = lines(b"RSET", b"RCPT TO:<u@example.com>", b"MAIL FROM:<\x01@x>", b"FOO") \
        + b"x" * 600 + b"\r\n"
    message = lines(b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@other.test>",
                    b"RCPT TO:<u@example.com>", b"DATA", b"hi", b".")
    # 16 + 2 (503) + 1 (the refused recipient) = 19 errors, a delivered message,
    # then 16 + 2 (502) = 18: never 20 without delivering mail.
    client = errors * 4 + lines(b"NOOP") * 3 + lines(b"RCPT TO:<u@example.com>") * 2 \
        + message + errors * 4 + lines(b"VRFY", b"FOO", b"FOO", b"QUIT")
    sent, queue, code = drive(client)
    assert replies.TOO_MANY_ERRORS not in sent and code == 0 and len(queue.committed) == 1
    assert sent.count(replies.UNIMPLEMENTED) == 10
    sent, _, code = drive(client.replace(b"QUIT", b"FOO\r\nFOO\r\nQUIT"))
    assert sent.endswith(replies.UNIMPLEMENTED + replies.TOO_MANY_ERRORS) and code == 1


def test_error_limit_from_the_environment(tmp_path):
    home = make_home(tmp_path)
    for value, limit in (("3", 3), ("0", 20), ("", 20), ("x", 20), ("50", 50)):
        out, err, code = run_child(home, b"FOO\r\n" * 60 + lines(b"QUIT"),
                                   SMTPD_ERROR_LIMIT=value)
        assert out.count(replies.UNIMPLEMENTED) == limit, value
        assert out.endswith(replies.TOO_MANY_ERRORS) and code == 1 and err == b""


def test_data_over_databytes_is_no_longer_decoded(monkeypatch):
    decoded = []
    real_feed = framing.DataDecoder.feed

    def feed(self, data):
        decoded.append(len(data))
        return real_feed(self, data)
    monkeypatch.setattr(framing.DataDecoder, "feed", feed)
    chunk = b"a line of the message\r\n" * 3000
    client = [lines(b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>", b"DATA")] \
        + [chunk] * 50 + [lines(b".", b"NOOP", b"QUIT")]
    from smtpd_child.smtp.protocol import Session
    session = Session(make_config(databytes=1000))
    sent = b""
    for piece in client:
        for action in session.receive(piece):
            if action[0] == "send":
                sent += action[1]
            elif action[0] == "open":
                for follow in session.queue_opened(True):
                    sent += follow[1] if follow[0] == "send" else b""
    assert sent.endswith(replies.DATABYTES + replies.OK + b"221 mail.example.com\r\n")
    assert sum(decoded) <= len(chunk)            # only up to the chunk that went over


def test_databytes_and_hops_replies_are_unchanged_by_skipping():
    hops = b"Received: x\r\n" * 120 + b"\r\n" + b"y" * 5000 + b"\r\n"
    sent, queue, _ = drive(lines(b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>", b"DATA")
                           + hops + lines(b".", b"QUIT"), make_config(databytes=100))
    assert replies.TOO_MANY_HOPS in sent and queue.committed == []    # qmail: hops first
    sent, queue, code = drive(lines(b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>",
                                    b"DATA", b"x" * 200, b"y\nz", b".", b"QUIT"),
                              make_config(databytes=100))
    assert sent.endswith(replies.GO_AHEAD + replies.BARE_LF) and code == 1   # bare LF still fatal


pieces = st.sampled_from([b"\r", b"\n", b".", b"a", b"\r\n", b".\r\n", b"..", b"received",
                          b"DELIVERED: x", b"Received", b"\r\n\r\n", b".\r", b"\rx", b"x" * 20])


@settings(max_examples=400, deadline=None)
@given(st.lists(pieces, max_size=40), st.lists(st.integers(min_value=1, max_value=30),
                                                  min_size=1, max_size=20),
       st.integers(min_value=0, max_value=10))
def test_skip_finds_what_qmail_finds(parts, cuts, decoded_chunks):
    """After any number of feed() calls, skip() ends, fails and counts hops as qmail."""
    data = b"".join(parts) + b"\r\n.\r\nNEXT"
    _, expected_status, expected_hops, expected_rest = qmail_blast(data)
    saved = framing.DATA_PIECE
    framing.DATA_PIECE = 12          # feed()'s long-line path before skip() takes over
    try:
        decoder = framing.DataDecoder()
        status, rest, position = framing.MORE, b"", 0
        for index, cut in enumerate(cuts * (len(data) // sum(cuts) + 1)):
            chunk = data[position:position + cut]
            position += cut
            method = decoder.feed if index < decoded_chunks else decoder.skip
            decoded, status, rest = method(chunk)
            if method == decoder.skip:
                assert decoded == b""
            if status != framing.MORE or position >= len(data):
                break
    finally:
        framing.DATA_PIECE = saved
    assert status == expected_status
    if status == framing.END:
        assert (decoder.hops, rest + data[position:]) == (expected_hops, expected_rest)


# -- 4. --help and --version ---------------------------------------------------

@pytest.mark.parametrize("program", ["smtpd-child", "smtpd-spool"])
def test_help_and_version(program):
    from tcpserver_py import VERSION_LINE
    version = subprocess.run([our_program(program), "--version"], capture_output=True,
                             stdin=subprocess.DEVNULL, timeout=30)
    assert (version.returncode, version.stdout, version.stderr) == (0, VERSION_LINE.encode(), b"")
    shown = subprocess.run([our_program(program), "--help"], capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=30)
    assert shown.returncode == 0 and shown.stderr == b""
    assert shown.stdout.startswith(f"usage: {program}".encode())


def test_help_is_only_an_info_request_alone(tmp_path):
    # With more arguments --help is not an option: the session runs as usual
    # (such arguments are programs to run, for SMTP AUTH).
    home = make_home(tmp_path)
    result = subprocess.run([our_program("smtpd-child"), "--help", "x"], input=lines(b"QUIT"),
                            capture_output=True, env={"QMAILHOME": str(home)}, timeout=30)
    assert result.stdout.startswith(b"220 mail.example.com ESMTP\r\n")


# -- issue 12: fd 0/1 are shared with whoever started us ----------------------

def nonblocking(fd):
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK)


@pytest.mark.timeout(60)
def test_the_shared_socket_never_becomes_non_blocking(tmp_path):
    home = make_home(tmp_path)
    ours, client = socket.socketpair()
    with ours, client:
        assert not nonblocking(ours.fileno())
        child = subprocess.Popen([our_program("smtpd-child")], stdin=ours.fileno(),
                                 stdout=ours.fileno(), env={"QMAILHOME": str(home)})
        try:
            client.settimeout(20)
            received = b""
            while not received.endswith(b"\r\n"):
                received += client.recv(4096)
            assert received.startswith(b"220 ")
            # mid-session, the wrapper's view of the same socket: still blocking
            assert not nonblocking(ours.fileno())
            client.sendall(b"NOOP\r\n" * 2000)           # more replies than one write
            expected = len(replies.OK) * 2000
            got = 0
            while got < expected:
                got += len(client.recv(65536))
            assert not nonblocking(ours.fileno())
            client.sendall(lines(b"QUIT"))
            assert child.wait(timeout=20) == 0
        finally:
            child.kill()
            child.wait()
        assert not nonblocking(ours.fileno())
        # and the wrapper can still read the same socket, blocking, without EAGAIN
        client.sendall(b"after\r\n")
        assert os.read(ours.fileno(), 100) == b"after\r\n"


def test_replies_still_flow_when_fd_1_was_left_non_blocking_by_others(tmp_path):
    home = make_home(tmp_path)
    ours, client = socket.socketpair()
    with ours, client:
        ours.setblocking(False)
        child = subprocess.Popen([our_program("smtpd-child")], stdin=ours.fileno(),
                                 stdout=ours.fileno(), env={"QMAILHOME": str(home)})
        try:
            client.sendall(b"NOOP\r\n" * 3000 + lines(b"QUIT"))
            client.settimeout(20)
            received = b""
            while not received.endswith(b"221 mail.example.com\r\n"):
                received += client.recv(65536)
            assert child.wait(timeout=20) == 0
        finally:
            child.kill()
            child.wait()
        assert received.count(replies.OK) == 3000
