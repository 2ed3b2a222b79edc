"""tcpserver command-line parsing (pure)."""

import pytest
from hypothesis import given, strategies as st

from tcpserver_py.helptext import TCPENV_HELP, TCPSERVER_HELP
from tcpserver_py.options import (DEFAULT, FLAGS, LONG_ARGUMENT_FIELDS, LONG_FLAG_FIELDS,
                                  QUIET, USAGE, VERBOSE, WITH_ARGUMENT, InfoRequested,
                                  Options, UsageError, parse_args, parse_tcpenv_args,
                                  scan_number)


def test_defaults_are_the_originals():
    opts = parse_args(["0", "25", "qmail-smtpd"])
    assert (opts.limit, opts.backlog, opts.ident_timeout) == (40, 20, 26)
    assert opts.remote_host_lookup and opts.ident and opts.kill_ip_options
    assert not (opts.paranoid or opts.nodelay or opts.print_port or opts.rules_missing_ok)
    assert (opts.verbosity, opts.rules, opts.local_name, opts.banner) == (DEFAULT, None, None, b"")
    assert (opts.host, opts.port, opts.program) == ("0", "25", ("qmail-smtpd",))
    assert (opts.per_ip_limit, opts.family) == (0, 0)


def test_clustered_flags_and_attached_arguments():
    opts = parse_args(["-HRl0", "-c5", "-x", "r.cdb", "-vX1", "127.0.0.1", "smtp", "a", "-b", "c"])
    assert opts.local_name == b"0" and opts.limit == 5 and opts.rules == "r.cdb"
    assert not opts.remote_host_lookup and not opts.ident
    assert opts.verbosity == VERBOSE and opts.rules_missing_ok and opts.print_port
    assert opts.program == ("a", "-b", "c")   # options stop at the host


def test_later_options_win():
    assert parse_args(["-v", "-q", "0", "1", "p"]).verbosity == QUIET
    assert parse_args(["-h", "-H", "-r", "-R", "-r", "0", "1", "p"]).ident
    assert not parse_args(["-h", "-H", "0", "1", "p"]).remote_host_lookup
    assert parse_args(["-D", "-d", "-o", "-O", "0", "1", "p"]).kill_ip_options


def test_double_dash_ends_options():
    assert parse_args(["--", "-x", "1", "p"]).host == "-x"


def test_lenient_numbers():
    assert scan_number("12abc") == 12 and scan_number("abc") == 0 and scan_number("") == 0
    opts = parse_args(["-c", "x", "-b", "7q", "-t", "-3", "0", "1", "p"])
    assert (opts.limit, opts.backlog, opts.ident_timeout) == (0, 7, 0)


def test_banner_is_raw_bytes():
    assert parse_args(["-B", "220 hi\\r\\n", "0", "1", "p"]).banner == b"220 hi\\r\\n"
    assert parse_args(["-B", "caf\udcc3\udca9", "0", "1", "p"]).banner == "café".encode()


def test_envuidgid():
    opts = parse_args(["-U", "0", "1", "p"], {"UID": "1001", "GID": "1002"})
    assert (opts.uid, opts.gid) == (1001, 1002)


@pytest.mark.parametrize("argv, env, words", [
    # The C tcpserver reads all of these as uid/gid 0 (or a setuid(0)):
    # the child would run as root.  Ours refuses, saying what to write.
    (["-u", "qmaild"], {}, ["-u qmaild: not a number", "-u $(id -u qmaild)",
                            "envuidgid qmaild tcpserver -U"]),
    (["-g", "nofiles"], {}, ["-g nofiles: not a number", "-g $(id -g nofiles)"]),
    (["-u", "4294967296"], {}, ["-u 4294967296: out of range", "-u $(id -u USER)"]),
    (["-u", "4294967295"], {}, ["out of range"]),
    (["-u", "7x"], {}, ["-u 7x: not a number"]),
    (["-u", ""], {}, ["not a number"]),
    (["-U"], {"UID": "qmaild"}, ["$UID is 'qmaild'", "envuidgid USER tcpserver -U"]),
    (["-U"], {"UID": "7", "GID": "99999999999"}, ["$GID is '99999999999'"]),
])
def test_ids_that_are_not_numbers_are_refused(argv, env, words):
    with pytest.raises(UsageError) as info:
        parse_args([*argv, "-q", "0", "25", "p"], env)
    text = "\n".join(info.value.lines)
    assert text.startswith("tcpserver: ") and not info.value.quiet
    for word in words:
        assert word in text


def test_numeric_ids_are_taken_as_given():
    opts = parse_args(["-u", "4294967294", "-g", "0", "0", "25", "p"])
    assert (opts.uid, opts.gid) == (4294967294, 0)


def test_long_options_for_the_extensions():
    opts = parse_args(["--ipv6", "--per-ip-limit", "3", "--per-ip-message=busy", "0", "1", "p"])
    assert (opts.family, opts.per_ip_limit, opts.per_ip_message) == (6, 3, b"busy")
    assert parse_args(["--ipv4", "0", "1", "p"]).family == 4
    for option in ("--help", "--version"):
        with pytest.raises(InfoRequested) as info:
            parse_args(["-v", option, "0", "1", "p"])
        assert info.value.option == option


def test_usage_lists_the_extensions():
    for word in ("46 ]", "[ -C perip ]", "[ -M message ]", "--help", "--version",
                 *LONG_FLAG_FIELDS, *LONG_ARGUMENT_FIELDS):
        assert word in USAGE, word


def test_help_lists_every_option():
    for letter in FLAGS + WITH_ARGUMENT:
        assert f"-{letter}" in TCPSERVER_HELP, letter
    for option in (*LONG_FLAG_FIELDS, *LONG_ARGUMENT_FIELDS, "--help", "--version"):
        assert option in TCPSERVER_HELP, option


def test_tcpenv_paranoid_and_info_options():
    assert parse_tcpenv_args(["-p", "prog"]).paranoid
    assert not parse_tcpenv_args(["-p", "-P", "prog"]).paranoid
    assert not parse_tcpenv_args(["prog"]).paranoid
    with pytest.raises(InfoRequested):
        parse_tcpenv_args(["--help"])
    for letter in "rRtxXhHpPl":
        assert f"-{letter}" in TCPENV_HELP, letter


def test_extras():
    opts = parse_args(["-6", "-C", "3", "-M", "421 busy\r\n", "::", "1", "p"])
    assert (opts.family, opts.per_ip_limit, opts.per_ip_message) == (6, 3, b"421 busy\r\n")
    assert parse_args(["-6", "-4", "0", "1", "p"]).family == 4


@pytest.mark.parametrize("argv, first", [
    (["-Z", "0", "1", "p"], "tcpserver: illegal option -- Z"),
    (["-c"], "tcpserver: option requires an argument -- c"),
    (["-q", "-Z"], "tcpserver: illegal option -- Z"),
    (["0", "1"], USAGE), ([], USAGE),
])
def test_usage_errors(argv, first):
    with pytest.raises(UsageError) as info:
        parse_args(argv)
    assert info.value.lines[0] == first and info.value.lines[-1] == USAGE
    assert not info.value.quiet


def test_quiet_silences_only_errors_after_the_options():
    with pytest.raises(UsageError) as info:
        parse_args(["-q", "0"])
    assert info.value.quiet


@given(st.lists(st.text(max_size=6), max_size=8))
def test_never_raises_anything_but_usage(argv):
    try:
        opts = parse_args(argv)
    except (UsageError, InfoRequested):     # InfoRequested: --help, --version
        return
    assert isinstance(opts, Options) and len(opts.program) >= 1
