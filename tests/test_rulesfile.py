"""find_rule: the per-connection cdb read never blocks and never fails open."""

import errno
import os
import subprocess
import sys

import cdbx
import pytest

from tcpserver_py.rules.keys import encode_value
from tcpserver_py.rules.cdbfile import RulesReadError, find_rule


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
