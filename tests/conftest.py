"""Shared test helpers: where our programs are, and the peer programs.

Peer programs (the Debian ucspi-tcp, tinycdb, mailfront, ...) are installed
by .ci/run.  Outside CI a missing peer skips its test with the reason; under
CI (REQUIRE_PEERS=1, set by .ci/run) a missing peer fails the test, so the
interop tests can never be skipped silently there.
"""

import os
import pathlib
import shutil
import sys

import pytest
from hypothesis import settings

# Property tests check behaviour, never speed: the machines are shared and
# noisy, so hypothesis's per-example deadline (a timed assertion) is off.
settings.register_profile("project", deadline=None)
settings.load_profile("project")

ROOT = pathlib.Path(__file__).resolve().parent.parent
VENV_BIN = pathlib.Path(sys.executable).parent


def our_program(name: str) -> str:
    """Absolute path of one of our console scripts in the virtualenv."""
    path = VENV_BIN / name
    assert path.exists(), f"{path} missing: run `make install`"
    return str(path)


def peer_program(path: str) -> str:
    """Absolute path of a peer program, or skip/fail when it is absent."""
    found = path if os.path.isabs(path) and os.access(path, os.X_OK) else shutil.which(path)
    if not found:
        reason = f"peer program {path} is not installed (bash .ci/run installs it)"
        if os.environ.get("REQUIRE_PEERS") == "1":
            pytest.fail(reason)
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    return found


@pytest.fixture
def program():
    return our_program


@pytest.fixture
def peer():
    return peer_program
