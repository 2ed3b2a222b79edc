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
    "tcpserver_py/rulekeys.py",
    "tcpserver_py/ruleparse.py",
    "tcpserver_py/ruleaddr.py",
    "tcpserver_py/rulecompile.py",
    "tcpserver_py/ruleshadow.py",
    "tcpserver_py/rulecover.py",
    "tcpserver_py/options.py",
    "tcpserver_py/ucspi.py",
    "tcpserver_py/logfmt.py",
    "tcpserver_py/children.py",
    "tcpserver_py/dnswire.py",
    "smtpd_child/replies.py",
    "smtpd_child/framing.py",
    "smtpd_child/address.py",
    "smtpd_child/policy.py",
    "smtpd_child/envelope.py",
    "smtpd_child/protocol.py",
    "smtpd_child/spoolfile.py",
]

FORBIDDEN_IN_PURE = {"os", "sys", "socket", "signal", "select", "subprocess",
                     "threading", "asyncio", "time", "cdbx", "mmap"}

# Modules allowed to read argv / the environment / exit the process.
EDGE_MODULES = {
    "tcpserver_py/tcprules.py", "tcpserver_py/tcprulescheck.py",
    "tcpserver_py/tcpserver.py", "tcpserver_py/tcpenv.py",
    "tcpserver_py/__main__.py",
    "smtpd_child/main.py", "smtpd_child/config.py", "smtpd_child/spoolcli.py",
    "smtpd_child/setup_local.py", "smtpd_child/__main__.py",
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
        yield from sorted((ROOT / package).glob("*.py"))


@pytest.mark.parametrize("rel", PURE_MODULES)
def test_pure_module_imports_no_io(rel):
    path = ROOT / rel
    if not path.exists():
        pytest.fail(f"{rel} is listed as pure but does not exist; update PURE_MODULES")
    top_level = {name.split(".")[0] for name in imported_modules(path)}
    assert not (top_level & FORBIDDEN_IN_PURE), f"{rel} imports {top_level & FORBIDDEN_IN_PURE}"


def test_packages_never_import_each_other():
    for path in all_modules():
        other = "smtpd_child" if path.parent.name == "tcpserver_py" else "tcpserver_py"
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


def test_child_never_imports_server():
    child = ROOT / "tcpserver_py" / "child.py"
    if child.exists():
        assert "tcpserver_py.server" not in imported_modules(child)
        assert ".server" not in child.read_text()
