"""smtpd_child/session/controls.py: the control files' values, memoised by the
exact bytes read, are what a fresh parse gives; the memo keeps the latest
contents only and its values are immutable; the warm-up under --preload
never fails."""

import os
import posix

from hypothesis import given, strategies as st

from smtpd_child import procenv
from smtpd_child.session import controls
from smtpd_child.main import prepare_preloaded
from smtpd_child.smtp.policy import Policy
from smtpd_child.startup import first_line, number

ALWAYS = (b"me", b"smtpgreeting", b"localiphost", b"timeoutsmtpd", b"databytes",
          b"rcpthosts", b"badmailfrom")
SOMETIMES = (b"tarpitcount", b"tarpitdelay", b"tlsciphers", b"tlsprotocols")
# Lines made of the bytes that matter to the parse (case, separators, `#`, digits).
LINE = st.lists(st.sampled_from([b"a", b"B", b".", b"#", b" ", b"\t", b"\0", b"@", b"\xc9",
                                 b"0", b"7", b"x"]), max_size=6).map(b"".join)
CONTENTS = st.one_of(st.none(), st.lists(LINE, max_size=5).map(b"\n".join),
                     st.binary(max_size=30))
FILES = st.fixed_dictionaries({name: CONTENTS for name in ALWAYS},
                              optional={name: CONTENTS for name in SOMETIMES})


def old_parse(files):
    """What config.build computed from the files before the memo."""
    def entries(data):
        if data is None:
            return None
        found = []
        for line in data.split(b"\n"):
            line = line.rstrip(b" \t\n")
            if line and not line.startswith(b"#"):
                found.extend(line.split(b"\0"))
        return found
    policy = Policy(entries(files[b"rcpthosts"]), None, None,
                    entries(files[b"badmailfrom"]) or [])
    local_ip_host = first_line(files[b"localiphost"])
    return dict(local_ip_host=first_line(files[b"me"]) if local_ip_host is None else local_ip_host,
                databytes=number(files[b"databytes"], 0), rcpthosts=policy.rcpthosts,
                badmailfrom=policy.badmailfrom,
                tarpitcount=first_line(files.get(b"tarpitcount")),
                tarpitdelay=first_line(files.get(b"tarpitdelay")),
                tls_ciphers=first_line(files.get(b"tlsciphers")),
                tls_protocols=files.get(b"tlsprotocols"))


def copy(files):
    """Equal bytes in other objects, as each connection reads them."""
    return {name: None if data is None else bytes(bytearray(data)) for name, data in files.items()}


@given(st.lists(FILES, min_size=1, max_size=4), st.lists(st.integers(0, 3), max_size=10))
def test_memoised_parse_equals_a_fresh_parse(contents, order):
    controls._last.clear()
    for index in [0, *order]:
        files = copy(contents[index % len(contents)])
        values = controls.parsed(files)
        assert {name: getattr(values, name) for name in controls.Controls.__slots__} \
            == old_parse(files)
        assert values.rcpthosts is None or isinstance(values.rcpthosts, frozenset)
        assert isinstance(values.badmailfrom, frozenset)
        assert len(controls._last) == 1 and controls._last[0][0] == files


def test_unchanged_files_reuse_the_parsed_values_and_a_change_is_seen():
    controls._last.clear()
    files = {name: None for name in ALWAYS}
    files[b"rcpthosts"] = b"Example.COM\n"
    first = controls.parsed(files)
    assert controls.parsed(copy(files)) is first
    files[b"rcpthosts"] = b"Example.COm\n"          # same size, one byte changed
    changed = controls.parsed(files)
    assert changed is not first and changed.rcpthosts == frozenset([b"example.com"])
    del files[b"rcpthosts"]
    files[b"rcpthosts"] = None
    assert controls.parsed(files).rcpthosts is None


def test_prepare_preloaded_fills_the_memo_from_the_control_files(tmp_path, monkeypatch):
    controls._last.clear()
    monkeypatch.setattr(procenv, "forked_without_exec", False)
    control = tmp_path / "control"
    control.mkdir()
    (control / "me").write_bytes(b"mail.example.com\n")
    (control / "rcpthosts").write_bytes(b"Example.com\n")
    monkeypatch.setitem(posix.environ, b"QMAILHOME", bytes(tmp_path))
    prepare_preloaded()
    assert procenv.forked_without_exec
    assert controls._last[0][0][b"rcpthosts"] == b"Example.com\n"
    assert controls._last[0][1].rcpthosts == frozenset([b"example.com"])


def test_prepare_preloaded_never_fails(tmp_path, monkeypatch):
    controls._last.clear()
    monkeypatch.setattr(procenv, "forked_without_exec", False)
    (tmp_path / "file").write_bytes(b"")
    (tmp_path / "home" / "control" / "rcpthosts").mkdir(parents=True)   # unreadable as a file
    (tmp_path / "home" / "control" / "me").write_bytes(b"x\n")
    for home in (tmp_path / "missing", tmp_path / "file", tmp_path / "home"):
        monkeypatch.setitem(posix.environ, b"QMAILHOME", bytes(home))
        prepare_preloaded()         # nothing to warm, nothing raised
    assert controls._last == []


def test_the_environment_is_left_alone_when_forked_without_exec(monkeypatch):
    environ = {b"LC_CTYPE": b"from a rule"}
    monkeypatch.setattr(procenv, "initial_environment", lambda: {})
    monkeypatch.setattr(procenv, "forked_without_exec", True)
    procenv.undo_startup_changes(environ)
    assert environ == {b"LC_CTYPE": b"from a rule"}
    monkeypatch.setattr(procenv, "forked_without_exec", False)
    procenv.undo_startup_changes(environ)       # the same block apart from LC_CTYPE
    assert environ == {}


@given(st.lists(st.sampled_from([b"/var/qmail", b"/srv/q\xc9", b"/", b"/var/qmail2"]), max_size=6))
def test_the_paths_kept_are_those_of_the_home_asked_for(homes):
    from smtpd_child.session import config
    for home in homes:
        found = config.paths(home, home + b"/control")
        fresh = config.Paths(home, home + b"/control")
        assert vars(found) == vars(fresh) and found.home == os.fsdecode(home)
        assert len(config._last_paths) == 1
