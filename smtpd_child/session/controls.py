"""What the control files say, parsed once per contents (pure).

smtpd-child reads every control file whole before its greeting
(startup.py) and makes sense of them after it (config.py).  That parse is
a pure function of the bytes read, so its result is kept with those bytes
and reused whenever a later read gives exactly the same bytes: the
comparison is made on what this connection read itself, so an
administrator's edit takes effect on the next connection, as without the
memo (no stat, no race).  Under `tcpserver --preload` the memo is warmed in
the server before it forks (main.prepare_preloaded), so a child whose files
are unchanged skips the parse.

The memo holds one entry, the latest contents, never a history.  Its
values are immutable (frozensets, bytes, ints), so sessions share them and
none can change them for the next.  What depends on the environment
(RELAYCLIENT, DATABYTES, TARPIT*, SMTPAUTH, ...), the clock or the file
system (morercpthosts.cdb, servercert.pem, bin/qmail-queue) is not here:
config.py applies it per session.
"""

from smtpd_child.startup import first_line, number


def list_entries(data):
    """Entries of a list control file (None stays None): every line, trailing
    spaces, tabs and the newline stripped, empty and `#` lines skipped."""
    if data is None:
        return None
    entries = []
    for line in data.split(b"\n"):
        line = line.rstrip(b" \t\n")
        if line and not line.startswith(b"#"):
            # qmail's constmap takes NUL-separated entries: a NUL splits a line.
            entries.extend(line.split(b"\0"))
    return entries


def lookup_set(data):
    """A list file as the relay policy looks it up: its entries lower-cased,
    as a frozenset; None for a missing file."""
    entries = list_entries(data)
    if entries is None:
        return None
    return frozenset(entry.lower() for entry in entries)


class Controls:
    """The control files' values (startup.read's `files`: name -> bytes, or
    None when missing; a name absent when the file was not read)."""

    __slots__ = ("local_ip_host", "databytes", "rcpthosts", "badmailfrom", "tarpitcount",
                 "tarpitdelay", "tls_ciphers", "tls_protocols")

    def __init__(self, files):
        local_ip_host = first_line(files[b"localiphost"])
        self.local_ip_host = first_line(files[b"me"]) if local_ip_host is None else local_ip_host
        self.databytes = number(files[b"databytes"], 0)
        self.rcpthosts = lookup_set(files[b"rcpthosts"])
        self.badmailfrom = lookup_set(files[b"badmailfrom"]) or frozenset()
        # First lines; read only when TARPITCOUNT/TARPITDELAY is unset.
        self.tarpitcount = first_line(files.get(b"tarpitcount"))
        self.tarpitdelay = first_line(files.get(b"tarpitdelay"))
        self.tls_ciphers = first_line(files.get(b"tlsciphers"))
        self.tls_protocols = files.get(b"tlsprotocols")


_last = []          # [(files, Controls)]: the latest contents only


def parsed(files) -> Controls:
    """Controls(files), from the memo when the files read are byte for byte
    those of the last parse."""
    if _last and _last[0][0] == files:
        return _last[0][1]
    controls = Controls(files)
    _last[:] = [(dict(files), controls)]
    return controls
