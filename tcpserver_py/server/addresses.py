"""Addresses as the listening parent sees them."""

from __future__ import annotations

import socket

from ..ucspi import socket_ip

IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)       # <linux/in.h>
IPV6_TRANSPARENT = 75                                          # <linux/in6.h>


def bound_address(listener: socket.socket):
    """The local address of every connection this listener accepts (saves a
    getsockname() each), or None: bound to a wildcard address, or
    transparent (a handed socket may be: it accepts for any address)."""
    try:
        bound = listener.getsockname()
        if listener.family == socket.AF_INET:
            transparent = listener.getsockopt(socket.IPPROTO_IP, IP_TRANSPARENT)
        elif listener.family == socket.AF_INET6:
            transparent = listener.getsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT)
        else:
            return None
    except OSError:
        return None
    if transparent or bound[0] in ("0.0.0.0", "::"):
        return None
    return bound


def canonical_ip(addr) -> str:
    """The client's address of an accept() result, as ucspi.socket_ip."""
    return socket_ip(addr[0])
