"""A tiny authoritative-looking DNS server on 127.0.0.1:53 for lookup tests.

Written with struct only (not with the code under test).  Needs root for
port 53; tests using it are skipped when it cannot bind.
"""

from __future__ import annotations

import socket
import struct
import threading

import pytest

A, PTR, AAAA = 1, 12, 28
NXDOMAIN, SERVFAIL = 3, 2


def wire(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.strip(".").split(".")) + b"\0"


class FakeDNS:
    """`records` maps (lower-case name, type) to a list of answers (names for
    PTR, address text for A/AAAA) or to an rcode int."""

    def __init__(self, records: dict, address: str = "127.0.0.1"):
        self.records = records
        self.queries: list[tuple[str, int]] = []
        self.sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET,
                                  socket.SOCK_DGRAM)
        try:
            self.sock.bind((address, 53))
        except OSError as exc:
            self.sock.close()
            pytest.skip(f"cannot bind {address}:53: {exc}")
        self.sock.settimeout(0.1)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stopping.is_set():
            try:
                packet, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            reply = self.answer(packet)
            if reply:
                try:
                    self.sock.sendto(reply, peer)
                except OSError:
                    pass

    def answer(self, packet: bytes) -> bytes | None:
        qid, _flags, qd = struct.unpack(">HHH", packet[:6])
        pos, labels = 12, []
        while packet[pos]:
            labels.append(packet[pos + 1:pos + 1 + packet[pos]].decode())
            pos += 1 + packet[pos]
        qtype, _qclass = struct.unpack(">HH", packet[pos + 1:pos + 5])
        question = packet[12:pos + 5]
        name = ".".join(labels).lower()
        self.queries.append((name, qtype))
        found = self.records.get((name, qtype), [])
        rcode = found if isinstance(found, int) else 0
        answers = [] if isinstance(found, int) else found
        body = b""
        for value in answers:
            if qtype == PTR:
                rdata = wire(value)
            else:
                family = socket.AF_INET if qtype == A else socket.AF_INET6
                rdata = socket.inet_pton(family, value)
            body += struct.pack(">HHHIH", 0xC00C, qtype, 1, 60, len(rdata)) + rdata
        header = struct.pack(">HHHHHH", qid, 0x8180 | rcode, 1, len(answers), 0, 0)
        return header + question + body

    def close(self):
        self.stopping.set()
        self.thread.join(timeout=5)
        self.sock.close()
