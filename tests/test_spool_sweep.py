"""Sweeping abandoned files out of the built-in spool's tmp/ (delivery/sweep.py)."""

import os
import subprocess
import sys
import time

import pytest

from smtpd_child.delivery import sweep

from conftest import our_program


@pytest.fixture
def spool(tmp_path):
    for sub in ("tmp", "new"):
        (tmp_path / sub).mkdir()
    return tmp_path


def aged(path, seconds):
    path.write_bytes(b"smtpd-spool 1\npartial")
    old = time.time() - seconds
    os.utime(path, (old, old))
    return path


def test_old_files_go_young_files_and_new_stay(spool):
    old = aged(spool / "tmp" / "1.2.old", sweep.AGE + 60)
    young = aged(spool / "tmp" / "1.2.young", sweep.AGE - 60)
    done = aged(spool / "new" / "1.2.done", sweep.AGE * 10)
    assert sweep.sweep(str(spool), time.time()) == (1, 0)
    assert not old.exists() and young.exists() and done.exists()


@pytest.mark.timeout(30)
def test_a_file_whose_writer_is_alive_is_kept(spool):
    busy = aged(spool / "tmp" / "1.2.busy", sweep.AGE + 60)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import os, sys, time\n"
         f"fd = os.open({str(busy)!r}, os.O_WRONLY)\nos.lockf(fd, os.F_LOCK, 0)\n"
         "print('locked', flush=True)\ntime.sleep(60)"], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"locked\n"
        assert sweep.sweep(str(spool), time.time()) == (0, 1)
        assert busy.exists()
    finally:
        holder.kill()
        holder.wait()
    # The writer died (SIGKILL): the kernel dropped its lock, the file goes.
    assert sweep.sweep(str(spool), time.time()) == (1, 0)
    assert not busy.exists()


def test_at_most_once_per_interval(spool):
    now = time.time()
    assert sweep.maybe_sweep(str(spool), now)          # no stamp yet: sweeps
    assert not sweep.maybe_sweep(str(spool), now + sweep.INTERVAL - 1)
    left = aged(spool / "tmp" / "1.2.left", sweep.AGE + 60)
    assert sweep.maybe_sweep(str(spool), now + sweep.INTERVAL + 1)
    assert not left.exists()


def test_symlinks_and_directories_are_left_alone(spool):
    target = aged(spool / "elsewhere", sweep.AGE + 60)
    (spool / "tmp" / "link").symlink_to(target)
    (spool / "tmp" / "dir").mkdir()
    assert sweep.sweep(str(spool), time.time()) == (0, 0)
    assert target.exists()


@pytest.mark.timeout(30)
def test_smtpd_spool_sweep_command(spool):
    aged(spool / "tmp" / "1.2.old", 3 * 3600)
    out = subprocess.run([our_program("smtpd-spool"), str(spool), "sweep", "2"],
                         capture_output=True, timeout=20)
    assert (out.returncode, out.stdout) == (0, b"removed 1, kept 0 still being written\n")
    out = subprocess.run([our_program("smtpd-spool"), str(spool), "sweep", "x"],
                         capture_output=True, timeout=20)
    assert out.returncode == 100 and b"bad number of hours" in out.stderr
