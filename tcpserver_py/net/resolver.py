"""A small DNS stub resolver that behaves like the djbdns client library the
original tcpserver is built with: servers from $DNSCACHEIP (addresses
separated by spaces or commas), else the `nameserver` lines of
/etc/resolv.conf, else 127.0.0.1; UDP queries with recursion desired, each
server tried with growing timeouts of 1, 3, 11 and 45 seconds.  /etc/hosts
is not consulted, as it is not by the original.

Each query is a step machine (net/steps.py): tcp-env and the forked child
drive it by blocking, the listening parent from its poll loop, so a slow
resolver delays one client only.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from typing import Mapping

from .dnswire import (RCODE_NXDOMAIN, RCODE_OK, TYPE_A, TYPE_AAAA, TYPE_PTR, BadPacket,
                      build_query, encode_name, parse_answer, reverse_domain)
from .steps import READ, Machine, NewSocket, Wait, run

TIMEOUTS = (1, 3, 11, 45)
RESOLV_CONF = "/etc/resolv.conf"
DNS_PORT = 53


class SoftDnsError(Exception):
    """No server gave a usable answer (timeout, SERVFAIL, garbage)."""


def _valid_ip(text: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, text)
            return True
        except OSError:
            pass
    return False


def server_list(env: Mapping[bytes, bytes]) -> list[str]:
    configured = env.get(b"DNSCACHEIP")
    if configured:
        found = [w for w in configured.decode("ascii", "replace").replace(",", " ").split()
                 if _valid_ip(w)]
        if found:
            return found
    found = []
    try:
        # Binary: a text-mode open would import its codec lazily, which
        # fails in a child that can no longer read the interpreter's files.
        with open(RESOLV_CONF, "rb") as handle:
            for raw in handle:
                words = raw.decode("ascii", "replace").split()
                if len(words) >= 2 and words[0] == "nameserver" and _valid_ip(words[1]):
                    found.append(words[1])
    except OSError:
        pass
    return found or ["127.0.0.1"]


class Resolver:
    """The queries are step machines (net/steps.py): `*_steps` methods are
    driven by the listening parent's poll loop, the plain methods block."""

    def __init__(self, servers: list[str], timeouts: tuple[float, ...] = TIMEOUTS):
        self.servers = servers
        self.timeouts = timeouts

    def query_steps(self, wire_name: bytes, qtype: int) -> Machine[list[bytes]]:
        """Answers of `qtype` ([] for NXDOMAIN or no records); SoftDnsError
        when no server answers usefully."""
        for timeout in self.timeouts:
            for server in self.servers:
                result = yield from self._ask(server, wire_name, qtype, timeout)
                if result is not None:
                    return result
        raise SoftDnsError(wire_name)

    def _ask(self, server: str, wire_name: bytes, qtype: int,
             timeout: float) -> Machine[list[bytes] | None]:
        family = socket.AF_INET6 if ":" in server else socket.AF_INET
        qid = struct.unpack(">H", os.urandom(2))[0]
        deadline = time.monotonic() + timeout
        try:
            sock = yield NewSocket(family, socket.SOCK_DGRAM)
        except OSError:
            return None
        try:
            with sock:
                sock.connect((server, DNS_PORT))   # only that server's replies
                sock.send(build_query(qid, wire_name, qtype))
                while True:
                    if not (yield Wait(sock.fileno(), READ, deadline)):
                        return None
                    try:
                        packet = sock.recv(65535)
                    except BlockingIOError:
                        continue
                    try:
                        rcode, answers = parse_answer(packet, qid, wire_name, qtype)
                    except (BadPacket, ValueError, IndexError, struct.error):
                        # Not ours, or garbage: keep waiting.  Whatever a
                        # hostile server sends ends here or as "no name".
                        continue
                    if rcode == RCODE_OK or rcode == RCODE_NXDOMAIN:
                        return answers if rcode == RCODE_OK else []
                    return None           # SERVFAIL, REFUSED...: next server
        except OSError:
            return None

    def name_steps(self, ip: str) -> Machine[bytes | None]:
        """First PTR name of `ip` (lower-case), None if there is none."""
        answers = yield from self.query_steps(reverse_domain(ip), TYPE_PTR)
        return answers[0] if answers else None

    def addresses_steps(self, name: bytes, ipv6: bool) -> Machine[list[str]]:
        try:
            wire = encode_name(name)
        except ValueError:
            return []
        if b"\\" in name:
            return []   # an escaped (unusual) name cannot be asked for again
        answers = yield from self.query_steps(wire, TYPE_AAAA if ipv6 else TYPE_A)
        return [a.decode() for a in answers]

    def query(self, wire_name: bytes, qtype: int) -> list[bytes]:
        return run(self.query_steps(wire_name, qtype))

    def name(self, ip: str) -> bytes | None:
        return run(self.name_steps(ip))

    def addresses(self, name: bytes, ipv6: bool) -> list[str]:
        return run(self.addresses_steps(name, ipv6))


def resolver_for(env: Mapping[bytes, bytes]) -> Resolver:
    return Resolver(server_list(env))
