"""tcpserver after -u/-g: what the children get, what the server can still
load, which groups remain; inherited variables that must not reach a child.

The interpreter on these machines lives under /root (mode 0700), so after
the drop to nobody nothing of it can be read any more: exactly the case of
an interpreter installed under a home directory.
"""

import os
import shutil
import socket
import subprocess
import sys

import pytest

from conftest import our_program, peer_program
from fakedns import A, PTR, FakeDNS
from tcpserver_harness import Server, parse_env

ENV = {"PATH": "/usr/bin:/bin", "KEEP": "1"}     # no LANG, no LC_*: the C locale
NOBODY = ["-u", "65534", "-g", "65534"]
BANNER_PATHS = pytest.mark.parametrize("banner", [[], ["-B", "#"]], ids=["spawn", "fork"])

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to change uid")


def served(exe, args, tmp_path, name, env=ENV, sources=("127.0.0.1",), preexec_fn=None,
           host="127.0.0.1"):
    server = Server(exe, ["-1", *args], tmp_path / f"{name}.log", env=env,
                    preexec_fn=preexec_fn)
    try:
        outputs = [server.talk(source=src, host=host if "." in src else "::1")
                   for src in sources]
        server.wait_log(r"^never$", timeout=0.3)     # let late warnings arrive
        return outputs, server.log()
    finally:
        server.stop()


def without_ports(env):
    return {k: v for k, v in env.items() if not k.endswith("PORT")}


@needs_root
@BANNER_PATHS
@pytest.mark.parametrize("ids, env", [
    (NOBODY, ENV), (["-U"], dict(ENV, UID="65534", GID="65534")),
], ids=["-u-g", "-U"])
def test_children_get_exactly_the_environment_given(tmp_path, banner, ids, env):
    # Read after setuid, /proc/self/environ is unreadable (not dumpable) and
    # the interpreter's own environment carries LC_CTYPE=C.UTF-8.
    args = ["-HRl0", *banner, *ids, "127.0.0.1", "0", "/usr/bin/env"]
    envs = {}
    for name, exe in (("c", peer_program("/usr/bin/tcpserver")),
                      ("ours", our_program("tcpserver"))):
        (out,), log = served(exe, args, tmp_path, name, env=env)
        envs[name] = without_ports(parse_env(out.removeprefix(b"#")))
    assert "LC_CTYPE" not in envs["ours"] and envs["ours"]["KEEP"] == "1"
    assert envs["ours"] == envs["c"]


@needs_root
@pytest.mark.timeout(60)
def test_nothing_is_loaded_after_the_drop(tmp_path):
    # The default lookups (-h, -r) read /etc/resolv.conf in the child; a
    # text-mode open there imported the ascii codec lazily, which failed as
    # `internal error: LookupError`.  A private mount namespace points
    # resolv.conf at a fake DNS server on 127.0.0.1.
    if not shutil.which("unshare") or subprocess.run(
            ["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("unshare -m is not available here")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\n")
    dns = FakeDNS({("1.0.0.127.in-addr.arpa", PTR): ["client.example"],
                   ("client.example", A): ["127.0.0.1"]})
    try:
        wrapper = ["/bin/sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"',
                   str(resolv), sys.executable, "-X", "importtime", "-m",
                   "tcpserver_py.tcpserver"]
        args = ["-v", "-1", "-p", "-t1", *NOBODY, "127.0.0.1", "0", "/usr/bin/env"]
        server = Server("/usr/bin/unshare", ["-m", *wrapper, *args], tmp_path / "s.log",
                        env=ENV)
        try:
            # Everything the server imports is imported by the time it
            # prints its port (after the drop): note where the log is then.
            server.wait_log(r"^tcpserver: status: 0/40$")
            start = len(server.log())
            env = parse_env(server.talk())
            server.wait_served(1)
            log = server.log()[start:]
        finally:
            server.stop()
    finally:
        dns.close()
    assert "internal error" not in log and "import time:" not in log, log
    assert env["TCPREMOTEHOST"] == "client.example", log


def test_a_load_failure_names_the_directory(tmp_path, monkeypatch):
    from tcpserver_py.server.preloading import preload
    gone = tmp_path / "lib"
    gone.mkdir()
    monkeypatch.syspath_prepend(str(gone))
    preload.preload()
    gone.rmdir()
    text = preload.load_failure(LookupError("unknown encoding: ascii"))
    assert text.startswith("internal error: LookupError: unknown encoding: ascii: ")
    assert f"unable to read {gone}: file does not exist" in text


@needs_root
@pytest.mark.parametrize("ids, groups", [
    (["-u", "65534"], ""), (NOBODY, "65534"), (["-u", "65534", "-g", "0"], ""),
])
def test_u_always_drops_supplementary_groups(tmp_path, ids, groups):
    def extra_groups():
        os.setgroups([0, 4, 27])
    program = ["/bin/grep", "^Groups:", "/proc/self/status"]
    args = ["-HRl0", *ids, "127.0.0.1", "0", *program]
    (out,), log = served(our_program("tcpserver"), args, tmp_path, "ours",
                         preexec_fn=extra_groups)
    assert out.decode().split(":", 1)[1].strip() == groups
    warned = "-u 65534 without -g: the group stays 0 (root)" in log
    assert warned == ("-g" not in ids or ids[-1] == "0")
    # The C tcpserver keeps root's groups when -g is not given.
    (out,), _ = served(peer_program("/usr/bin/tcpserver"), args, tmp_path, "c",
                       preexec_fn=extra_groups)
    if "-g" not in ids:
        assert out.decode().split(":", 1)[1].split() == ["0", "4", "27"]


@pytest.mark.parametrize("flags, warned", [([], True), (["-q"], False)])
def test_inherited_relayclient_is_warned_about_once(tmp_path, flags, warned):
    args = [*flags, "-HRl0", "127.0.0.1", "0", "/usr/bin/env"]
    outs, log = served(our_program("tcpserver"), args, tmp_path, "ours",
                       env=dict(ENV, RELAYCLIENT=""), sources=("127.0.0.1", "127.0.0.2"))
    assert all(parse_env(out)["RELAYCLIENT"] == "" for out in outs)   # as the C one
    expected = ("tcpserver: warning: RELAYCLIENT is set in tcpserver's own environment: "
                "every client it serves may relay")
    assert log.count(expected) == (1 if warned else 0), log
    if warned:
        assert "env -i" in log and "rules (-x)" in log
    _, log = served(our_program("tcpserver"), args, tmp_path, "clean")
    assert "RELAYCLIENT" not in log


INHERITED_TCP6 = {"TCP6REMOTEIP": "2001:db8::66", "TCP6REMOTEHOST": "spoofed.example",
                  "TCP6REMOTEINFO": "root", "TCP6INTERFACE": "eth9", "TCP6LOCALIP": "::9",
                  "TCP6LOCALPORT": "9", "TCP6LOCALHOST": "x", "TCP6REMOTEPORT": "9",
                  "TCP6FUTURE": "x"}


@BANNER_PATHS
def test_inherited_tcp6_variables_never_reach_a_child(tmp_path, banner):
    sources = ["127.0.0.1"]
    try:
        socket.socket(socket.AF_INET6).close()
        sources.append("::1")
    except OSError:
        print("SKIP part: no IPv6 here")
    args = ["-HRl0", *banner, "::" if len(sources) == 2 else "0", "0", "/usr/bin/env"]
    outs, log = served(our_program("tcpserver"), args, tmp_path, "ours",
                       env=dict(ENV, **INHERITED_TCP6), sources=sources)
    v4 = parse_env(outs[0].removeprefix(b"#"))
    assert not [k for k in v4 if k.startswith("TCP6")] and v4["KEEP"] == "1"
    if len(outs) == 2:
        v6 = parse_env(outs[1].removeprefix(b"#"))
        tcp6 = {k: v for k, v in v6.items() if k.startswith("TCP6")}
        assert tcp6 == {"TCP6LOCALIP": "::1", "TCP6LOCALPORT": v6["TCPLOCALPORT"],
                        "TCP6LOCALHOST": "0", "TCP6REMOTEIP": "::1",
                        "TCP6REMOTEPORT": v6["TCPREMOTEPORT"]}
