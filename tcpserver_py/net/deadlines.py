"""Deadlines (time.monotonic() seconds) as poll() timeouts."""

from __future__ import annotations

import time

# poll() takes a C int of milliseconds, and CPython refuses a timeout its own
# clock type cannot hold: a deadline years away (--proxy-timeout,
# --stop-timeout and -t take any number) is waited for a day at a time, the
# deadline itself unchanged.
LONGEST_POLL_MS = 86400 * 1000


def ms_until(deadline: float) -> int:
    """Milliseconds for poll() to wait for `deadline`: rounded up, never
    negative, at most a day."""
    return min(LONGEST_POLL_MS, max(0, int((deadline - time.monotonic()) * 1000) + 1))
