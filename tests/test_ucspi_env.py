"""The child's environment edits (pure)."""

from hypothesis import given, strategies as st

from tcpserver_py.rules.keys import RuleValue
from tcpserver_py.ucspi import (Connection, EnvironmentTemplate, apply_edits, child_environment,
                                connection_env, per_ip_limit)

V4 = Connection(local_ip="127.0.0.1", local_port=25, remote_ip="10.1.2.3", remote_port=4000,
                local_host=b"0")


def test_vanilla_variables_in_order():
    assert connection_env(V4) == [
        (b"PROTO", b"TCP"), (b"TCPLOCALIP", b"127.0.0.1"), (b"TCPLOCALPORT", b"25"),
        (b"TCPLOCALHOST", b"0"), (b"TCPREMOTEIP", b"10.1.2.3"), (b"TCPREMOTEPORT", b"4000"),
        (b"TCPREMOTEHOST", None), (b"TCPREMOTEINFO", None)]


def test_unknown_values_remove_inherited_variables():
    env = child_environment({b"TCPREMOTEHOST": b"spoof", b"TCPREMOTEINFO": b"x",
                             b"PATH": b"/bin"}, V4, None)
    assert b"TCPREMOTEHOST" not in env and b"TCPREMOTEINFO" not in env
    assert env[b"PATH"] == b"/bin"


def test_empty_ident_answer_is_set_not_removed():
    conn = Connection("127.0.0.1", 25, "10.1.2.3", 4000, remote_info=b"")
    assert child_environment({}, conn, None)[b"TCPREMOTEINFO"] == b""


def test_rule_variables_come_last_and_the_last_wins():
    rule = RuleValue(env=((b"A", b"1"), (b"A", b"2"), (b"TCPLOCALHOST", b"mx.example"),
                          (b"RELAYCLIENT", b"")))
    env = child_environment({b"A": b"0"}, V4, rule)
    assert env[b"A"] == b"2" and env[b"TCPLOCALHOST"] == b"mx.example"
    assert env[b"RELAYCLIENT"] == b""
    assert list(env)[-1] == b"RELAYCLIENT"


def test_ipv6_client_gets_tcp6_copies():
    conn = Connection("::1", 25, "2001:db8::5", 4000, local_host=b"h", remote_info=None,
                      ipv6=True, interface=b"eth0")
    env = child_environment({b"TCP6REMOTEINFO": b"old"}, conn, None)
    assert env[b"PROTO"] == b"TCP6"
    assert env[b"TCPREMOTEIP"] == env[b"TCP6REMOTEIP"] == b"2001:db8::5"
    assert env[b"TCP6LOCALPORT"] == b"25" and env[b"TCP6LOCALHOST"] == b"h"
    assert env[b"TCP6INTERFACE"] == b"eth0"
    assert b"TCP6REMOTEINFO" not in env and b"TCP6REMOTEHOST" not in env


def test_ipv4_client_has_no_tcp6_variables():
    assert not [n for n, _ in connection_env(V4) if n.startswith(b"TCP6")]


def test_apply_edits_removes_and_appends():
    env = apply_edits({b"A": b"1", b"B": b"2"}, [(b"A", None), (b"C", b"3"), (b"B", b"4")])
    assert list(env.items()) == [(b"C", b"3"), (b"B", b"4")]


def test_per_ip_limit_from_rule():
    assert per_ip_limit(5, None) == 5
    assert per_ip_limit(5, RuleValue(env=((b"MAXCONIP", b"2"), (b"MAXCONIP", b"9x")))) == 9
    assert per_ip_limit(5, RuleValue(env=((b"MAXCONIP", b"none"),))) == 0
    assert per_ip_limit(0, RuleValue(env=((b"OTHER", b"3"),))) == 0


def test_ident_answer_with_nul_ends_there_as_in_c():
    # exec refuses a NUL in the environment; the C tcpserver's env_put2 stops at it.
    conn = Connection("127.0.0.1", 25, "10.1.2.3", 4000, remote_info=b"ev\x1bil\0RELAYCLIENT=")
    env = child_environment({}, conn, None)
    assert env[b"TCPREMOTEINFO"] == b"ev\x1bil" and b"RELAYCLIENT" not in env


# The parent's EnvironmentTemplate must give exactly child_environment's
# result (values and order) for any inherited environment, connection and rule.
_names = st.sampled_from([b"PATH", b"A", b"PROTO", b"TCPLOCALIP", b"TCPLOCALHOST", b"TCPREMOTEIP",
                          b"TCPREMOTEHOST", b"TCPREMOTEINFO", b"TCP6REMOTEIP", b"TCP6REMOTEINFO",
                          b"TCP6INTERFACE", b"TCP6X", b"RELAYCLIENT", b"MAXCONIP", b""])
_values = st.binary(max_size=6)
_optional = st.none() | _values


@given(base=st.dictionaries(_names | st.binary(min_size=1, max_size=4), _values, max_size=8),
       local_host=_optional, remote_host=_optional, remote_info=_optional, interface=_optional,
       ipv6=st.booleans(), ports=st.tuples(st.integers(0, 65535), st.integers(0, 65535)),
       rule=st.none() | st.lists(st.tuples(_names, _optional), max_size=5))
def test_template_equals_child_environment(base, local_host, remote_host, remote_info,
                                           interface, ipv6, ports, rule):
    local_ip, remote_ip = ("::1", "2001:db8::5") if ipv6 else ("127.0.0.1", "10.1.2.3")
    value = None if rule is None else RuleValue(env=tuple(rule))
    conn = Connection(local_ip, ports[0], remote_ip, ports[1], local_host=local_host,
                      remote_host=remote_host, remote_info=remote_info, ipv6=ipv6,
                      interface=interface)
    want = child_environment(base, conn, value)
    got = EnvironmentTemplate(base).environment(
        local_ip, ports[0], remote_ip, ports[1], ipv6, value, local_host=local_host,
        remote_host=remote_host, remote_info=remote_info, interface=interface)
    assert list(got.items()) == list(want.items())
