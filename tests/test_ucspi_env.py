"""The child's environment (pure), against a model written as ucspi-tcp's
queue of env_put/env_unset edits (tcpserver_py/ucspi.py's docstring)."""

from hypothesis import given, strategies as st

from tcpserver_py.rules.keys import RuleValue
from tcpserver_py.ucspi import (Connection, EnvironmentTemplate, c_string, child_environment,
                                per_ip_limit, socket_ip)


def connection_edits(conn):
    """The model: tcpserver's own variables, in the original's order (None
    removes), then the TCP6* copies for IPv6 clients."""
    edits = [(b"PROTO", b"TCP6" if conn.ipv6 else b"TCP"),
             (b"TCPLOCALIP", conn.local_ip.encode()),
             (b"TCPLOCALPORT", str(conn.local_port).encode()),
             (b"TCPLOCALHOST", conn.local_host),
             (b"TCPREMOTEIP", conn.remote_ip.encode()),
             (b"TCPREMOTEPORT", str(conn.remote_port).encode()),
             (b"TCPREMOTEHOST", conn.remote_host),
             (b"TCPREMOTEINFO", conn.remote_info)]
    if conn.ipv6:
        edits += [(b"TCP6" + name[3:], value) for name, value in edits[1:7]]
        edits.append((b"TCP6REMOTEINFO", None))
        if conn.interface:
            edits.append((b"TCP6INTERFACE", conn.interface))
    return edits


def model_environment(base, conn, rule):
    """Every inherited TCP6* removed, then the edits in order: the last edit
    of a name wins and moves it to the end; nameless rule variables dropped."""
    edits = [(name, None) for name in base if name.startswith(b"TCP6")]
    edits += connection_edits(conn) + list(rule.env if rule is not None else ())
    env = dict(base)
    for name, value in edits:
        if not name:
            continue
        env.pop(name, None)
        if value is not None:
            env[name] = c_string(value)
    return env


V4 = Connection(local_ip="127.0.0.1", local_port=25, remote_ip="10.1.2.3", remote_port=4000,
                local_host=b"0")


def test_vanilla_variables_in_order():
    assert list(child_environment({b"PATH": b"/bin"}, V4, None).items()) == [
        (b"PATH", b"/bin"), (b"PROTO", b"TCP"), (b"TCPLOCALIP", b"127.0.0.1"),
        (b"TCPLOCALPORT", b"25"), (b"TCPLOCALHOST", b"0"), (b"TCPREMOTEIP", b"10.1.2.3"),
        (b"TCPREMOTEPORT", b"4000")]


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
    env = child_environment({b"TCP6REMOTEIP": b"2001:db8::1"}, V4, None)
    assert not [n for n in env if n.startswith(b"TCP6")]


def test_rule_edits_remove_and_append():
    rule = RuleValue(env=((b"A", None), (b"C", b"3"), (b"B", b"4")))
    env = child_environment({b"A": b"1", b"B": b"2"}, V4, rule)
    assert list(env.items())[-2:] == [(b"C", b"3"), (b"B", b"4")] and b"A" not in env


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


# The environment must be exactly the model's (values and order) for any
# inherited environment, connection and rule, built once (child_environment)
# or from a template kept for many connections (the parent's quick path).
_names = st.sampled_from([b"PATH", b"A", b"PROTO", b"TCPLOCALIP", b"TCPLOCALHOST", b"TCPREMOTEIP",
                          b"TCPREMOTEHOST", b"TCPREMOTEINFO", b"TCP6REMOTEIP", b"TCP6REMOTEINFO",
                          b"TCP6INTERFACE", b"TCP6X", b"RELAYCLIENT", b"MAXCONIP", b""])
_values = st.binary(max_size=6)
_optional = st.none() | _values


@given(base=st.dictionaries(_names | st.binary(min_size=1, max_size=4), _values, max_size=8),
       local_host=_optional, remote_host=_optional, remote_info=_optional, interface=_optional,
       ipv6=st.booleans(), ports=st.tuples(st.integers(0, 65535), st.integers(0, 65535)),
       rule=st.none() | st.lists(st.tuples(_names, _optional), max_size=5))
def test_environment_equals_the_edit_queue_model(base, local_host, remote_host, remote_info,
                                           interface, ipv6, ports, rule):
    local_ip, remote_ip = ("::1", "2001:db8::5") if ipv6 else ("127.0.0.1", "10.1.2.3")
    value = None if rule is None else RuleValue(env=tuple(rule))
    conn = Connection(local_ip, ports[0], remote_ip, ports[1], local_host=local_host,
                      remote_host=remote_host, remote_info=remote_info, ipv6=ipv6,
                      interface=interface)
    want = list(model_environment(base, conn, value).items())
    template = EnvironmentTemplate(base)
    for _ in range(2):      # a template serves any number of connections alike
        got = template.environment(
            local_ip, ports[0], remote_ip, ports[1], ipv6, value, local_host=local_host,
            remote_host=remote_host, remote_info=remote_info, interface=interface)
        assert list(got.items()) == want
    assert list(child_environment(base, conn, value).items()) == want


@given(st.ip_addresses())
def test_socket_ip_agrees_with_the_rules_canonical_form(address):
    """The per-connection shortcut gives the rules' canonical text for an
    address as the socket module prints it (inet_ntop), scoped ones too.
    Not covered: the deprecated IPv4-compatible block ::a.b.c.d (::/96),
    which inet_ntop prints dotted and the rules do not."""
    import socket
    from tcpserver_py.rules.keys import canonical_ip
    if address.version == 4:
        texts = [str(address), "::ffff:" + str(address)]
    elif int(address) >> 32 == 0:
        return
    else:
        text = socket.inet_ntop(socket.AF_INET6, address.packed)
        texts = [text, text + "%eth0"]
    for text in texts:
        assert socket_ip(text) == canonical_ip(text)


def test_socket_ip_examples():
    assert socket_ip("::ffff:10.1.2.3") == "10.1.2.3"
    assert socket_ip("fe80::1%eth0") == "fe80::1"
    assert socket_ip("2001:db8::5") == "2001:db8::5"
