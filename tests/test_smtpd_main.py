"""smtpd-child as a process over plain pipes: configuration, timeouts, EOF, queue."""

import os
import signal
import subprocess
import time

import cdbx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import smtpd_servers
from conftest import our_program
from smtpd_child.smtp import replies
from smtpd_servers import smtpd_mode  # noqa: F401 (fixture: exec and preload)

def make_home(tmp_path, **controls):
    """These tests host example.com and every subdomain of example.net."""
    return smtpd_servers.make_home(
        tmp_path, **{"rcpthosts": "example.com\n.example.net\n", **controls})


def run_child(home, client: bytes, timeout=20, preexec_fn=None, mode="exec", **env):
    """(output, stderr, exit code) of one session: over pipes, or (mode
    "preload") forked by our tcpserver --preload."""
    environment = {"PATH": "/usr/bin:/bin", "QMAILHOME": str(home), "TCPREMOTEIP": "127.0.0.1",
                   "TCPLOCALIP": "127.0.0.1", **env}
    return smtpd_servers.run_smtpd(mode, client, environment, timeout, preexec_fn)


def run_child_in(mode, home, client: bytes, **kwargs):
    return run_child(home, client, mode=mode, **kwargs)


def lines(*items):
    return b"".join(item + b"\r\n" for item in items)


def spooled(home):
    new = home / "spool" / "new"
    return sorted(new.iterdir()) if new.exists() else []


SESSION = lines(b"EHLO client.test", b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>",
                b"RCPT TO:<u@other.test>", b"DATA", b"Subject: t", b"", b"hello", b".", b"QUIT")


def test_session_into_the_spool_and_spool_tool(tmp_path, smtpd_mode):
    home = make_home(tmp_path)
    out, err, code = run_child_in(smtpd_mode, home, SESSION)
    assert code == 0, err
    assert out.startswith(b"220 mail.example.com ESMTP\r\n250-mail.example.com\r\n")
    assert replies.NOGATEWAY + replies.GO_AHEAD + b"250 ok " in out
    assert out.endswith(b"221 mail.example.com\r\n")
    [message] = spooled(home)
    listed = subprocess.run([our_program("smtpd-spool"), str(home / "spool"), "list"],
                            capture_output=True, check=True).stdout.decode()
    assert listed.split() == [message.name, str(len(spoolfile_message(message))),
                              "<a@b.test>", "<u@example.com>"]
    shown = subprocess.run([our_program("smtpd-spool"), str(home / "spool"), "show",
                            message.name], capture_output=True, check=True).stdout
    assert shown.startswith(b"From: <a@b.test>\nTo: <u@example.com>\n\nReceived: from unknown "
                            b"(HELO client.test) (127.0.0.1)\n  by 127.0.0.1 with SMTP; ")
    assert shown.endswith(b"-0000\nSubject: t\n\nhello\n")
    bad = subprocess.run([our_program("smtpd-spool"), str(home / "spool"), "show", "../x"],
                         capture_output=True)
    assert bad.returncode == 100 and bad.stderr.startswith(b"smtpd-spool: bad message id")


def spoolfile_message(path):
    from smtpd_child.delivery import spoolfile
    return spoolfile.parse(path.read_bytes())[2]


def test_control_files_follow_qmail_rules(tmp_path, smtpd_mode):
    home = make_home(tmp_path, smtpgreeting="greet.example NO UCE \t\nsecond line\n",
                     rcpthosts="# comment\n\nexample.com  \n", badmailfrom="@evil.test\n",
                     databytes="10 bytes\n")
    out, _, code = run_child_in(smtpd_mode, home, lines(b"HELO x", b"MAIL FROM:<a@b.test>",
                                         b"RCPT TO:<u@EXAMPLE.com>", b"MAIL FROM:<x@evil.test>",
                                         b"RCPT TO:<u@example.com>", b"EHLO", b"QUIT"))
    assert out.split(b"\r\n")[:2] == [b"220 greet.example NO UCE ESMTP", b"250 greet.example NO UCE"]
    assert replies.OK * 3 + replies.BADMAILFROM in out
    assert b"250 SIZE 10\r\n" in out and code == 0


def test_databytes_environment_overrides_control(tmp_path, smtpd_mode):
    home = make_home(tmp_path, databytes="1000\n")
    out, _, _ = run_child_in(smtpd_mode, home, lines(b"EHLO x", b"QUIT"), DATABYTES="77")
    assert b"250 SIZE 77\r\n" in out


@pytest.mark.parametrize("breakage", ["unreadable-rcpthosts", "no-me", "unreadable-cdb",
                                      "no-home"])
def test_unreadable_controls_give_421(tmp_path, breakage, smtpd_mode):
    home = make_home(tmp_path)
    if breakage == "unreadable-rcpthosts":
        (home / "control" / "rcpthosts").unlink()
        (home / "control" / "rcpthosts").mkdir()       # reading it fails with EISDIR
    elif breakage == "no-me":
        (home / "control" / "me").unlink()
    elif breakage == "unreadable-cdb":
        # a symlink to itself: open() fails with ELOOP, not ENOENT
        os.symlink("morercpthosts.cdb", home / "control" / "morercpthosts.cdb")
    else:
        home = tmp_path / "absent"
    out, err, code = run_child_in(smtpd_mode, home, lines(b"QUIT"))
    assert out == replies.CONTROLS and code == 1
    assert err.startswith(b"smtpd-child: ") and b"Traceback" not in err


def test_missing_rcpthosts_refuses_relaying_and_says_so(tmp_path, smtpd_mode):
    home = make_home(tmp_path, rcpthosts=None)
    out, err, _ = run_child_in(smtpd_mode, home, lines(b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>",
                                        b"RCPT TO:<postmaster>", b"QUIT"))
    assert replies.OK + replies.NOGATEWAY + replies.OK in out
    assert b"rcpthosts is missing" in err


def test_morercpthosts_cdb(tmp_path, smtpd_mode):
    home = make_home(tmp_path)
    maker = cdbx.CDB.make(str(home / "control" / "morercpthosts.cdb"))
    maker.add(b"other.test", b"")
    maker.add(b".sub.test", b"")
    maker.commit().close()
    out, _, _ = run_child_in(smtpd_mode, home, lines(b"MAIL FROM:<>", b"RCPT TO:<u@OTHER.TEST>",
                                      b"RCPT TO:<u@x.sub.test>", b"RCPT TO:<u@sub.test>", b"QUIT"))
    assert replies.OK * 3 + replies.NOGATEWAY in out


def test_read_timeout(tmp_path):
    home = make_home(tmp_path, timeoutsmtpd="1\n")
    proc = subprocess.Popen([our_program("smtpd-child")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env={"QMAILHOME": str(home)})
    try:
        started = time.monotonic()
        proc.stdin.write(b"NOOP\r\n")
        proc.stdin.flush()
        out = proc.stdout.read()
        elapsed = time.monotonic() - started
        assert proc.wait(timeout=10) == 1
    finally:
        proc.kill()
        proc.wait()
    assert out == b"220 mail.example.com ESMTP\r\n250 ok\r\n" + replies.TIMEOUT
    assert 0.9 < elapsed < 8


def test_session_deadline_stops_a_trickling_client(tmp_path):
    home = make_home(tmp_path, timeoutsmtpd="5\n")
    proc = subprocess.Popen([our_program("smtpd-child")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env={"QMAILHOME": str(home),
                                                         "SMTPD_DEADLINE": "2"})
    try:
        for _ in range(12):
            if proc.poll() is not None:
                break
            try:
                proc.stdin.write(b"NOOP\r\n")
                proc.stdin.flush()
            except BrokenPipeError:
                break
            time.sleep(0.4)
        out = proc.stdout.read()
        assert proc.wait(timeout=10) == 1
    finally:
        proc.kill()
        proc.wait()
    # the client never paused for the 5 s read timeout: the deadline ended it
    assert out.endswith(replies.OK + replies.SESSION_DEADLINE)
    assert out.count(replies.OK) >= 2


def test_eof_mid_data_queues_nothing(tmp_path, smtpd_mode):
    home = make_home(tmp_path)
    out, _, code = run_child_in(smtpd_mode, home, lines(b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>",
                                         b"DATA", b"Subject: cut", b"half a message"))
    assert out.endswith(replies.GO_AHEAD) and code == 1
    assert spooled(home) == [] and list((home / "spool" / "tmp").iterdir()) == []


def test_bare_lf_disconnects_and_queues_nothing(tmp_path, smtpd_mode):
    home = make_home(tmp_path)
    out, _, code = run_child_in(smtpd_mode, home, lines(b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>",
                                         b"DATA") + b"x\n.\r\n" + lines(b"QUIT"))
    assert out.endswith(replies.GO_AHEAD + replies.BARE_LF) and code == 1
    assert spooled(home) == [] and list((home / "spool" / "tmp").iterdir()) == []


@pytest.fixture
def fake_queue(tmp_path):
    return smtpd_servers.install_fake_queue(tmp_path)


def test_qmailqueue_program(tmp_path, fake_queue, smtpd_mode):
    script, qout = fake_queue
    home = make_home(tmp_path)
    out, _, code = run_child_in(smtpd_mode, home, SESSION, QMAILQUEUE=str(script), OUT=str(qout))
    assert code == 0 and b"\r\n250 ok " in out
    assert (qout / "envelope").read_bytes() == b"Fa@b.test\0Tu@example.com\0\0"
    assert (qout / "message").read_bytes().endswith(b"Subject: t\n\nhello\n")
    assert spooled(home) == []


def test_qmail_home_bin_qmail_queue_is_used(tmp_path, fake_queue, smtpd_mode):
    script, qout = fake_queue
    home = make_home(tmp_path)
    (home / "bin").mkdir()
    os.symlink(script, home / "bin" / "qmail-queue")
    out, _, code = run_child_in(smtpd_mode, home, SESSION, OUT=str(qout))
    assert code == 0 and (qout / "envelope").read_bytes() == b"Fa@b.test\0Tu@example.com\0\0"


def ignore_sigchld():
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)


def test_sigchld_ignored_by_parent_still_reports_queue_failure(tmp_path, fake_queue):
    script, qout = fake_queue
    home = make_home(tmp_path)
    out, _, _ = run_child(home, SESSION, preexec_fn=ignore_sigchld, QMAILQUEUE=str(script),
                          OUT=str(qout), FAKE_EXIT="71")
    assert b"\r\n451 mail server temporarily rejected message (#4.3.0)\r\n" in out
    out, _, _ = run_child(home, SESSION, preexec_fn=ignore_sigchld, QMAILQUEUE=str(script),
                          OUT=str(qout), FAKE_EXIT="0")
    assert b"\r\n250 ok " in out


def test_relayclient_from_the_environment(tmp_path, smtpd_mode):
    home = make_home(tmp_path)
    out, _, _ = run_child_in(smtpd_mode, home, lines(b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@other.test>",
                                      b"RCPT TO:<x%y@other.test>", b"QUIT"), RELAYCLIENT="")
    assert replies.OK * 3 in out


def test_many_pipelined_messages_in_one_write(tmp_path, smtpd_mode):
    home = make_home(tmp_path)
    one = lines(b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>", b"DATA", b"x", b".")
    out, _, code = run_child_in(smtpd_mode, home, one * 300 + lines(b"QUIT"))
    assert code == 0 and out.count(b"\r\n250 ok ") == 300
    assert len(spooled(home)) == 300


def test_missing_spool_is_a_temporary_failure(tmp_path, smtpd_mode):
    home = make_home(tmp_path)
    (home / "spool").rmdir()
    out, err, code = run_child_in(smtpd_mode, home, SESSION)
    # the message lines then arrive as (unknown) commands, as with qmail
    assert out.endswith(replies.QQT_FAILURE + replies.UNIMPLEMENTED * 4
                        + b"221 mail.example.com\r\n")
    assert replies.GO_AHEAD not in out and code == 0
    assert b"Traceback" not in err


def test_setup_local_is_idempotent_and_ready_to_serve(tmp_path, smtpd_mode):
    import sys
    home = tmp_path / "var" / "qmail"
    setup = [sys.executable, "-m", "smtpd_child.setup_local", str(home)]
    first = subprocess.run(setup, capture_output=True, check=True, text=True).stdout
    assert "created" in first and f"spool: {home / 'spool'}" in first
    (home / "control" / "rcpthosts").write_text("example.org\nmine.test\n")   # local edit kept
    second = subprocess.run(setup, capture_output=True, check=True, text=True).stdout
    assert "created" not in second
    assert (home / "control" / "rcpthosts").read_text() == "example.org\nmine.test\n"
    assert (home / "control" / "me").read_text() == "localhost\n"
    out, _, code = run_child_in(smtpd_mode, home, lines(b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.org>",
                                         b"DATA", b"hi", b".", b"QUIT"))
    assert code == 0 and b"\r\n250 ok " in out and len(spooled(home)) == 1
    usage = subprocess.run([sys.executable, "-m", "smtpd_child.setup_local"], capture_output=True)
    assert usage.returncode == 100 and usage.stderr.startswith(b"usage:")


def test_byte_by_byte_client_gets_the_same_replies(tmp_path):
    home = make_home(tmp_path)
    whole, _, _ = run_child(home, SESSION)
    proc = subprocess.Popen([our_program("smtpd-child")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env={"QMAILHOME": str(home),
                                                         "TCPREMOTEIP": "127.0.0.1",
                                                         "TCPLOCALIP": "127.0.0.1"})
    try:
        for index in range(len(SESSION)):
            proc.stdin.write(SESSION[index:index + 1])
            proc.stdin.flush()
        proc.stdin.close()
        bytewise = proc.stdout.read()
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()

    def strip_queue_id(out):
        return [line.split(b" qp ")[0][:6] if line.startswith(b"250 ok ") else line
                for line in out.split(b"\r\n")]
    assert strip_queue_id(bytewise) == strip_queue_id(whole)
    assert len(spooled(home)) == 2


def test_empty_tcplocalhost_is_kept_as_qmail_does(tmp_path, smtpd_mode):
    from smtpd_child.session import config
    home = make_home(tmp_path)
    settings = config.load({"QMAILHOME": str(home), "TCPLOCALHOST": "", "TCPLOCALIP": "10.1.2.3"})
    assert settings.session.local == b""          # qmail: set-but-empty is not missing
    settings = config.load({"QMAILHOME": str(home), "TCPLOCALIP": "10.1.2.3"})
    assert settings.session.local == b"10.1.2.3"
    assert settings.session.remotehost == b"unknown" and settings.session.remoteinfo is None


def test_zero_address_is_this_host_for_localiphost(tmp_path, smtpd_mode):
    # netqmail 1.06 ipme_init() lists 0.0.0.0 as one of this host's addresses.
    from smtpd_child.session import config
    assert config.local_ipv4_checker("")("0.0.0.0")
    assert config.local_ipv4_checker("")("127.0.0.1")
    assert not config.local_ipv4_checker("")("192.0.2.77")


def test_nul_in_a_list_control_line_separates_entries(tmp_path, smtpd_mode):
    # qmail's constmap splits the list at NUL bytes, after trailing whitespace went.
    from smtpd_child.session import config
    path = tmp_path / "rcpthosts"
    path.write_bytes(b"other.test \0example.com \t\n#x\0y\n\n")
    assert config.control_list(str(path)) == [b"other.test ", b"example.com"]


@pytest.mark.parametrize("huge", ["timeoutsmtpd", "SMTPD_DEADLINE"])
def test_huge_timeouts_still_serve(tmp_path, fake_queue, huge, smtpd_mode):
    # The timeout is also the queue program's limit: it must stay usable by select().
    script, qout = fake_queue
    value = "9" * 30
    home = make_home(tmp_path, **({"timeoutsmtpd": value + "\n"} if huge == "timeoutsmtpd" else {}))
    env = {"SMTPD_DEADLINE": value} if huge == "SMTPD_DEADLINE" else {}
    out, err, code = run_child_in(smtpd_mode, home, SESSION, QMAILQUEUE=str(script), OUT=str(qout), **env)
    assert b"\r\n250 ok " in out and out.endswith(b"221 mail.example.com\r\n"), err
    assert code == 0 and b"internal error" not in err


def test_closed_stdin_is_a_read_error(tmp_path):
    home = make_home(tmp_path)
    out, err, code = run_child(home, b"", preexec_fn=lambda: os.close(0))
    assert out == b"220 mail.example.com ESMTP\r\n" and code == 1
    assert err == b""        # a read error: exit 1, no reply, nothing on stderr


def test_output_deadline_bounds_a_client_that_does_not_read():
    from smtpd_child.main import Finished, Output
    read_end, write_end = os.pipe()
    try:
        os.set_blocking(write_end, False)
        output = Output(write_end, timeout=60)
        output.deadline = time.monotonic() + 0.5
        output.add(b"x" * (4 << 20))                 # more than any pipe holds
        started = time.monotonic()
        with pytest.raises(Finished):
            output.flush()
        assert time.monotonic() - started < 5
    finally:
        os.close(read_end)
        os.close(write_end)


_COMMANDS = [b"HELO x", b"EHLO \x00y", b"MAIL FROM:<a@b.test>", b"MAIL FROM:<a@b> SIZE=99999",
             b"RCPT TO:<u@example.com>", b"RCPT TO:<u@other.test>", b"RCPT <\"x\\", b"DATA",
             b".", b"..x", b"RSET", b"NOOP", b"VRFY", b"Received: x", b"", b"\r", b"x" * 600]


@pytest.mark.timeout(90)
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.one_of(st.binary(max_size=64),
                          st.sampled_from(_COMMANDS).map(lambda c: c + b"\r\n")), max_size=25),
       st.booleans())
def test_whole_program_over_pipes_never_raises(tmp_path_factory, pieces, quit_at_end):
    """Random bytes and commands through the real process: replies only, no traceback."""
    home = make_home(tmp_path_factory.mktemp("fuzz"), databytes="200\n")
    client = b"".join(pieces) + (b"QUIT\r\n" if quit_at_end else b"")
    out, err, code = run_child(home, client, timeout=30)
    assert b"Traceback" not in err and b"internal error" not in err, err
    assert code in (0, 1)
    assert out.endswith(b"\r\n")
    for line in out[:-2].split(b"\r\n"):
        assert line[:3].isdigit() and line[3:4] in (b" ", b"-"), out
    tmp = home / "spool" / "tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == []     # nothing half-written left
    for path in spooled(home):
        assert spoolfile_message(path)


def test_empty_qmailqueue_is_a_program_that_cannot_run(tmp_path, smtpd_mode):
    # qmail execs whatever QMAILQUEUE holds when it is set, even empty: 451, never the spool.
    home = make_home(tmp_path)
    out, err, code = run_child_in(smtpd_mode, home, SESSION, QMAILQUEUE="")
    assert replies.GO_AHEAD + b"451 unable to exec qq (#4.3.0)\r\n" in out
    assert spooled(home) == [] and code == 0 and b"Traceback" not in err


def test_local_addresses_include_every_interface_address():
    # qmail's ipme_init(): every IPv4 address of this host, as SIOCGIFADDR shows per interface.
    import fcntl
    import socket
    import struct
    from smtpd_child.session import config
    found = config._interface_addresses()
    assert "127.0.0.1" in found
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            try:
                answer = fcntl.ioctl(probe.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue                      # no IPv4 address on this interface
            assert socket.inet_ntoa(answer[20:24]) in found


def test_enormous_numbers_in_controls_and_environment(tmp_path, smtpd_mode):
    # Python refuses int() of more than 4300 digits; a control file must never cause that.
    many = "9" * 5000
    home = make_home(tmp_path, databytes=many + "\n", timeoutsmtpd=many + "\n")
    for env in ({}, {"DATABYTES": many}, {"SMTPD_DEADLINE": many}):
        out, err, code = run_child_in(smtpd_mode, home, lines(b"EHLO x", b"QUIT"), **env)
        assert b"250 SIZE 18446744073709551615\r\n" in out, err
        assert code == 0 and err == b""


def test_out_of_memory_reading_controls_is_qmails_421(tmp_path):
    import resource
    home = make_home(tmp_path)
    with open(home / "control" / "rcpthosts", "wb") as f:
        f.truncate(2 << 30)                          # sparse: 2 GB of NULs, no disk used

    def small_address_space():
        resource.setrlimit(resource.RLIMIT_AS, (600 << 20, 600 << 20))
    out, err, code = run_child(home, lines(b"QUIT"), preexec_fn=small_address_space)
    assert out == replies.OUT_OF_MEMORY and code == 1 and b"Traceback" not in err


def test_empty_control_files_are_present_but_empty(tmp_path, smtpd_mode):
    # qmail: an empty smtpgreeting is an empty greeting (not `me`); an empty number file
    # keeps the default; CR is not whitespace to strip.
    from smtpd_child.session import config
    home = make_home(tmp_path, smtpgreeting="", timeoutsmtpd="", databytes="\n",
                     badmailfrom="", localiphost=" \t\n")
    out, _, code = run_child_in(smtpd_mode, home, lines(b"EHLO x", b"QUIT"))
    assert out.startswith(b"220  ESMTP\r\n250-\r\n") and b"250 SIZE 0\r\n221 \r\n" in out
    settings = config.load({"QMAILHOME": str(home)})
    assert settings.timeout == 1200 and settings.session.local_ip_host == b""
    (home / "control" / "rcpthosts").write_bytes(b"example.com\r\n")
    settings = config.load({"QMAILHOME": str(home)})
    assert settings.session.policy.rcpthosts == frozenset([b"example.com\r"])
