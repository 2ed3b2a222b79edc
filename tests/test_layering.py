"""Enforce the pure-core / I-O-shell split of the design.

Pure modules decide; they never touch the process, the clock or the network,
so they can be tested without sockets, fork or mocks.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Every module that must stay pure.  Keep this list in step with the code.
PURE_MODULES = [
    "tcpserver_py/rules/keys.py",
    "tcpserver_py/rules/parse.py",
    "tcpserver_py/rules/addr.py",
    "tcpserver_py/rules/compiler.py",
    "tcpserver_py/rules/shadow.py",
    "tcpserver_py/rules/cover.py",
    "tcpserver_py/options.py",
    "tcpserver_py/helptext.py",
    "tcpserver_py/ucspi.py",
    "tcpserver_py/logfmt.py",
    "tcpserver_py/server/children.py",
    "tcpserver_py/server/preloading/launcher.py",
    "tcpserver_py/net/dnswire.py",
    "tcpserver_py/net/proxy.py",
    "smtpd_child/smtp/replies.py",
    "smtpd_child/smtp/framing.py",
    "smtpd_child/smtp/address.py",
    "smtpd_child/smtp/policy.py",
    "smtpd_child/session/controls.py",
    "smtpd_child/smtp/envelope.py",
    "smtpd_child/smtp/protocol.py",
    "smtpd_child/smtp/extensions.py",
    "smtpd_child/auth/sasl.py",
    "smtpd_child/auth/options.py",
    "smtpd_child/delivery/spoolfile.py",
    "smtpd_child/usage.py",
    "smtpd_child/passwords/passfile.py",
    "smtpd_child/relayctrl/names.py",
]

FORBIDDEN_IN_PURE = {"os", "sys", "socket", "signal", "select", "subprocess",
                     "threading", "asyncio", "time", "cdbx", "mmap"}

# Modules allowed to read argv / the environment / exit the process.
EDGE_MODULES = {
    "tcpserver_py/tcprules.py", "tcpserver_py/tcprulescheck.py",
    "tcpserver_py/tcpserver.py", "tcpserver_py/tcpenv.py",
    "tcpserver_py/__main__.py", "tcpserver_py/launch.py",
    "tcpserver_py/server/preloading/noexec.py",
    "smtpd_child/main.py", "smtpd_child/session/driver.py", "smtpd_child/session/config.py",
    "smtpd_child/spoolcli.py",
    "smtpd_child/setup_local.py", "smtpd_child/__main__.py",
    "smtpd_child/passwords/program.py", "smtpd_child/relayctrl/allow.py",
    "smtpd_child/relayctrl/check.py", "smtpd_child/relayctrl/age.py",
    "smtpd_child/chainexec.py", "smtpd_child/procenv.py",
    "tcpserver_py/install/launchers.py", "tcpserver_py/install/check.py",
}


def imported_modules(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def all_modules():
    for package in ("tcpserver_py", "smtpd_child"):
        yield from sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("rel", PURE_MODULES)
def test_pure_module_imports_no_io(rel):
    path = ROOT / rel
    if not path.exists():
        pytest.fail(f"{rel} is listed as pure but does not exist; update PURE_MODULES")
    top_level = {name.split(".")[0] for name in imported_modules(path)}
    assert not (top_level & FORBIDDEN_IN_PURE), f"{rel} imports {top_level & FORBIDDEN_IN_PURE}"


def test_packages_never_import_each_other():
    for path in all_modules():
        own = path.relative_to(ROOT).parts[0]
        other = "smtpd_child" if own == "tcpserver_py" else "tcpserver_py"
        tops = {name.split(".")[0] for name in imported_modules(path)}
        assert other not in tops, f"{path.relative_to(ROOT)} imports {other}"


def test_only_edges_read_argv_or_environment():
    for path in all_modules():
        rel = str(path.relative_to(ROOT))
        if rel in EDGE_MODULES:
            continue
        text = path.read_text()
        for needle in ("sys.argv", "os.environ", "sys.exit("):
            assert needle not in text, f"{rel} uses {needle}; only edge modules may"


def test_child_never_imports_server_loop():
    """Post-fork code never returns into (or even knows) the parent's loop."""
    child = ROOT / "tcpserver_py" / "server" / "child.py"
    assert child.exists()
    assert "tcpserver_py.server.loop" not in imported_modules(child)
    assert ".loop" not in child.read_text()


def test_pure_modules_listed_exist_in_each_pure_package():
    """The rules, SMTP core and spool-format packages are pure throughout:
    a new module there must be listed (and so checked) as pure."""
    listed = set(PURE_MODULES)
    for folder in ("tcpserver_py/rules", "smtpd_child/smtp"):
        for path in sorted((ROOT / folder).glob("*.py")):
            rel = str(path.relative_to(ROOT))
            if path.name in ("__init__.py", "cdbfile.py"):
                continue
            assert rel in listed, f"{rel} is in a pure package but not in PURE_MODULES"
