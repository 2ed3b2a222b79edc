"""The child's environment: which variables to set or remove (pure).

Shared by tcpserver and tcp-env.  The edits are applied in order and the last
edit of a name wins, exactly as ucspi-tcp queues its env_put/env_unset calls:
first tcpserver's own variables (PROTO, TCPLOCAL*, TCPREMOTE*; a variable
with no value is *removed*, even when inherited), then the TCP6* mirrors for
IPv6 clients, then the variables of the matching rule, so a rule may override
anything (qmail setups rely on overriding TCPLOCALHOST).  Unlike ucspi-tcp,
every inherited TCP6* variable is removed first: ucspi-tcp 0.88 does not know
them and passes them on, so an IPv4 client's program could take an inherited
TCP6REMOTEIP for its client (the TCP* ones the original already replaces or
removes for every connection).  IPv6 clients also get the TCP6* copies that
ucspi-tcp6 sets: all but TCPREMOTEINFO, which it does not copy (an inherited
TCP6REMOTEINFO is removed, so it can never pose as an ident answer).  Values
are cut at a NUL, as a C program's are (c_string).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .rules.keys import RuleValue

PER_IP_LIMIT_VARIABLE = b"MAXCONIP"


@dataclass(frozen=True)
class Connection:
    """What the child knows about its connection, addresses in canonical text
    (dotted IPv4 for IPv4 and IPv4-mapped clients, compressed IPv6 otherwise)."""
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    local_host: bytes | None = None
    remote_host: bytes | None = None
    remote_info: bytes | None = None
    ipv6: bool = False                 # a real IPv6 client (not IPv4-mapped)
    interface: bytes | None = None     # scope of a link-local IPv6 address


def socket_ip(text: str) -> str:
    """An address as the kernel gave it (Python's text of a socket address)
    in the form the variables and rules use: dotted for an IPv4 client of a
    dual-stack socket, without a %scope.  (rules.keys.canonical_ip does the
    same for any text, by parsing it; this is the per-connection one.)"""
    ip = text.split("%", 1)[0]
    return ip[7:] if ip.startswith("::ffff:") and "." in ip else ip


def c_string(value: bytes | None) -> bytes | None:
    """What a C program puts in its environment: the bytes before the first
    NUL (the C tcpserver sets TCPREMOTEINFO to the part of an ident answer
    before a NUL; exec cannot pass a NUL at all)."""
    return value if value is None else value.split(b"\0", 1)[0]


# Every name tcpserver sets or removes, for any connection.
CONNECTION_NAMES = frozenset((b"PROTO", b"TCPLOCALIP", b"TCPLOCALPORT", b"TCPLOCALHOST",
                              b"TCPREMOTEIP", b"TCPREMOTEPORT", b"TCPREMOTEHOST",
                              b"TCPREMOTEINFO"))


class EnvironmentTemplate:
    """The environments of many connections from one inherited environment:
    the part that is the same for every connection (the inherited variables
    without TCP6* and without the names tcpserver sets or removes) is
    computed once, and each connection only copies it and fills in its own
    values.  The parent serving many connections per second
    (server/direct.py) keeps one; the result is exactly what the edit queue
    described above gives, order included (tests/test_ucspi_env.py holds it
    to a model written as that queue)."""

    def __init__(self, base: Mapping[bytes, bytes]) -> None:
        # The names the edits would remove or set again go; the order of
        # the rest is kept, and the edited names follow them in edit order,
        # as the original appends them after the inherited ones it keeps.
        self._kept = {name: value for name, value in base.items()
                      if not name.startswith(b"TCP6") and name not in CONNECTION_NAMES}

    def environment(self, local_ip: str, local_port: int, remote_ip: str, remote_port: int,
                    ipv6: bool, rule: RuleValue | None, local_host: bytes | None = None,
                    remote_host: bytes | None = None, remote_info: bytes | None = None,
                    interface: bytes | None = None) -> dict[bytes, bytes]:
        env = self._kept.copy()
        if local_host is not None:
            local_host = c_string(local_host)
        lip = local_ip.encode()
        lport = b"%d" % local_port
        rip = remote_ip.encode()
        rport = b"%d" % remote_port
        env[b"PROTO"] = b"TCP6" if ipv6 else b"TCP"
        env[b"TCPLOCALIP"] = lip
        env[b"TCPLOCALPORT"] = lport
        if local_host is not None:
            env[b"TCPLOCALHOST"] = local_host
        env[b"TCPREMOTEIP"] = rip
        env[b"TCPREMOTEPORT"] = rport
        if remote_host is not None:
            remote_host = env[b"TCPREMOTEHOST"] = c_string(remote_host)
        if remote_info is not None:
            env[b"TCPREMOTEINFO"] = c_string(remote_info)
        if ipv6:
            env[b"TCP6LOCALIP"] = lip
            env[b"TCP6LOCALPORT"] = lport
            if local_host is not None:
                env[b"TCP6LOCALHOST"] = local_host
            env[b"TCP6REMOTEIP"] = rip
            env[b"TCP6REMOTEPORT"] = rport
            if remote_host is not None:
                env[b"TCP6REMOTEHOST"] = remote_host
            if interface:
                env[b"TCP6INTERFACE"] = c_string(interface)
        if rule is not None:
            for name, value in rule.env:
                # A rule `,="x"` gives a variable with no name.  The original
                # passes `=x` on, where no program can look it up; exec from
                # Python refuses such an entry, so it is left out.
                if name:
                    env.pop(name, None)
                    if value is not None:
                        env[name] = c_string(value)
        return env

    def environment_for(self, conn: Connection, rule: RuleValue | None) -> dict[bytes, bytes]:
        return self.environment(conn.local_ip, conn.local_port, conn.remote_ip,
                                conn.remote_port, conn.ipv6, rule, conn.local_host,
                                conn.remote_host, conn.remote_info, conn.interface)


def child_environment(base: Mapping[bytes, bytes], conn: Connection,
                      rule: RuleValue | None) -> dict[bytes, bytes]:
    """The environment one connection's program gets (the forked child,
    tcp-env): `base` with the edits described above."""
    return EnvironmentTemplate(base).environment_for(conn, rule)


def per_ip_limit(default: int, rule: RuleValue | None) -> int:
    """The per-IP limit for this client: the rule's last MAXCONIP if it sets
    one (leading digits; 0 = unlimited for that rule), else `default`."""
    limit = default
    for name, value in (rule.env if rule is not None else ()):
        if name == PER_IP_LIMIT_VARIABLE:
            digits = b""
            for ch in value:
                if not 48 <= ch <= 57:
                    break
                digits += bytes([ch])
            limit = int(digits or b"0")
    return limit
