"""A listening socket handed over by whoever started us, instead of bound.

`tcpserver [options] - - program`: host and port both `-` (words the
original can never bind: `-` is no address) mean "serve the socket I was
given":

- systemd socket activation (a .socket unit, systemd-socket-activate):
  LISTEN_PID is our pid and LISTEN_FDS counts sockets from fd 3 on.  With
  several, --fdname picks one by its LISTEN_FDNAMES name (FileDescriptorName=);
  with one, it is taken (and must match --fdname if that is given).
- otherwise a listening socket on fd 0, as inetd `wait` services, s6
  (s6-tcpserver-socketbinder) and similar tools hand it over.

The socket must be a listening TCP socket (IPv4 or IPv6).  The LISTEN_*
variables are meant for us alone: the caller removes them from the
children's environment (see ACTIVATION_VARIABLES).
"""

from __future__ import annotations

import os
import socket
from typing import Mapping

from .listen import ListenError

SD_LISTEN_FDS_START = 3
ACTIVATION_VARIABLES = (b"LISTEN_PID", b"LISTEN_FDS", b"LISTEN_FDNAMES")


def wants_handed_socket(host: str, port: str) -> bool:
    return host == "-" and port == "-"


def handed_listener(env: Mapping[bytes, bytes], pid: int,
                    fdname: str | None) -> socket.socket:
    """The socket to serve, as a socket object on a new close-on-exec fd."""
    fd = _systemd_fd(env, pid, fdname)
    if fd is None:
        if fdname is not None:
            raise ListenError(f"no socket named {fdname}: LISTEN_FDS is not for this process")
        fd = 0
        where = "fd 0"
    else:
        where = f"fd {fd} (LISTEN_FDS)"
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError as exc:
        raise ListenError(f"no listening socket handed over on {where}: "
                          f"{exc.strerror or exc.errno}") from None
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError:
        listening = 0
    if (sock.family not in (socket.AF_INET, socket.AF_INET6)
            or sock.type != socket.SOCK_STREAM or not listening):
        sock.close()
        raise ListenError(f"{where} is not a listening TCP socket")
    if fd >= SD_LISTEN_FDS_START:
        os.close(fd)      # keep only our close-on-exec copy
    return sock


def _systemd_fd(env: Mapping[bytes, bytes], pid: int, fdname: str | None) -> int | None:
    try:
        listen_pid = int(env.get(b"LISTEN_PID", b""))
        count = int(env.get(b"LISTEN_FDS", b""))
    except ValueError:
        return None
    if listen_pid != pid or count < 1:
        return None
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        try:
            os.set_inheritable(fd, False)    # never leak them to the programs
        except OSError:
            pass
    names = env.get(b"LISTEN_FDNAMES", b"").decode("utf-8", "surrogateescape").split(":")
    if fdname is not None:
        for index in range(count):
            if index < len(names) and names[index] == fdname:
                return SD_LISTEN_FDS_START + index
        raise ListenError(f"no socket named {fdname} in LISTEN_FDNAMES")
    if count > 1:
        raise ListenError(f"{count} sockets handed over (LISTEN_FDS): "
                          "choose one with --fdname")
    return SD_LISTEN_FDS_START
