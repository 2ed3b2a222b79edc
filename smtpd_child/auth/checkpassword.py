"""The caller's side of the checkpassword interface (djb's checkpassword,
vpopmail's vchkpw, checkpassword-pam, smtpd-checkpassword).

`checkprogram subprogram [args...]` runs with `user\\0password\\0stamp\\0` on
fd 3 (stamp: a timestamp, or the CRAM-MD5 challenge), fd 0 and 1 on
/dev/null (it must never write to the client's connection), fd 2 shared for
its own log lines.  Exit 0 accepts; 111, a crash, a timeout or a program that
cannot be started is a temporary failure (djb's convention); anything else
refuses.  The password is only ever written into that pipe.
"""

import fcntl
import os
import select
import signal
import time

from smtpd_child.smtp.extensions import ACCEPTED, REFUSED, TEMPORARY

CHECK_TIMEOUT = 30          # seconds a check may take (bounded by the session deadline)
TEMPORARY_EXIT = 111


def check(argv, environ, user: bytes, secret: bytes, stamp: bytes, timeout: float, log):
    """ACCEPTED, REFUSED or TEMPORARY; problems an administrator must fix go to log()."""
    data = b"%s\0%s\0%s\0" % (user, secret, stamp)
    read_end, write_end = _pipe_above_3()
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        pid = os.posix_spawnp(
            argv[0], argv, environ,
            file_actions=[(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, null, 1),
                          (os.POSIX_SPAWN_DUP2, read_end, 3)],
            # Python ignores SIGPIPE; an exec'd program must not inherit that.
            # Its own process group: a timeout kills what it started too.
            setsigdef=(signal.SIGPIPE,), setpgroup=0)
    except OSError as e:
        os.close(write_end)
        log(f"auth: unable to run {argv[0]}: {e.strerror}")
        return TEMPORARY
    finally:
        os.close(read_end)
        os.close(null)
    try:
        os.write(write_end, data)       # a few KB at most: fits in the pipe, never blocks
    except OSError:
        pass                            # it exited without reading: its status decides
    finally:
        os.close(write_end)
    status = _wait(pid, max(timeout, 0.0))
    if status is None:
        log(f"auth: {argv[0]} did not answer within {timeout:g} s: killed")
        return TEMPORARY
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return ACCEPTED
    if code < 0:
        log(f"auth: {argv[0]} killed by signal {-code}")
        return TEMPORARY
    return TEMPORARY if code == TEMPORARY_EXIT else REFUSED


def _pipe_above_3():
    # The read end becomes the child's fd 3 by dup2; were it 3 already, dup2
    # would leave its close-on-exec flag set and the child would lose it.
    ends = os.pipe()
    moved = []
    for fd in ends:
        if fd <= 3:
            moved.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 4))
            os.close(fd)
        else:
            moved.append(fd)
    return moved[0], moved[1]


def _kill(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        return          # a set-uid checker we may not signal: never wait for it
    os.waitpid(pid, 0)


def _wait(pid, timeout):
    """The wait status, or None after killing a child still running at the timeout."""
    end = time.monotonic() + timeout
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            left = end - time.monotonic()
            if left <= 0:
                _kill(pid)
                return None
            if pidfd is not None:
                try:
                    select.select([pidfd], [], [], left)
                except InterruptedError:
                    pass
            else:
                time.sleep(min(left, 0.01))
    finally:
        if pidfd is not None:
            os.close(pidfd)
