"""The docs' examples name paths that exist once the Makefile has run."""

import re

from conftest import ROOT


def relative_rules_cdbs():
    """(doc, path) of every `-x PATH.cdb` in docs/ that is relative to the checkout."""
    found = []
    for doc in sorted((ROOT / "docs").glob("*.md")):
        for path in re.findall(r"-x\s+(\S+\.cdb)", doc.read_text()):
            if "/" in path and not path.startswith(("/", "$")):  # not a bare name
                found.append((doc.name, path))
    return found


def test_relative_cdb_paths_are_what_make_rules_writes():
    makefile = (ROOT / "Makefile").read_text()
    # `make rules` compiles rules/NAME.rules into $(VAR)/rules/NAME.cdb, VAR = var/
    assert "$(VAR)/rules/$$name.cdb" in makefile and "VAR := $(CURDIR)/var" in makefile
    found = relative_rules_cdbs()
    assert found, "docs/smtpd.md's example names the cdb make rules writes"
    for doc, path in found:
        match = re.fullmatch(r"var/rules/([^/]+)\.cdb", path)
        assert match, f"{doc}: {path} is not where make rules writes a cdb"
        assert (ROOT / "rules" / f"{match.group(1)}.rules").exists(), (doc, path)


def makefile_programs():
    text = (ROOT / "Makefile").read_text()
    entries = re.search(r"^PROGRAMS := (.*?)(?<!\\)$", text, re.M | re.S).group(1)
    return sorted(entry.partition(":")[0] for entry in entries.replace("\\\n", " ").split())


def test_examples_name_installed_programs_and_enough_memory():
    from tcpserver_py.launch import ADVISED_LIMIT
    programs = set(makefile_programs())
    texts = {path: path.read_text() for path in
             [ROOT / "docs" / "examples" / "smtpd" / "run", ROOT / "docs" / "examples" / "xinetd.smtp",
              ROOT / "docs" / "install.md", ROOT / "docs" / "tcpserver.md"]}
    for path, text in texts.items():
        named = re.findall(r"/opt/tcpserver-py/bin/([\w-]+)", text)
        assert named, path
        assert set(named) <= programs, (path, named)
    run = texts[ROOT / "docs" / "examples" / "smtpd" / "run"]
    assert f" softlimit -m {ADVISED_LIMIT} " in run and "exec env -i PATH=" in run
    assert "rlimit_as   = 32M" in texts[ROOT / "docs" / "examples" / "xinetd.smtp"]
    assert 32 * 1024 * 1024 >= ADVISED_LIMIT


def test_every_program_has_a_manual_page_that_renders_cleanly():
    import shutil
    import subprocess
    pages = {page.stem: page for page in (ROOT / "docs" / "man").glob("*.1")}
    assert set(makefile_programs()) <= set(pages)
    groff = shutil.which("groff")
    for name, page in pages.items():
        text = page.read_text()
        assert text.startswith(f".TH {name.upper()} 1 "), name
        if groff:
            proc = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-z", str(page)],
                                  capture_output=True, timeout=60)
            assert proc.returncode == 0 and proc.stderr == b"", (name, proc.stderr)


def test_every_console_script_gets_a_launcher():
    import tomllib
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    text = (ROOT / "Makefile").read_text()
    entries = re.search(r"^PROGRAMS := (.*?)(?<!\\)$", text, re.M | re.S).group(1)
    programs = dict(entry.split(":") for entry in entries.replace("\\\n", " ").split())
    assert programs == {name: target.partition(":")[0] for name, target in scripts.items()}
