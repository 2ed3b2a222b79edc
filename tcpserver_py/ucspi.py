"""The child's environment: which variables to set or remove (pure).

Shared by tcpserver and tcp-env.  The edits are applied in order and the last
edit of a name wins, exactly as ucspi-tcp queues its env_put/env_unset calls:
first tcpserver's own variables (PROTO, TCPLOCAL*, TCPREMOTE*; a variable
with no value is *removed*, even when inherited), then the TCP6* mirrors for
IPv6 clients, then the variables of the matching rule, so a rule may override
anything (qmail setups rely on overriding TCPLOCALHOST).  Unlike ucspi-tcp,
every inherited TCP6* variable is removed first (see stale_tcp6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from .rules.keys import RuleValue

Edit = tuple[bytes, "bytes | None"]   # (name, value); None removes the name

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


def connection_env(conn: Connection) -> list[Edit]:
    """tcpserver's own variables, in the original's order."""
    local_port = str(conn.local_port).encode()
    remote_port = str(conn.remote_port).encode()
    local_ip = conn.local_ip.encode()
    remote_ip = conn.remote_ip.encode()
    edits: list[Edit] = [
        (b"PROTO", b"TCP6" if conn.ipv6 else b"TCP"),
        (b"TCPLOCALIP", local_ip),
        (b"TCPLOCALPORT", local_port),
        (b"TCPLOCALHOST", conn.local_host),
        (b"TCPREMOTEIP", remote_ip),
        (b"TCPREMOTEPORT", remote_port),
        (b"TCPREMOTEHOST", conn.remote_host),
        (b"TCPREMOTEINFO", conn.remote_info),
    ]
    if conn.ipv6:
        # IPv6 clients also get the TCP6* copies that ucspi-tcp6 sets: all
        # but TCPREMOTEINFO, which it does not copy (an inherited
        # TCP6REMOTEINFO is removed, so it can never pose as an ident
        # answer).  IPv4 clients, even on a dual-stack socket, see exactly
        # the vanilla variables.
        edits += [(b"TCP6" + name[3:], value) for name, value in edits[1:7]]
        edits.append((b"TCP6REMOTEINFO", None))
        if conn.interface:
            edits.append((b"TCP6INTERFACE", conn.interface))
    return edits


def rule_env(rule: RuleValue | None) -> list[Edit]:
    """The variables a matching rule sets, in file order."""
    if rule is None:
        return []
    return [(name, value) for name, value in rule.env]


def apply_edits(base: Mapping[bytes, bytes], edits: Iterable[Edit]) -> dict[bytes, bytes]:
    """The environment to exec with: `base` plus the edits, last one wins.

    Edited names move to the end, as the original appends them after the
    inherited variables it keeps.
    """
    env = dict(base)
    for name, value in edits:
        if not name:
            # A rule `,="x"` gives a variable with no name.  The original
            # passes `=x` on, where no program can look it up; exec from
            # Python refuses such an entry, so it is left out.
            continue
        env.pop(name, None)
        if value is not None:
            env[name] = value
    return env


def stale_tcp6(base: Mapping[bytes, bytes]) -> list[Edit]:
    """Every inherited TCP6* variable is removed first: only those that
    describe this connection are set again (connection_env).  ucspi-tcp 0.88
    does not know them and passes them on, so an IPv4 client's program
    could take an inherited TCP6REMOTEIP for its client; the TCP* ones the
    original already replaces or removes for every connection."""
    return [(name, None) for name in base if name.startswith(b"TCP6")]


def c_string(value: bytes | None) -> bytes | None:
    """What a C program puts in its environment: the bytes before the first
    NUL (the C tcpserver sets TCPREMOTEINFO to the part of an ident answer
    before a NUL; exec cannot pass a NUL at all)."""
    return value if value is None else value.split(b"\0", 1)[0]


def child_environment(base: Mapping[bytes, bytes], conn: Connection,
                      rule: RuleValue | None) -> dict[bytes, bytes]:
    edits = stale_tcp6(base) + connection_env(conn) + rule_env(rule)
    return apply_edits(base, [(name, c_string(value)) for name, value in edits])


# Every name connection_env sets or removes, for any connection.
CONNECTION_NAMES = frozenset((b"PROTO", b"TCPLOCALIP", b"TCPLOCALPORT", b"TCPLOCALHOST",
                              b"TCPREMOTEIP", b"TCPREMOTEPORT", b"TCPREMOTEHOST",
                              b"TCPREMOTEINFO"))


class EnvironmentTemplate:
    """child_environment for many connections from one inherited environment:
    the part that is the same for every connection (the inherited variables
    without TCP6* and without the names tcpserver sets or removes) is
    computed once, and each connection only copies it and fills in its own
    values.  The parent serving many connections per second
    (server/direct.py) uses this; the result is exactly child_environment's,
    order included (tests/test_ucspi_env.py compares the two)."""

    def __init__(self, base: Mapping[bytes, bytes]) -> None:
        # The names child_environment would remove or set again go; the
        # order of the rest is kept, and the edited names follow them in
        # edit order, as apply_edits appends them.
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
                if name:                     # see apply_edits: `=x` is left out
                    env.pop(name, None)
                    if value is not None:
                        env[name] = c_string(value)
        return env


def per_ip_limit(default: int, rule: RuleValue | None) -> int:
    """The per-IP limit for this client: the rule's last MAXCONIP if it sets
    one (leading digits; 0 = unlimited for that rule), else `default`."""
    limit = default
    for name, value in rule_env(rule):
        if name == PER_IP_LIMIT_VARIABLE:
            digits = b""
            for ch in value:
                if not 48 <= ch <= 57:
                    break
                digits += bytes([ch])
            limit = int(digits or b"0")
    return limit
