"""Bad input and I/O failures: one clear line on stderr, never a traceback,
exit 100 (input) or 111 (I/O), and the existing cdb left byte-identical.
Where the original prints a message of its own we print the same text."""

import os
import random
import subprocess

import pytest

from conftest import our_program, peer_program

OLD_RULES = b"127.:allow,RELAYCLIENT=\"\"\n:allow\n"


@pytest.fixture
def installed(tmp_path):
    """A directory holding a good rules.cdb, compiled by us."""
    cdb = tmp_path / "rules.cdb"
    subprocess.run([our_program("tcprules"), str(cdb), str(tmp_path / "rules.tmp")],
                   input=OLD_RULES, check=True, timeout=60)
    return cdb


def run(args, source, program="tcprules"):
    return subprocess.run([our_program(program)] + [str(a) for a in args], input=source,
                          capture_output=True, timeout=60)


def assert_one_fatal_line(proc, code, start):
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.decode("ascii").splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(start), lines[0]
    assert b"Traceback" not in proc.stderr


@pytest.mark.parametrize("name, source, reason", [
    ("10 MB line", b"1.2.3.4:allow\n" + b"9" * 10_000_000 + b":allow\n",
     "unable to parse line 2: line is longer than 131072 bytes"),
    ("10 MB line, no newline", b"x" * 10_000_000,
     "unable to parse line 1: line is longer than 131072 bytes"),
    ("unterminated quote", b"1.2.3.4:allow,X=\"abc\n",
     "unable to parse line 1: unterminated value: no closing \" for X"),
    ("not UTF-8", b"\xff\xfe\x00:allow,\xe9\n",
     "unable to parse line 1: expected '=' after the variable name \\xe9"),
    ("CRLF", b"# comment\r\n1.2.3.4:allow\r\n",
     "unable to parse line 2: line ends with a carriage return"),
    ("bad range", b"1.2.3.a-2:allow\n",
     "unable to parse line 1: expected digits on both sides of the '-'"),
    ("bad CIDR", b"10.0.0/8:deny\n", "unable to parse line 1: expected an IPv4 CIDR"),
    ("/0", b"0.0.0.0/0:deny\n", "unable to parse line 1: a /0 IPv4 CIDR matches everything"),
    ("::/0", b"::/0:deny\n", "unable to parse line 1: a /0 IPv6 CIDR matches everything"),
    ("user@CIDR6", b"joe@2001:db8::/32:allow\n",
     "unable to parse line 1: expected a single address after 'user@'"),
])
def test_bad_input_is_refused_and_old_cdb_kept(name, source, reason, installed, tmp_path):
    before = installed.read_bytes()
    proc = run([installed, tmp_path / "new.tmp"], source)
    assert_one_fatal_line(proc, 100, "tcprules: fatal: " + reason)
    assert installed.read_bytes() == before


def test_binary_garbage(installed, tmp_path):
    before = installed.read_bytes()
    garbage = bytes(random.Random(7).randrange(256) for _ in range(200_000))
    garbage = b"1.2.3.4:" + garbage  # make sure a line reaches the parser
    proc = run([installed, tmp_path / "new.tmp"], garbage)
    assert_one_fatal_line(proc, 100, "tcprules: fatal: unable to parse line 1: ")
    assert len(proc.stderr) < 1000  # the echoed line is cut short and escaped
    assert installed.read_bytes() == before


def test_long_line_under_the_limit_is_fine(tmp_path):
    value = b"v" * 100_000
    proc = run([tmp_path / "r.cdb", tmp_path / "r.tmp"], b"1.2.3.4:allow,X=\"" + value + b"\"\n")
    assert proc.returncode == 0, proc.stderr


CIDR_NOTE = b" is an IPv4 CIDR block, an extension: the C tcprules stores it as a literal key"


def without_cidr_notes(stderr: bytes) -> bytes:
    """stderr without the warning every IPv4 CIDR line gets."""
    return b"".join(line for line in stderr.splitlines(keepends=True)
                    if CIDR_NOTE not in line)


def same_message_as_original(args, source):
    ours = run(args, source)
    theirs = subprocess.run([peer_program("/usr/bin/tcprules")] + [str(a) for a in args],
                            input=source, capture_output=True, timeout=60)
    assert (ours.returncode, ours.stderr) == (theirs.returncode, theirs.stderr)
    return ours


def test_usage(tmp_path):
    for args in ([], [tmp_path / "only.cdb"]):
        proc = same_message_as_original(args, b"")
        assert proc.returncode == 100
        assert proc.stderr == b"tcprules: usage: tcprules rules.cdb rules.tmp\n"


def test_tmp_in_missing_directory(installed, tmp_path):
    before = installed.read_bytes()
    missing = tmp_path / "missing" / "rules.tmp"
    proc = same_message_as_original([installed, missing], b":allow\n")
    assert_one_fatal_line(proc, 111, f"tcprules: fatal: unable to create {missing}: "
                                     "file does not exist")
    assert installed.read_bytes() == before


def test_unwritable_target_directory(installed, tmp_path):
    before = installed.read_bytes()
    if os.geteuid() == 0:
        # root ignores permission bits: a "directory" that is a file
        blocked = tmp_path / "plainfile"
        blocked.write_bytes(b"")
        tmp, expected = blocked / "rules.tmp", "not a directory"
    else:
        blocked = tmp_path / "readonly"
        blocked.mkdir()
        blocked.chmod(0o555)
        tmp, expected = blocked / "rules.tmp", "access denied"
    proc = same_message_as_original([installed, tmp], b":allow\n")
    assert_one_fatal_line(proc, 111, f"tcprules: fatal: unable to create {tmp}: {expected}")
    assert installed.read_bytes() == before


def test_tmp_on_another_filesystem(installed, tmp_path):
    shm = "/dev/shm"
    if not os.path.isdir(shm) or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a filesystem other than the test directory")
    before = installed.read_bytes()
    tmp = os.path.join(shm, f"tcprules-test-{os.getpid()}-{tmp_path.name}.tmp")
    try:
        proc = same_message_as_original([installed, tmp], b"10.:deny\n")
        assert_one_fatal_line(proc, 111, f"tcprules: fatal: unable to move {tmp} to "
                                         f"{installed}: cross-device link")
        assert installed.read_bytes() == before
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def test_parse_error_removes_our_tmp(installed, tmp_path):
    # The original leaves the partial file; ours would then block the next
    # run (the file is created exclusively), so it goes.
    tmp = tmp_path / "left.tmp"
    proc = run([installed, tmp], b"1.2.3.4:allow\n1.2.3.4:bogus\n")
    assert proc.returncode == 100
    assert not tmp.exists()
    again = run([installed, tmp], b"1.2.3.4:allow\n")
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("kind", ["symlink", "dangling symlink", "leftover file"])
def test_something_at_the_tmp_path_is_refused(kind, installed, tmp_path):
    # The C tcprules opens TMP with O_TRUNC and follows links: whoever may
    # write the directory decides where root's cdb is written and who owns it.
    before = installed.read_bytes()
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    tmp = tmp_path / "rules.tmp"
    if kind == "symlink":
        tmp.symlink_to(victim)
    elif kind == "dangling symlink":
        tmp.symlink_to(tmp_path / "elsewhere")
    else:
        tmp.write_bytes(b"left over\n")
    proc = run([installed, tmp], b"10.:deny\n:allow\n")
    what = "a file" if kind == "leftover file" else "a symbolic link"
    assert_one_fatal_line(proc, 111, f"tcprules: fatal: unable to create {tmp}: "
                                     f"{what} is already there")
    assert installed.read_bytes() == before
    assert victim.read_bytes() == b"precious\n"
    assert not (tmp_path / "elsewhere").exists()
    assert tmp.is_symlink() == (kind != "leftover file")


def test_new_cdb_mode_is_0644_whatever_was_there(installed, tmp_path):
    installed.chmod(0o600)
    proc = subprocess.run([our_program("tcprules"), str(installed), str(tmp_path / "r.tmp")],
                          input=b"10.:deny\n", capture_output=True, timeout=60,
                          preexec_fn=lambda: os.umask(0o077))
    assert proc.returncode == 0, proc.stderr
    assert oct(installed.stat().st_mode & 0o7777) == oct(0o644)
    proc = subprocess.run([our_program("tcprules"), str(installed), str(tmp_path / "r.tmp")],
                          input=b"10.:deny\n", capture_output=True, timeout=60,
                          preexec_fn=lambda: os.umask(0o000))
    assert proc.returncode == 0, proc.stderr
    assert oct(installed.stat().st_mode & 0o7777) == oct(0o644)


def test_closed_stdin(installed, tmp_path):
    # The original would read its own fresh tmp file as fd 0 and install an
    # empty cdb; we refuse.
    before = installed.read_bytes()
    proc = subprocess.run([our_program("tcprules"), str(installed), str(tmp_path / "x.tmp")],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                          preexec_fn=lambda: os.close(0))
    assert_one_fatal_line(proc, 111, "tcprules: fatal: unable to read input: "
                                     "file descriptor not open")
    assert installed.read_bytes() == before
    assert not (tmp_path / "x.tmp").exists()


def test_unreadable_stdin(installed, tmp_path):
    before = installed.read_bytes()
    with open(tmp_path / "writeonly", "wb") as stdin:
        proc = subprocess.run([our_program("tcprules"), str(installed),
                               str(tmp_path / "x.tmp")],
                              stdin=stdin, capture_output=True, timeout=60)
    assert_one_fatal_line(proc, 111, "tcprules: fatal: unable to read input: "
                                     "file descriptor not open")
    assert installed.read_bytes() == before


def test_directory_as_stdin_like_the_original(installed, tmp_path):
    # CPython refuses to start with a directory on fd 0; the launcher answers
    # with the C tcprules' line and exit code instead of a fatal-error dump.
    before = installed.read_bytes()
    results = []
    for program in (peer_program("/usr/bin/tcprules"), our_program("tcprules")):
        fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            results.append(subprocess.run([program, str(installed), str(tmp_path / "x.tmp")],
                                          stdin=fd, capture_output=True, timeout=60))
        finally:
            os.close(fd)
    theirs, ours = results
    assert_one_fatal_line(ours, 111, "tcprules: fatal: unable to read input: is a directory")
    assert (ours.returncode, ours.stderr) == (theirs.returncode, theirs.stderr)
    assert installed.read_bytes() == before


def test_check_mode_writes_nothing(tmp_path):
    os.chdir(tmp_path)
    proc = run(["--check"], b"10.0.0.0/8:deny\n10.0.0.0/8:allow\nno colon here\n")
    assert proc.returncode == 0
    assert proc.stdout == b"tcprules: ok: 2 records, 4 warnings\n"  # 2 for CIDR
    assert b"line 2: rule never matches: line 1 matches" in proc.stderr
    assert b"line 3: no colon" in proc.stderr
    assert list(tmp_path.iterdir()) == []
    bad = run(["--check"], b"10.:deny\n1.2.3.4:allowed\n")
    assert_one_fatal_line(bad, 100, "tcprules: fatal: unable to parse line 2: ")


def test_check_mode_with_a_rebuild_writes_nothing(tmp_path):
    # The wide /9 record for 10.0. must go: --check rebuilds in memory too.
    os.chdir(tmp_path)
    proc = run(["--check"], b"10.0.0.0/9:deny\n10.0.:allow\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"tcprules: ok: 128 records, 1 warnings\n"  # CIDR
    assert without_cidr_notes(proc.stderr) == b""
    assert list(tmp_path.iterdir()) == []


def test_prefix_covered_by_longer_rules_is_reported(tmp_path):
    source = (b"10.1.2.0/24:deny\n10.1.2.0/25:allow\n10.1.2.128/25:allow\n"
              b"10.1.3.0/24:deny\n10.1.3.0/25:allow\n")
    proc = run([tmp_path / "r.cdb", tmp_path / "r.tmp"], source)
    assert proc.returncode == 0
    assert without_cidr_notes(proc.stderr) == (b'tcprules: warning: line 1: rule never matches: longer keys, '
                           b'from line 2 ("10.1.2.0") on, decide every address it covers '
                           b'(key "10.1.2.")\n')
