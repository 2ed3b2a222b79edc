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
