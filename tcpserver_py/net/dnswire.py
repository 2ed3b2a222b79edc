"""DNS messages for the few lookups tcpserver makes (pure).

Only what the original's djbdns client library does for it: a PTR query for
an address, A/AAAA queries for the paranoid check, one question per query,
recursion desired.  Names are returned the djbdns way: lower-cased, with any
byte other than a-z, 0-9, `-` and `_` written as a backslash and three octal
digits.
"""

from __future__ import annotations

import ipaddress
import struct

TYPE_A, TYPE_PTR, TYPE_AAAA = 1, 12, 28
CLASS_IN = 1
RCODE_OK, RCODE_SERVFAIL, RCODE_NXDOMAIN = 0, 2, 3


class BadPacket(Exception):
    """The answer is malformed or does not answer our question."""


def reverse_domain(ip: str) -> bytes:
    """Wire-format name to query for `ip`'s PTR record."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        labels = str(addr).split(".")[::-1] + ["in-addr", "arpa"]
    else:
        labels = list(addr.exploded.replace(":", ""))[::-1] + ["ip6", "arpa"]
    return encode_name(".".join(labels).encode())


def encode_name(dotted: bytes) -> bytes:
    out = bytearray()
    for label in dotted.strip(b".").split(b"."):
        if not label or len(label) > 63:
            raise ValueError(f"bad label in {dotted!r}")
        out.append(len(label))
        out += label
    out.append(0)
    return bytes(out)


def build_query(qid: int, wire_name: bytes, qtype: int) -> bytes:
    header = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)   # RD, one question
    return header + wire_name + struct.pack(">HH", qtype, CLASS_IN)


def _read_name(packet: bytes, pos: int) -> tuple[list[bytes], int]:
    """Decode a possibly compressed name; return (labels, position after it)."""
    labels: list[bytes] = []
    end = None
    jumps = 0
    while True:
        if pos >= len(packet):
            raise BadPacket("name runs past the end")
        length = packet[pos]
        if length & 0xC0 == 0xC0:
            if pos + 1 >= len(packet) or jumps > 50:
                raise BadPacket("bad compression pointer")
            if end is None:
                end = pos + 2
            pos = ((length & 0x3F) << 8) | packet[pos + 1]
            jumps += 1
            continue
        if length & 0xC0:
            raise BadPacket("bad label type")
        pos += 1
        if length == 0:
            return labels, (end if end is not None else pos)
        if pos + length > len(packet):
            raise BadPacket("label runs past the end")
        labels.append(packet[pos:pos + length])
        pos += length


def to_dotted(labels: list[bytes]) -> bytes:
    """djbdns dns_domain_todot: lower-case, escape unusual bytes in octal."""
    if not labels:
        return b"."
    out = []
    for label in labels:
        text = bytearray()
        for ch in label:
            if 65 <= ch <= 90:
                ch += 32
            if 97 <= ch <= 122 or 48 <= ch <= 57 or ch in (45, 95):
                text.append(ch)
            else:
                text += b"\\%03o" % ch
        out.append(bytes(text))
    return b".".join(out)


def parse_answer(packet: bytes, qid: int, wire_name: bytes,
                 qtype: int) -> tuple[int, list[bytes]]:
    """Return (rcode, rdata of the answers of type `qtype`, in order).

    PTR rdata comes back as a dotted djbdns-style name; A and AAAA rdata as
    address text.  Raises BadPacket for anything that is not the answer to
    this question."""
    if len(packet) < 12:
        raise BadPacket("short header")
    rid, flags, qdcount, ancount, _, _ = struct.unpack(">HHHHHH", packet[:12])
    if rid != qid or not flags & 0x8000 or qdcount != 1:
        raise BadPacket("not our answer")
    labels, pos = _read_name(packet, 12)
    if _wire(labels) != wire_name.lower():
        raise BadPacket("other question")
    if pos + 4 > len(packet) or struct.unpack(">HH", packet[pos:pos + 4]) != (qtype, CLASS_IN):
        raise BadPacket("other question")
    pos += 4
    rcode = flags & 0x000F
    found: list[bytes] = []
    for _ in range(ancount):
        _, pos = _read_name(packet, pos)
        if pos + 10 > len(packet):
            raise BadPacket("short record")
        rtype, rclass, _, rdlength = struct.unpack(">HHIH", packet[pos:pos + 10])
        pos += 10
        rdata_at = pos
        pos += rdlength
        if pos > len(packet):
            raise BadPacket("short record data")
        if rclass != CLASS_IN or rtype != qtype:
            continue
        if rtype == TYPE_PTR:
            found.append(to_dotted(_read_name(packet, rdata_at)[0]))
        elif rtype == TYPE_A and rdlength == 4:
            found.append(str(ipaddress.IPv4Address(packet[rdata_at:pos])).encode())
        elif rtype == TYPE_AAAA and rdlength == 16:
            found.append(str(ipaddress.IPv6Address(packet[rdata_at:pos])).encode())
    return rcode, found


def _wire(labels: list[bytes]) -> bytes:
    return b"".join(bytes([len(label)]) + label.lower() for label in labels) + b"\0"
