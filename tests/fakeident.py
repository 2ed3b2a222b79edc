"""What the tests' fake identds share: a listener on port 113 of one address."""

import socket

import pytest

IDENT_PORT = 113


def ident_listener(ip: str, on_failure) -> socket.socket:
    """A listening socket on ip:113; if it cannot be bound, call
    on_failure() (to close what the caller opened) and skip, saying why."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((ip, IDENT_PORT))
    except OSError as exc:
        sock.close()
        on_failure()
        pytest.skip(f"cannot bind {ip}:{IDENT_PORT}: {exc}")
    sock.listen(16)
    return sock
