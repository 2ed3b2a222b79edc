"""The listening parent's signals.

The handlers only record: SIGTERM (exit at once) and SIGQUIT (drain) set a
flag; SIGCHLD's message is the wakeup fd, on which the loop reaps.

SIGCHLD is held blocked while the parent accepts and starts children.

Each child's exit sends the parent a SIGCHLD; caught at any moment, each
costs a signal frame, the wakeup-fd write, sigreturn and the Python handler
(about 4 us), mostly in the middle of accepting and spawning, where the
parent has no use for it.  So SIGCHLD is blocked except while the loop
waits in poll(): the exits of a whole batch arrive as one pending signal,
delivered when poll() is entered (loop.py).

The mask the server was started with passes on to the programs, as
through the C tcpserver's fork and exec: posix_spawn gets it as its
setsigmask (direct.py), and a forked child restores it first thing
(child.py, preloading/noexec.py).
"""

from __future__ import annotations

import signal as _wrapper

# The C module: the `signal` wrapper turns each returned mask into enum
# members (about 0.5 us a call).
import _signal as signal

HELD = frozenset((signal.SIGCHLD,))
pthread_sigmask, SIG_BLOCK, SIG_UNBLOCK = (signal.pthread_sigmask, signal.SIG_BLOCK,
                                           signal.SIG_UNBLOCK)

# The mask serve() started with; None while nothing is held (SIGCHLD
# already blocked by whoever started us: then the loop reaps every round).
original: frozenset[int] | None = None


class Signals:
    terminated = False
    draining = False


def _on_term(signum, frame) -> None:
    Signals.terminated = True


def _on_quit(signum, frame) -> None:
    Signals.draining = True


def _on_child(signum, frame) -> None:
    pass   # the wakeup fd is the message; the loop reaps


def install(wake_write: int) -> None:
    _wrapper.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    _wrapper.signal(signal.SIGCHLD, _on_child)
    _wrapper.signal(signal.SIGTERM, _on_term)
    _wrapper.signal(signal.SIGQUIT, _on_quit)
    _wrapper.signal(signal.SIGPIPE, signal.SIG_IGN)


def hold() -> bool:
    """Block SIGCHLD for the parent's life; False if it was blocked already."""
    global original
    before = frozenset(signal.pthread_sigmask(signal.SIG_BLOCK, HELD))
    if signal.SIGCHLD in before:
        return False
    original = before
    return True


def restore_in_child() -> None:
    """In a forked child: the mask the server was started with."""
    if original is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, original)
