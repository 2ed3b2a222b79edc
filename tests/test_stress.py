"""The quick versions of `make stress` (docs/reliability.md): the same
checks with small counts.  Each asserts the check's invariants; the figures
are printed (pytest -s shows them)."""

import os

import pytest

from stress import floods, fuzz, injection, kills, load, queuefaults, slowloris, starve


def passed(result):
    print(f"{result.name}: {result.detail}")
    if result.detail.startswith("skipped"):
        pytest.skip(result.detail)
    assert result.problems == [] and result.ok
    assert (result.lost, result.duplicated, result.relays) == (0, 0, 0)
    return result


def needs_root(what):
    if os.geteuid() != 0:
        reason = f"{what} needs root"
        print(f"SKIP: {reason}")
        pytest.skip(reason)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("with_queue", [False, True], ids=["spool", "qmail-queue"])
def test_sigkill_at_random_points(tmp_path, with_queue):
    result = passed(kills.run_kills(tmp_path, 18, with_queue))
    assert result.faults == 18


@pytest.mark.timeout(60)
def test_spool_disk_full(tmp_path):
    needs_root("mounting a tmpfs")
    passed(queuefaults.run_disk_full(tmp_path))


@pytest.mark.timeout(60)
def test_file_size_limit(tmp_path):
    passed(queuefaults.run_fsize(tmp_path))


@pytest.mark.timeout(60)
def test_qmail_queue_failures(tmp_path):
    passed(queuefaults.run_queue_exits(tmp_path, quick=True))


@pytest.mark.timeout(60)
def test_tcpserver_at_nproc(tmp_path):
    needs_root("serving as another uid")
    passed(starve.run_nproc(tmp_path))


@pytest.mark.timeout(60)
def test_tcpserver_out_of_fds(tmp_path):
    passed(starve.run_nofile(tmp_path))


@pytest.mark.timeout(120)
def test_parsers_fuzzed():
    result = passed(fuzz.run_fuzz(200))
    assert result.inputs >= 200 * len(fuzz.TARGETS)


@pytest.mark.timeout(60)
def test_slowloris(tmp_path):
    passed(slowloris.run_slowloris(tmp_path, quick=True))


@pytest.mark.timeout(60)
def test_injection(tmp_path):
    passed(injection.run_injection(tmp_path))


@pytest.mark.timeout(60)
def test_floods(tmp_path):
    passed(floods.run_floods(tmp_path, quick=True))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", sorted(load.MODES))
def test_load(tmp_path, mode):
    assert passed(load.run_connections(tmp_path, 1000, mode)).load == 1000
    assert passed(load.run_sessions(tmp_path, 100, mode)).load >= 100
