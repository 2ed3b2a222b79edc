"""The built-in spool (durable, atomic) and the qmail-queue program interface."""

import os
import signal
import stat
import time

import pytest

from smtpd_child.smtp import replies
from smtpd_child.delivery import spoolfile
from smtpd_child.delivery.queue import QueueProgram, Spool
from smtpd_servers import install_fake_queue

NOW = 1795543254
@pytest.fixture
def spool(tmp_path):
    directory = tmp_path / "spool"
    directory.mkdir()
    return Spool(str(directory), lambda: NOW)


def listing(spool, sub):
    path = os.path.join(spool.directory, sub)
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def test_spool_commit_keeps_envelope_with_message(spool):
    assert spool.open(b"a@b.test", [b"u@example.org", b""])
    spool.write(b"Received: x\n")
    spool.write(b"body\n")
    assert listing(spool, "new") == []            # nothing visible before commit
    reply = spool.commit()
    assert reply == replies.accepted(NOW, os.getpid())
    names = listing(spool, "new")
    assert len(names) == 1 and listing(spool, "tmp") == []
    data = open(os.path.join(spool.directory, "new", names[0]), "rb").read()
    assert data == spoolfile.MAGIC + b"Fa@b.test\0Tu@example.org\0T\0\0Received: x\nbody\n"
    assert spoolfile.parse(data) == (b"a@b.test", [b"u@example.org", b""],
                                     b"Received: x\nbody\n")
    assert stat.S_IMODE(os.stat(os.path.join(spool.directory, "new", names[0])).st_mode) == 0o600


def test_spool_abort_leaves_nothing(spool):
    assert spool.open(b"", [b"u@example.org"])
    spool.write(b"partial")
    spool.abort()
    assert listing(spool, "new") == [] and listing(spool, "tmp") == []


def test_spool_fsyncs_file_then_renames_then_fsyncs_directory(spool, monkeypatch):
    events = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def rename(src, dst):
        events.append(("rename", str(dst)))
        return real_rename(src, dst)

    spool.open(b"a@b.test", [b"u@example.org"])   # (creating new/ has its own test)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    spool.write(b"x\n")
    assert spool.commit().startswith(b"250 ")
    new_dir = os.path.join(spool.directory, "new")
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "rename", "fsync"]
    assert "/tmp/" in events[0][1] and events[1][1].startswith(new_dir)
    assert events[2][1] == new_dir


def test_spool_failure_is_temporary_and_leaves_nothing(spool, monkeypatch):
    def broken_fsync(fd):
        raise OSError(28, "No space left on device")
    spool.open(b"a@b.test", [b"u@example.org"])
    spool.write(b"x\n")
    monkeypatch.setattr(os, "fsync", broken_fsync)
    assert spool.commit() == b"451 qq write error or disk full (#4.3.0)\r\n"
    assert listing(spool, "new") == [] and listing(spool, "tmp") == []


def test_spool_directory_fsync_failure_withdraws_the_message(spool, monkeypatch):
    # A 451 tells the client to send again: the file must not stay in new/ as well.
    import smtpd_child.delivery.spool as queue_module

    def broken(path):
        raise OSError(5, "Input/output error")
    spool.open(b"a@b.test", [b"u@example.org"])
    monkeypatch.setattr(queue_module, "_fsync_directory", broken)
    spool.write(b"x\n")
    assert spool.commit() == b"451 qq write error or disk full (#4.3.0)\r\n"
    assert listing(spool, "new") == [] and listing(spool, "tmp") == []


def test_spool_tool_survives_a_closed_pipe_and_foreign_files(spool):
    import subprocess
    from conftest import our_program
    for _ in range(400):
        spool.open(b"a@b.test", [b"u@example.org"])
        spool.write(b"x\n")
        assert spool.commit().startswith(b"250 ")
    with open(os.path.join(spool.directory, "new", "0.stray"), "wb") as f:
        f.write(b"not a spool file")
    lister = subprocess.Popen([our_program("smtpd-spool"), spool.directory, "list"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = lister.stdout.read(10)
    lister.stdout.close()                      # like `| head -c 10`
    err = lister.stderr.read()
    lister.wait(timeout=20)
    assert first and b"Traceback" not in err
    listed = subprocess.run([our_program("smtpd-spool"), spool.directory, "list"],
                            capture_output=True, timeout=20)
    # the stray file is reported, the 400 messages are still listed
    assert listed.stdout.count(b"\n") == 400 and listed.returncode == 111
    assert listed.stderr.startswith(b"smtpd-spool: ") and b"0.stray" in listed.stderr


def test_spool_fsyncs_the_spool_directory_when_it_creates_new(spool, monkeypatch):
    # A new/ made for the first message must itself survive a crash after the 250.
    import smtpd_child.delivery.spool as queue_module
    synced = []
    real = queue_module._fsync_directory

    def record(path):
        synced.append(path)
        return real(path)
    monkeypatch.setattr(queue_module, "_fsync_directory", record)
    spool.open(b"a@b.test", [b"u@example.org"])
    assert spool.commit().startswith(b"250 ")
    assert spool.directory in synced and os.path.join(spool.directory, "new") in synced
    synced.clear()
    spool.open(b"a@b.test", [b"u@example.org"])
    assert spool.commit().startswith(b"250 ")
    assert synced == [os.path.join(spool.directory, "new")]


def test_spool_directory_missing_refuses_open(tmp_path):
    assert not Spool(str(tmp_path / "absent"), lambda: NOW).open(b"", [b"u@example.org"])


def test_spool_names_are_unique(spool):
    for _ in range(20):
        spool.open(b"a@b.test", [b"u@example.org"])
        spool.commit()
    assert len(listing(spool, "new")) == 20


@pytest.fixture
def fake_queue(tmp_path):
    script, out = install_fake_queue(tmp_path)

    def make(**env):
        environment = {"PATH": "/usr/bin:/bin", "OUT": str(out), **env}
        return QueueProgram(str(script), lambda: NOW, environment)
    return make, out


def run_program(queue):
    assert queue.open(b"a@b.test", [b"u@example.org", b"v@example.org"])
    queue.write(b"Received: x\n")
    queue.write(b"body\n" * 20000)     # more than a pipe buffer
    return queue.commit()


def test_program_success(fake_queue):
    make, out = fake_queue
    queue = make()
    reply = run_program(queue)
    assert reply == replies.accepted(NOW, queue.last_pid)
    assert (out / "message").read_bytes() == b"Received: x\n" + b"body\n" * 20000
    assert (out / "envelope").read_bytes() == b"Fa@b.test\0Tu@example.org\0Tv@example.org\0\0"


@pytest.mark.parametrize("code,reply", [
    (11, b"554 envelope address too long for qq (#5.1.3)\r\n"),
    (31, b"554 mail server permanently rejected message (#5.3.0)\r\n"),
    (20, b"554 qq permanent problem (#5.3.0)\r\n"),
    (53, b"451 qq write error or disk full (#4.3.0)\r\n"),
    (71, b"451 mail server temporarily rejected message (#4.3.0)\r\n"),
    (81, b"451 qq internal bug (#4.3.0)\r\n"),
    (1, b"451 qq temporary problem (#4.3.0)\r\n"),
    (100, b"451 qq temporary problem (#4.3.0)\r\n"),
])
def test_program_exit_codes(fake_queue, code, reply):
    make, _ = fake_queue
    assert run_program(make(FAKE_EXIT=str(code))) == reply


def test_program_crash(fake_queue):
    make, _ = fake_queue
    assert run_program(make(CRASH="1")) == b"451 qq crashed (#4.3.0)\r\n"


def test_program_missing(tmp_path):
    queue = QueueProgram(str(tmp_path / "nope"), lambda: NOW, {})
    assert run_program(queue) == b"451 unable to exec qq (#4.3.0)\r\n"


def test_program_abort_sends_no_envelope(fake_queue):
    make, out = fake_queue
    queue = make()
    queue.open(b"a@b.test", [b"u@example.org"])
    queue.write(b"partial")
    queue.abort()
    assert (out / "message").read_bytes() == b"partial"
    assert (out / "envelope").read_bytes() == b""    # real qmail-queue queues nothing


def test_sigchld_ignored_is_never_success(fake_queue):
    make, _ = fake_queue
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        reply = run_program(make())
    finally:
        signal.signal(signal.SIGCHLD, previous)
    assert reply == b"451 qq waitpid surprise (#4.3.0)\r\n"


def stuck_queue(tmp_path, body):
    script = tmp_path / "stuck-queue"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return QueueProgram(str(script), lambda: NOW, {"PATH": "/usr/bin:/bin"}, timeout=1)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("body", ["exec sleep 30\n",
                                  "cat >/dev/null; cat <&1 >/dev/null; exec sleep 30\n"],
                         ids=["reads-nothing", "never-exits"])
def test_stuck_program_is_killed_after_the_timeout(tmp_path, body):
    queue = stuck_queue(tmp_path, body)
    started = time.monotonic()
    reply = run_program(queue)          # 100 KB: more than a pipe holds
    assert reply == b"451 qq timeout (#4.3.0)\r\n"
    assert time.monotonic() - started < 10
    with pytest.raises(ProcessLookupError):
        os.kill(queue.last_pid, 0)       # killed and reaped


def test_spool_tool_lists_a_fresh_spool_as_empty(tmp_path):
    import subprocess
    from conftest import our_program
    (tmp_path / "spool").mkdir()
    fresh = subprocess.run([our_program("smtpd-spool"), str(tmp_path / "spool"), "list"],
                           capture_output=True, timeout=20)
    assert (fresh.returncode, fresh.stdout, fresh.stderr) == (0, b"", b"")
    absent = subprocess.run([our_program("smtpd-spool"), str(tmp_path / "absent"), "list"],
                            capture_output=True, timeout=20)
    assert absent.returncode == 111 and absent.stderr.startswith(b"smtpd-spool: unable to list")
