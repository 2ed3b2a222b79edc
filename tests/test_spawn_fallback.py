"""A failure of the posix_spawn path is a bug: the connection is still
served (by a forked child) and the administrator is told, once."""

import os
import select
import socket

import pytest

from tcpserver_py.options import parse_args
from tcpserver_py.server import loop


@pytest.mark.timeout(20)
def test_a_failing_quick_path_is_said_once_and_the_client_is_served(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("broken on purpose")

    opts = parse_args(["-HRl0", "127.0.0.1", "0", "/bin/echo", "220 hi"])
    lines = []
    parent = loop._Parent(opts, {b"PATH": b"/usr/bin:/bin"}, socket.AF_INET, (), select.poll())
    monkeypatch.setattr(parent.quick_path, "try_spawn", broken)
    monkeypatch.setattr(parent, "write", lines.append)
    assert parent.quick
    for _ in range(2):
        ours, theirs = socket.socketpair()
        parent.spawn(theirs.detach(), ("127.0.0.1", 4000), "127.0.0.1", 1,
                     ("127.0.0.1", 25), None)
        ours.settimeout(10)
        assert ours.recv(100) == b"220 hi\n"        # the forked child served it
        ours.close()
    for pid in parent.table.pids():
        os.waitpid(pid, 0)
    told = [line for line in lines if b"posix_spawn path failed" in line]
    assert told == [b"tcpserver: warning: posix_spawn path failed (RuntimeError: broken on "
                    b"purpose); serving connections by a forked child instead\n"]
