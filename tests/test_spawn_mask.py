"""The posix_spawn quick path with the parent's SIGCHLD held (server/signals.py):
the program gets the mask the server was started with, not the parent's."""

import os
import signal
import socket

import pytest

from tcpserver_py.options import parse_args
from tcpserver_py.server import direct, signals


@pytest.mark.timeout(30)
def test_quick_path_spawns_with_the_start_up_mask(monkeypatch):
    started_with = frozenset({int(signal.SIGUSR2)})
    monkeypatch.setattr(signals, "original", started_with)
    opts = parse_args(["-HRl0", "127.0.0.1", "0", "/bin/grep", "^SigBlk", "/proc/self/status"],
                      {"PATH": "/usr/bin:/bin"})
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    with socket.create_server(("127.0.0.1", 0)) as listener, \
            socket.create_connection(listener.getsockname()) as client:
        conn, addr = listener.accept()
        try:
            quick_path = direct.QuickPath(opts, {b"PATH": b"/usr/bin:/bin"}, "tcpserver")
            pid = quick_path.try_spawn(conn.fileno(), socket.AF_INET, addr[0], addr[1], 1)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)
            conn.close()
        assert pid is not None, "the quick path fell back to a forked child"
        output = client.makefile("rb").read()
        os.waitpid(pid, 0)
    assert int(output.split()[1], 16) == 1 << (signal.SIGUSR2 - 1)
