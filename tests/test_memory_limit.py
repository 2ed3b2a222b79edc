"""Under `softlimit -m`: the advised limit serves a whole SMTP session, and a
limit just below the smallest that works ends with one line saying memory is
too low (exit 111; smtpd-child may instead answer qmail's 421 and log it),
never a traceback.  The floor is measured here, by bisection, as
bench/memory_floor.py does: it depends on the interpreter."""

import re

import pytest

from bench.memory_floor import STEP, command, floor, probe, setup
from conftest import VENV_BIN, peer_program
from tcpserver_py.launch import ADVISED_LIMIT

TOO_LOW = re.compile(r"(tcpserver|tcp-env|smtpd-child): fatal: out of memory: the address "
                     r"space limit \(softlimit -m\) of (\d+) bytes is too low; "
                     rf"allow {ADVISED_LIMIT} or more")
NOMEM_421 = "smtpd-child: out of memory, answered 421: is the memory limit (softlimit -m) too low?"


def first_failure_below(case, top, home, cdb):
    """The first limit under `top`, going down by STEP, at which the session
    fails (the floor is not quite the same from one start to the next)."""
    for limit in range(top - STEP, top - 64 * STEP, -STEP):
        ok, code, err = probe(command(case, limit, VENV_BIN, cdb), home, timeout=10)
        if not ok:
            return limit, code, err.decode(errors="replace")
    pytest.fail(f"{case}: still works 1 MiB below the measured floor {top}")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("case", ["tcpserver", "tcp-env", "smtpd-child"])
def test_just_below_the_floor_says_memory_is_too_low(case, tmp_path):
    peer_program("/usr/bin/softlimit")
    home, cdb = setup(tmp_path, VENV_BIN)
    assert probe(command(case, ADVISED_LIMIT, VENV_BIN, cdb), home)[0]
    lowest = floor(case, VENV_BIN, home, cdb)
    print(f"{case}: smallest working softlimit -m {lowest}")
    assert lowest < ADVISED_LIMIT
    limit, code, err = first_failure_below(case, lowest, home, cdb)
    assert "Traceback" not in err and "Fatal Python error" not in err, err
    ours = [line for line in err.splitlines() if not line.startswith("tcpserver: ")
            or TOO_LOW.fullmatch(line)]
    if case == "tcpserver":
        assert code == 111
        assert ours == [f"tcpserver: fatal: out of memory: the address space limit "
                        f"(softlimit -m) of {limit} bytes is too low; allow "
                        f"{ADVISED_LIMIT} or more"]
        return
    # tcpserver itself runs unlimited and logs how the program ended.
    ended = re.findall(r"tcpserver: end \d+ status (\d+)", err)
    assert len(ended) == 1, err
    if case == "smtpd-child" and ours == [NOMEM_421]:
        assert ended == ["256"]  # qmail's die_nomem: 421, exit 1
        return
    assert ended == [str(111 << 8)], err
    assert len(ours) == 1 and TOO_LOW.fullmatch(ours[0]), err
    assert ours[0].startswith(f"{case}: ") and f" of {limit} bytes " in ours[0]


def test_limits_are_read_as_softlimit_sets_them():
    from tcpserver_py.launch import memory_limit, out_of_memory, too_low_line
    limits = (b"Limit                     Soft Limit           Hard Limit           Units\n"
              b"Max data size             16000000             unlimited            bytes\n"
              b"Max address space         17000000             unlimited            bytes\n")
    assert memory_limit(limits) == 16000000
    assert memory_limit(limits.replace(b"16000000 ", b"unlimited")) == 17000000
    assert memory_limit(b"") is None
    assert out_of_memory(MemoryError(), None)
    assert out_of_memory(OSError(12, "Cannot allocate memory"), None)
    assert out_of_memory(ImportError("failed to map segment"), 16000000)
    assert not out_of_memory(ImportError("No module named x"), None)
    assert not out_of_memory(ModuleNotFoundError("No module named x"), 16000000)
    assert not out_of_memory(ValueError(), 16000000)
    assert too_low_line(b"tcp-env", None) == b"tcp-env: fatal: out of memory\n"


@pytest.mark.timeout(60)
def test_silent_on_the_clients_connection():
    # Under inetd fds 0, 1 and 2 are the client's socket: tcp-env, like
    # qmail's, must not write its complaint there; with stderr elsewhere it does.
    import socket
    import subprocess
    softlimit = peer_program("/usr/bin/softlimit")
    argv = [softlimit, "-m", "15000000", str(VENV_BIN / "tcp-env"), "-HR", "/bin/true"]
    ours, theirs = socket.socketpair()
    with ours, theirs:
        elsewhere = subprocess.run(argv, stdin=ours, stdout=ours,
                                   stderr=subprocess.PIPE, timeout=30)
        if not TOO_LOW.fullmatch(elsewhere.stderr.decode().strip()):
            reason = (f"tcp-env starts under 15000000 bytes with this interpreter "
                      f"({elsewhere.stderr[-200:]!r})")
            print(f"SKIP: {reason}")
            pytest.skip(reason)
        assert elsewhere.returncode == 111
        inetd = subprocess.run(argv, stdin=ours, stdout=ours, stderr=ours, timeout=30)
        assert inetd.returncode == 111
        ours.close()
        theirs.settimeout(5)
        assert theirs.recv(1000) == b""
