"""Removing what killed sessions leave in the built-in spool's tmp/.

A session killed while it writes a message (SIGKILL, a power cut, the OOM
killer) leaves its file in `spool/tmp`; nothing ever renames it into new/,
so nobody will read it.  sweep() removes such files once they are older
than `age` seconds (qmail-clean's bound: 36 hours), and never a file still
being written: the writer holds a POSIX lock (lockf) on its tmp file for as
long as it has it open, the kernel drops the lock when the writer dies, and
the sweeper skips every file it cannot lock.  The age bound covers the
instant between a file's creation and its lock.

When: smtpd-child calls maybe_sweep() after each session has answered its
client, and it sweeps at most once per INTERVAL (the mtime of
`spool/.swept` is the last time); `smtpd-spool SPOOLDIR sweep` does it at
once, from cron for instance.
"""

import os

AGE = 36 * 3600            # seconds a tmp/ file must be unchanged (qmail-clean's 36 h)
INTERVAL = 15 * 60         # smtpd-child sweeps at most this often
STAMP = ".swept"


def sweep(spool: str, now: float, age: float = AGE):
    """Remove abandoned tmp/ files older than `age`; returns (removed, kept busy)."""
    tmp = os.path.join(spool, "tmp")
    removed = busy = 0
    try:
        names = os.listdir(tmp)
    except OSError:
        return removed, busy
    for name in names:
        path = os.path.join(tmp, name)
        try:
            info = os.stat(path, follow_symlinks=False)
        except OSError:
            continue
        if not (info.st_mode & 0o170000 == 0o100000) or now - info.st_mtime < age:
            continue
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            try:
                os.lockf(fd, os.F_TLOCK, 0)
            except OSError:
                busy += 1          # a live writer holds it
                continue
            # Locked by us: no writer can hold it now, and none will take
            # it again (a writer locks only the file it has just created).
            os.unlink(path)
            removed += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed, busy


def maybe_sweep(spool: str, now: float, interval: float = INTERVAL, age: float = AGE) -> bool:
    """Sweep if the last sweep is more than `interval` ago; True if it swept."""
    stamp = os.path.join(spool, STAMP)
    try:
        if now - os.stat(stamp).st_mtime < interval:
            return False
        os.utime(stamp, (now, now))
    except FileNotFoundError:
        try:
            os.close(os.open(stamp, os.O_WRONLY | os.O_CREAT, 0o600))
        except OSError:
            return False
    except OSError:
        return False
    sweep(spool, now, age)
    return True
