"""--help and --version: on stdout, exit 0, one version line for every program;
the help texts list our extensions; the usage errors stay the originals'."""

import subprocess

import pytest

from conftest import our_program
from tcpserver_py import VERSION_LINE


def run(name, *args):
    return subprocess.run([our_program(name), *args], capture_output=True, timeout=60,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("name", ["tcprules", "tcprulescheck", "tcpserver"])
def test_version_is_shared(name):
    proc = run(name, "--version")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, VERSION_LINE.encode(), b"")


@pytest.mark.parametrize("name, extensions", [
    ("tcprules", ["tcprules rules.cdb rules.tmp", "tcprules --check", "--version",
                  "10.0.0.0/9", "2001:db8::/32", "tcprules(1)"]),
    ("tcprulescheck", ["tcprulescheck rules.cdb [address]", "--version", "IPv6",
                       "tcprulescheck(1)"]),
])
def test_help_lists_the_extensions(name, extensions):
    proc = run(name, "--help")
    assert proc.returncode == 0 and proc.stderr == b""
    text = proc.stdout.decode()
    assert text.startswith(f"usage: {name} ")
    for word in extensions:
        assert word in text, word


def test_help_writes_nothing(tmp_path):
    proc = subprocess.run([our_program("tcprules"), "--help"], cwd=tmp_path,
                          capture_output=True, timeout=60, input=b"1.2.3.4:deny\n")
    assert proc.returncode == 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, usage", [
    ("tcprules", b"tcprules: usage: tcprules rules.cdb rules.tmp\n"),
    ("tcprulescheck", b"tcprulescheck: usage: tcprulescheck rules.cdb\n"),
])
def test_usage_error_is_still_the_originals(name, usage):
    proc = run(name)
    assert (proc.returncode, proc.stdout, proc.stderr) == (100, b"", usage)
