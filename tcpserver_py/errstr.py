"""djb `error_str` texts for errno values, as ucspi-tcp prints them.

The C programs print these short lower-case phrases instead of strerror(3);
log scrapers and administrators' muscle memory depend on them.
"""

import errno

_TEXTS = {
    errno.EINTR: "interrupted system call",
    errno.ENOMEM: "out of memory",
    errno.ENOENT: "file does not exist",
    errno.ENOTDIR: "not a directory",
    errno.EISDIR: "is a directory",
    errno.EACCES: "access denied",
    errno.EPERM: "permission denied",
    errno.EEXIST: "file already exists",
    errno.EAGAIN: "temporary failure",
    errno.EIO: "input/output error",
    errno.EBADF: "file descriptor not open",
    errno.EINVAL: "invalid argument",
    errno.ENOSPC: "out of disk space",
    errno.EROFS: "read-only file system",
    errno.EXDEV: "cross-device link",
    errno.EPIPE: "broken pipe",
    errno.EMFILE: "out of file descriptors",
    errno.ENFILE: "file table overflow",
    errno.ETIMEDOUT: "timed out",
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EADDRINUSE: "address already used",
    errno.EADDRNOTAVAIL: "address not available",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENOTCONN: "not connected",
    errno.EPROTO: "protocol error",
    errno.ELOOP: "symbolic link loop",
    errno.ENAMETOOLONG: "file name too long",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENOTSOCK: "not a socket",
    errno.EAFNOSUPPORT: "address family not supported",
    errno.ENOEXEC: "exec format error",
}


def error_str(err: int | None) -> str:
    """Return the djb-style text for an errno value."""
    return _TEXTS.get(err, "unknown error")
