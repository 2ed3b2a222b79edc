"""smtpd-checkpassword: the password file format, and the program as any
checkpassword caller runs it (fd 3 carrying user\\0password\\0timestamp\\0)."""

import os
import stat
import subprocess
import textwrap

import pytest

from conftest import our_program
from smtpd_child.passwords import passfile

FAST = {"ln": 4, "r": 8, "p": 1}       # cheap parameters for the pure tests
SALT = b"0123456789abcdef"


# --- the format, pure ------------------------------------------------------

def test_encode_verify_round_trip():
    encoded = passfile.encode(b"s3cret", SALT, **FAST)
    assert encoded.startswith("$scrypt$ln=4,r=8,p=1$MDEyMzQ1Njc4OWFiY2RlZg$")
    assert passfile.verify(b"s3cret", encoded)
    assert not passfile.verify(b"s3cret ", encoded)
    assert not passfile.verify(b"", encoded)
    assert passfile.encode(b"s3cret", SALT[::-1], **FAST) != encoded     # salted


def test_hash_matches_hashlib_scrypt_directly():
    import base64
    import hashlib
    encoded = passfile.encode(b"pw", SALT, **FAST)
    digest = base64.b64decode(encoded.rsplit("$", 1)[1] + "=")
    assert digest == hashlib.scrypt(b"pw", salt=SALT, n=16, r=8, p=1, dklen=32)


@pytest.mark.parametrize("bad, reason", [
    ("$scrypt$ln=99,r=8,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43, "out of bounds"),
    ("$scrypt$ln=20,r=32,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43, "too much memory"),
    ("$scrypt$ln=4,r=8$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43, "all needed"),
    ("$scrypt$ln=4,r=8,p=1,x=2$MDEy$AAAA", "unknown"),
    ("$scrypt$ln=4,r=8,p=1$!!!!$" + "A" * 43, "base64"),
    ("$scrypt$ln=4,r=8,p=1$MDEy$" + "A" * 43, "unusual length"),
    ("$2y$10$abcdefghijklmnopqrstuv", "not a $scrypt$"),
    ("$scrypt$ln=4,r=8,p=1$MDEyMzQ1Njc4OWFiY2RlZg", "expected"),
])
def test_malformed_hashes_are_named(bad, reason):
    with pytest.raises(passfile.BadLine, match=reason.replace("$", r"\$")):
        passfile.decode(bad)


def test_lookup_reports_every_malformed_line_and_never_guesses():
    good = passfile.encode(b"pw", SALT, **FAST)
    data = (f"# users\n\nalice:{good}\nno colon here\nbob:$scrypt$junk\n"
            f"carol:{good}\ncarol:{good}\n").encode()
    status, encoded, problems = passfile.lookup(data, b"alice")
    assert (status, encoded) == (passfile.FOUND, good)
    assert [n for n, _ in problems] == [4, 5, 7]
    assert passfile.lookup(data, b"bob")[0] == passfile.UNUSABLE
    assert passfile.lookup(data, b"carol")[0] == passfile.UNUSABLE
    assert passfile.lookup(data, b"dave")[:2] == (passfile.ABSENT, None)
    assert passfile.lookup(data, b"# users")[0] == passfile.ABSENT


def test_with_and_without_entry_keep_other_lines():
    data = b"# comment\nalice:OLD\n\nbob:B\nalice:DUP\n"
    assert passfile.with_entry(data, b"alice", "NEW") == b"# comment\nalice:NEW\n\nbob:B\n"
    assert passfile.with_entry(data, b"carol", "C").endswith(b"alice:DUP\ncarol:C\n")
    assert passfile.with_entry(b"", b"carol", "C") == b"carol:C\n"
    assert passfile.without_entry(data, b"alice") == (b"# comment\n\nbob:B\n", True)
    assert passfile.without_entry(data, b"zed") == (data, False)


@pytest.mark.parametrize("name", [b"", b"a:b", b"a b", b"a\tb", b"a\nb", b"x" * 256, b"a\x7f"])
def test_bad_names(name):
    assert passfile.name_problem(name)


def test_good_names():
    for name in (b"alice", b"alice@example.org", "j\u00fcrgen".encode(), b"x" * 255):
        assert passfile.name_problem(name) is None


# --- the program -------------------------------------------------------------

def add(path, user, password: bytes, **kw):
    return subprocess.run([our_program("smtpd-checkpassword"), "-f", str(path), "add", user],
                          input=password, capture_output=True, timeout=60, **kw)


# A checkpassword caller that is not ours, written the way qmail's AUTH and
# POP patches call it: the login on fd 3 from a pipe, the subprogram after.
CALLER = textwrap.dedent("""\
    #!/bin/sh
    # usage: caller USER PASSWORD checkprogram subprogram...
    user=$1 pass=$2; shift 2
    printf '%s\\0%s\\0<1234.5678@mx.example>\\0' "$user" "$pass" | "$@" 3<&0 </dev/null
    """)


@pytest.fixture
def users(tmp_path):
    path = tmp_path / "smtppasswd"
    for user, password in (("alice@example.org", b"correct horse\n"), ("bob", b"b0b\r\n")):
        assert add(path, user, password).returncode == 0
    caller = tmp_path / "caller"
    caller.write_text(CALLER)
    caller.chmod(0o755)
    return path, caller


def login(users, user, password, *subprogram, path=None, env=None):
    path_, caller = users
    argv = [str(caller), user, password, our_program("smtpd-checkpassword"),
            "-f", str(path or path_), *(subprogram or ("sh", "-c", 'echo "in as $USER"'))]
    return subprocess.run(argv, capture_output=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", **(env or {})})


def test_good_password_runs_the_subprogram(users):
    result = login(users, "alice@example.org", "correct horse")
    assert (result.returncode, result.stdout, result.stderr) == \
        (0, b"in as alice@example.org\n", b"")
    result = login(users, "bob", "b0b", "true")          # the `true` of smtpd-child's AUTH
    assert result.returncode == 0


def test_subprogram_exit_code_is_passed_on(users):
    assert login(users, "bob", "b0b", "sh", "-c", "exit 7").returncode == 7


@pytest.mark.parametrize("user, password", [("alice@example.org", "correct horse "),
                                            ("alice@example.org", ""), ("bob", "B0B"),
                                            ("nobody", "b0b"), ("", "b0b"), ("ALICE@example.org",
                                                                            "correct horse")])
def test_wrong_password_or_user_exits_1_silently(users, user, password):
    result = login(users, user, password)
    assert (result.returncode, result.stdout, result.stderr) == (1, b"", b"")


def test_missing_file_is_temporary_and_named(users, tmp_path):
    missing = tmp_path / "nothere"
    result = login(users, "bob", "b0b", path=missing)
    assert result.returncode == 111 and result.stdout == b""
    assert result.stderr.decode() == (f"smtpd-checkpassword: temporary failure: unable to read "
                                      f"{missing}: No such file or directory\n")


def test_file_from_environment_and_default(users, tmp_path):
    path, caller = users
    argv = [str(caller), "bob", "b0b", our_program("smtpd-checkpassword"), "true"]
    env = {"PATH": "/usr/bin:/bin"}
    assert subprocess.run(argv, env={**env, "SMTPD_PASSWORDS": str(path)},
                          timeout=60).returncode == 0
    (tmp_path / "control").mkdir()
    os.link(path, tmp_path / "control" / "smtppasswd")
    assert subprocess.run(argv, env={**env, "QMAILHOME": str(tmp_path)},
                          timeout=60).returncode == 0


def test_corrupt_lines_are_logged_without_their_content(users):
    path, _ = users
    with open(path, "ab") as f:
        f.write(b"secretpassword-typed-here\n")
        f.write(b"carol:$scrypt$ln=4,r=8,p=1$hunter2$AAAA\n")
    result = login(users, "bob", "b0b", "true")
    assert result.returncode == 0                        # other users still log in
    err = result.stderr.decode()
    assert f"{path}:3: malformed line ignored: no colon after the name" in err
    assert f"{path}:4: malformed line ignored" in err
    assert "secretpassword" not in err and "hunter2" not in err
    result = login(users, "carol", "hunter2")
    assert result.returncode == 111
    assert "unusable" in result.stderr.decode() and "hunter2" not in result.stderr.decode()


def test_password_never_logged(users, tmp_path):
    for user in ("bob", "zed", "alice@example.org"):
        result = login(users, user, "Tr0ub4dor&3", path=tmp_path / "gone")
        assert b"Tr0ub4dor" not in result.stderr and result.stderr
        result = login(users, user, "Tr0ub4dor&3")
        assert b"Tr0ub4dor" not in result.stderr + result.stdout


def test_misuse_exits_2(users):
    path, _ = users
    prog = our_program("smtpd-checkpassword")
    no_fd3 = subprocess.run([prog, "-f", str(path), "true"], capture_output=True, timeout=60,
                            close_fds=True)
    assert no_fd3.returncode == 2 and b"file descriptor 3" in no_fd3.stderr
    no_nul = subprocess.run(["sh", "-c", f"printf 'bob' | {prog} -f {path} true 3<&0"],
                            capture_output=True, timeout=60)
    assert no_nul.returncode == 2
    one_nul = subprocess.run(["sh", "-c", f"printf 'bob\\0b0b' | {prog} -f {path} true 3<&0"],
                             capture_output=True, timeout=60)
    assert one_nul.returncode == 2
    no_program = subprocess.run(["sh", "-c", f"printf 'bob\\0b0b\\0' | {prog} -f {path} 3<&0"],
                                capture_output=True, timeout=60)
    assert no_program.returncode == 2 and b"usage" in no_program.stderr


def test_input_over_512_bytes_is_refused(users):
    path, _ = users
    prog = our_program("smtpd-checkpassword")
    long_ts = "x" * 600
    result = subprocess.run(["sh", "-c", f"printf 'bob\\0b0b\\0{long_ts}\\0' | "
                             f"{prog} -f {path} true 3<&0"], capture_output=True, timeout=60)
    assert result.returncode == 1


def test_add_replaces_remove_deletes(users):
    path, _ = users
    assert add(path, "bob", b"new password").returncode == 0
    assert login(users, "bob", "b0b").returncode == 1
    assert login(users, "bob", "new password").returncode == 0
    assert path.read_text().count("bob:") == 1
    prog = our_program("smtpd-checkpassword")
    assert subprocess.run([prog, "-f", str(path), "remove", "bob"], timeout=60).returncode == 0
    assert login(users, "bob", "new password").returncode == 1
    assert login(users, "alice@example.org", "correct horse").returncode == 0
    result = subprocess.run([prog, "-f", str(path), "remove", "bob"], capture_output=True,
                            timeout=60)
    assert result.returncode == 1 and b"no user 'bob'" in result.stderr


@pytest.mark.parametrize("user, password, message", [
    ("a:b", b"pw\n", b"colon"), ("ok", b"\n", b"empty password"), ("ok", b"", b"empty password"),
    ("ok", b"x" * 600 + b"\n", b"longer than"), ("", b"pw\n", b"empty name"),
])
def test_add_refuses_bad_input(tmp_path, user, password, message):
    path = tmp_path / "smtppasswd"
    result = add(path, user, password)
    assert result.returncode == 100 and message in result.stderr
    assert not path.exists()


def test_file_modes(tmp_path):
    path = tmp_path / "smtppasswd"
    assert add(path, "a", b"pw\n").returncode == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o640)
    assert add(path, "b", b"pw\n").returncode == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    path.chmod(0o604)               # never readable by others, group bit kept
    assert add(path, "c", b"pw\n").returncode == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    assert add(path, "d", b"pw\n").returncode == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    leftovers = [p.name for p in tmp_path.iterdir() if ".tmp." in p.name]
    assert leftovers == []


def test_unwritable_directory_is_reported(tmp_path):
    path = tmp_path / "no" / "such" / "dir" / "smtppasswd"
    result = add(path, "a", b"pw\n")
    assert result.returncode == 111
    assert f"{path}.lock: No such file or directory".encode() in result.stderr


@pytest.mark.timeout(120)
def test_concurrent_adds_lose_nothing(tmp_path):
    """Each add reads, changes and renames the file; without the lock the
    later rename would drop the earlier add's line."""
    path = tmp_path / "smtppasswd"
    prog = our_program("smtpd-checkpassword")
    names = [f"user{i}" for i in range(8)]
    procs = [subprocess.Popen([prog, "-f", str(path), "add", name], stdin=subprocess.PIPE,
                              stderr=subprocess.PIPE) for name in names]
    for proc, name in zip(procs, names):
        proc.stdin.write(f"pw-{name}\n".encode())
        proc.stdin.close()
    for proc in procs:
        assert proc.wait(timeout=100) == 0, proc.stderr.read()
    lines = path.read_text().splitlines()
    assert sorted(line.split(":")[0] for line in lines) == names
    for name in names:
        status, encoded, _ = passfile.lookup(path.read_bytes(), name.encode())
        assert status == passfile.FOUND and passfile.verify(f"pw-{name}".encode(), encoded)


@pytest.mark.timeout(60)
def test_add_on_a_terminal_asks_twice_without_echo(tmp_path):
    import pty
    import select
    path = tmp_path / "smtppasswd"
    argv = [our_program("smtpd-checkpassword"), "-f", str(path), "add", "tty-user"]

    def converse(answers):
        pid, fd = pty.fork()
        if pid == 0:                                   # child: the pty is its terminal
            os.execv(argv[0], argv)
        seen = b""
        try:
            for answer in answers:
                while not seen.rstrip().endswith(b":"):
                    ready, _, _ = select.select([fd], [], [], 30)
                    assert ready, seen
                    seen += os.read(fd, 1024)
                os.write(fd, answer)
                seen = b""
            while True:
                ready, _, _ = select.select([fd], [], [], 30)
                try:
                    chunk = os.read(fd, 1024) if ready else b""
                except OSError:                        # EIO: the child has gone
                    chunk = b""
                if not chunk:
                    break
                seen += chunk
        finally:
            os.close(fd)
        return os.waitpid(pid, 0)[1], seen

    status, output = converse([b"tty secret\n", b"tty secret\n"])
    assert os.waitstatus_to_exitcode(status) == 0
    assert b"tty secret" not in output                  # never echoed
    _, encoded, _ = passfile.lookup(path.read_bytes(), b"tty-user")
    assert passfile.verify(b"tty secret", encoded)
    status, output = converse([b"one\n", b"two\n"])
    assert os.waitstatus_to_exitcode(status) == 100 and b"differ" in output


def test_environment_handed_on_with_user_only(users):
    path, caller = users
    base = {"PATH": "/usr/bin:/bin", "KEEP": "kept"}
    out = subprocess.run([str(caller), "bob", "b0b", our_program("smtpd-checkpassword"),
                          "-f", str(path), "/usr/bin/env", "-0"], env=base,
                         capture_output=True, timeout=60).stdout
    seen = dict(entry.decode().partition("=")[::2] for entry in out.split(b"\0") if entry)
    seen.pop("PWD", None)           # set by the calling shell
    assert seen == {**base, "USER": "bob"}


def test_update_through_a_symlink_keeps_the_link(tmp_path):
    real_dir = tmp_path / "etc"
    real_dir.mkdir()
    link = tmp_path / "smtppasswd"
    link.symlink_to(real_dir / "passwords")
    assert add(link, "a", b"pw\n").returncode == 0
    assert add(link, "b", b"pw\n").returncode == 0
    assert link.is_symlink()
    assert [line.split(":")[0] for line in (real_dir / "passwords").read_text().splitlines()] \
        == ["a", "b"]
