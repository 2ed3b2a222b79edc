"""The graceful stop (SIGQUIT): the loop has stopped accepting; wait for the
running children, at most --stop-timeout seconds, then exit 0.

SIGTERM keeps the original's meaning (exit at once, children left running);
SIGQUIT, whose default would dump core, is the one ucspi-tcp leaves free
for this.  Children still running at the deadline get SIGTERM, so that a
supervisor restarting the server knows none of the old ones stays behind.
"""

from __future__ import annotations

import os
import signal
import time

from .. import logfmt
from ..net.deadlines import ms_until
from .children import ChildTable

PROG = "tcpserver"


class Drain:
    def __init__(self, table: ChildTable, timeout: float, write, quiet: bool):
        self.table = table
        self.deadline = time.monotonic() + timeout
        self.write = write
        self.quiet = quiet
        if not quiet:
            write(logfmt.warning(PROG, f"stopping: waiting for {len(table)} children"))

    def done(self) -> bool:
        """True when the server may exit now."""
        if not len(self.table):
            return True
        if time.monotonic() < self.deadline:
            return False
        pids = self.table.pids()
        if not self.quiet:
            self.write(logfmt.warning(
                PROG, f"stop timeout: sending SIGTERM to {len(pids)} children"))
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        return True

    def poll_timeout(self) -> int:
        return ms_until(self.deadline)
