"""find_rule: the per-connection cdb read never blocks and never fails open."""

import errno
import os
import subprocess
import sys
import time

import cdbx
import pytest

from tcpserver_py.rules.keys import encode_value
from tcpserver_py.rules.cdbfile import RuleCache, RulesReadError, find_rule


def write_cdb(path, records):
    maker = cdbx.CDB.make(str(path))
    for key, value in records:
        maker.add(key, value)
    maker.commit().close()


def test_first_matching_key_in_ucspi_order(tmp_path):
    path = tmp_path / "r.cdb"
    write_cdb(path, [(b"10.", encode_value(True, [])),
                     (b"10.1.", encode_value(False, [(b"RELAYCLIENT", b"")])),
                     (b"", encode_value(False, [(b"WHO", b"default")]))])
    key, rule = find_rule(str(path), "10.1.2.3")
    assert key == b"10.1." and not rule.deny and rule.env == ((b"RELAYCLIENT", b""),)
    key, rule = find_rule(str(path), "10.9.9.9")
    assert key == b"10." and rule.deny
    assert find_rule(str(path), "192.0.2.1")[0] == b""


def test_no_key_matches_gives_none(tmp_path):
    path = tmp_path / "r.cdb"
    write_cdb(path, [(b"10.", b"")])
    assert find_rule(str(path), "192.0.2.1") is None


@pytest.mark.parametrize("make, err", [
    (lambda p: None, errno.ENOENT),
    (lambda p: p.mkdir(), errno.EISDIR),
    (lambda p: os.mkfifo(p), errno.EPROTO),
    (lambda p: p.write_bytes(b"\x00" * 100), errno.EPROTO),
    (lambda p: p.write_bytes(b""), errno.EINVAL),
])
@pytest.mark.timeout(10)
def test_unreadable_rules_raise_with_the_reason(tmp_path, make, err):
    path = tmp_path / "r.cdb"
    make(path)
    with pytest.raises(RulesReadError) as caught:
        find_rule(str(path), "10.1.2.3")
    assert caught.value.errno == err


def test_truncated_cdb_is_an_error_not_a_crash(tmp_path):
    path = tmp_path / "r.cdb"
    write_cdb(path, [(b"10.%d." % n, b"D\0") for n in range(200)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    # In a subprocess: a read past the end must be an exception, never SIGBUS.
    code = ("from tcpserver_py.rules.cdbfile import *\n"
            "try:\n    find_rule(%r, '10.150.0.1')\nexcept RulesReadError as e:\n"
            "    print(e.text)\n" % str(path))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=20)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == b"protocol error"


# RuleCache (the server parent's lookups): a clock far ahead makes every file
# count as settled, so answers are kept and only stat() guards them.
FAR_AHEAD = lambda: time.time_ns() + 10**12  # noqa: E731


def test_cache_keeps_answers_of_a_settled_file(tmp_path):
    path = tmp_path / "r.cdb"
    write_cdb(path, [(b"10.", encode_value(True, [])), (b"", encode_value(False, [(b"W", b"d")]))])
    cache = RuleCache(str(path), clock=FAR_AHEAD)
    for ip in ("10.1.2.3", "192.0.2.1", "10.1.2.3", "192.0.2.1"):
        assert cache.find(ip) == find_rule(str(path), ip)
    assert cache.hits == 2


def test_cache_follows_a_renamed_replacement_at_once(tmp_path):
    path = tmp_path / "r.cdb"
    write_cdb(path, [(b"10.", encode_value(False, [(b"V", b"1")]))])
    cache = RuleCache(str(path), clock=FAR_AHEAD)
    assert cache.find("10.1.2.3")[1].env == ((b"V", b"1"),)
    assert cache.find("10.1.2.3")[1].env == ((b"V", b"1"),) and cache.hits == 1
    # As tcprules does: a new file of the same size renamed into place.
    write_cdb(tmp_path / "r.tmp", [(b"10.", encode_value(False, [(b"V", b"2")]))])
    assert (tmp_path / "r.tmp").stat().st_size == path.stat().st_size
    os.rename(tmp_path / "r.tmp", path)
    assert cache.find("10.1.2.3")[1].env == ((b"V", b"2"),)


def test_cache_follows_a_change_in_place(tmp_path):
    path = tmp_path / "r.cdb"
    write_cdb(path, [(b"10.", encode_value(False, [(b"V", b"1")]))])
    cache = RuleCache(str(path), clock=FAR_AHEAD)
    assert cache.find("10.1.2.3")[1].env == ((b"V", b"1"),)
    old = path.stat()
    write_cdb(tmp_path / "new.cdb", [(b"10.", encode_value(False, [(b"V", b"2")]))])
    scratch = tmp_path / "scratch"
    scratch.touch()
    while scratch.stat().st_ctime_ns <= old.st_ctime_ns:  # the change lands in a later tick
        time.sleep(0.01)
        os.utime(scratch)
    with open(path, "r+b") as handle:                    # same inode, same size
        handle.write((tmp_path / "new.cdb").read_bytes())
    assert path.stat().st_ino == old.st_ino and path.stat().st_size == old.st_size
    assert cache.find("10.1.2.3")[1].env == ((b"V", b"2"),)


def test_cache_reads_a_recently_changed_file_every_time(tmp_path):
    """With the real clock a file just written has not settled: it is read
    afresh, so even a change within one timestamp tick is seen."""
    path = tmp_path / "r.cdb"
    write_cdb(path, [(b"10.", encode_value(False, [(b"V", b"1")]))])
    cache = RuleCache(str(path))
    assert cache.find("10.1.2.3")[1].env == ((b"V", b"1"),)
    write_cdb(tmp_path / "new.cdb", [(b"10.", encode_value(False, [(b"V", b"2")]))])
    with open(path, "r+b") as handle:
        handle.write((tmp_path / "new.cdb").read_bytes())
    assert cache.find("10.1.2.3")[1].env == ((b"V", b"2"),)
    assert cache.hits == 0


def test_cache_raises_as_find_rule_when_the_file_goes(tmp_path):
    path = tmp_path / "r.cdb"
    write_cdb(path, [(b"10.", b"")])
    cache = RuleCache(str(path), clock=FAR_AHEAD)
    assert cache.find("10.1.2.3")[0] == b"10."
    path.unlink()
    with pytest.raises(RulesReadError) as caught:
        cache.find("10.1.2.3")
    assert caught.value.errno == errno.ENOENT
    path.mkdir()
    with pytest.raises(RulesReadError) as caught:
        cache.find("10.1.2.3")
    assert caught.value.errno == errno.EISDIR
