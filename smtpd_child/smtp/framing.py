"""Byte framing of the SMTP stream: command lines and the DATA section.

Both readers keep memory bounded whatever the client sends: a command line
longer than MAX_COMMAND_LINE is dropped while it streams in (the caller answers
500), and DATA is decoded line by line with over-long lines passed through in
pieces.  DATA decoding follows qmail-smtpd's blast(): CR LF becomes LF, a `.`
starting a line is removed, `.` CR LF ends the data, a bare CR is kept, and a
bare LF anywhere is fatal (qmail's 451 and disconnect; this is what makes
`<LF>.<CR><LF>` smuggling impossible).
"""

MAX_COMMAND_LINE = 512      # bytes including the line end (RFC 5321 4.5.3.1.4)
DATA_PIECE = 65536          # an unfinished DATA line is passed on in pieces this big

TOO_LONG = object()         # next_line() result for a dropped over-long line


class LineReader:
    """Command lines: split at LF, one trailing CR removed (qmail's getln)."""

    def __init__(self, limit: int = MAX_COMMAND_LINE):
        self.limit = limit
        self.buffer = bytearray()
        self.discarding = False

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def next_line(self):
        """A complete line (bytes), TOO_LONG, or None when more input is needed."""
        if self.discarding:
            end = self.buffer.find(b"\n")
            if end < 0:
                self.buffer.clear()
                return None
            del self.buffer[:end + 1]
            self.discarding = False
            return TOO_LONG
        end = self.buffer.find(b"\n", 0, self.limit)
        if end < 0:
            if len(self.buffer) >= self.limit:
                self.discarding = True
                return self.next_line()
            return None
        line = bytes(self.buffer[:end])
        del self.buffer[:end + 1]
        if line.endswith(b"\r"):
            line = line[:-1]
        return line

    def take_rest(self) -> bytes:
        """Hand the unread bytes to another reader (the DATA decoder)."""
        rest = bytes(self.buffer)
        self.buffer.clear()
        return rest


# DataDecoder.feed() statuses
MORE = "more"           # the final dot has not been seen yet
END = "end"             # `.` CR LF seen; the rest belongs to the command stream
BARE_LF = "bare-lf"     # a LF without CR: qmail answers 451 and disconnects

MAX_HOPS = 100
SKIP_KEEP = 16          # skip() keeps at most this much of an unfinished line


class DataDecoder:
    """Decode one DATA section; also counts qmail's hops in the header.

    Like qmail, the header ends at the first empty line and a hop is a header
    line starting (any case) with `received` or `delivered`, counted on the
    raw client bytes.
    """

    def __init__(self):
        self.partial = b""        # raw bytes of an unfinished line
        self.line_start = True    # does `partial` start at the beginning of a line?
        self.in_header = True
        self.hops = 0

    def feed(self, data: bytes):
        """Returns (decoded bytes, status, bytes left over after the final dot)."""
        buf = self.partial + data if self.partial else data
        out = []
        pos = 0
        while True:
            end = buf.find(b"\n", pos)
            if end < 0:
                break
            line = buf[pos:end]
            pos = end + 1
            if not line.endswith(b"\r"):
                self.partial = b""
                return b"".join(out), BARE_LF, b""
            content = line[:-1]
            if self.line_start:
                if content == b".":
                    self.partial = b""
                    return b"".join(out), END, buf[pos:]
                self._count_hop(line)
                content = self._unstuff(content)
            out.append(content)
            out.append(b"\n")
            self.line_start = True
        rest = buf[pos:]
        if len(rest) > DATA_PIECE:
            # Pass a long line on, but keep its last byte: it may be the CR of CR LF.
            piece = rest[:-1]
            if self.line_start:
                self._count_hop(piece)
                piece = self._unstuff(piece)
            out.append(piece)
            rest = rest[-1:]
            self.line_start = False
        self.partial = rest
        return b"".join(out), MORE, b""

    def skip(self, data: bytes):
        """feed() for a message already refused (over databytes, or looping).

        Nothing is decoded: the end line and a bare LF are found and the hops
        still counted (qmail answers 554 for hops before 552 for size) with a
        few scans over the whole chunk instead of a loop per line, so a client
        that goes on sending costs little.  Returns what feed() returns, with
        empty decoded bytes.
        """
        buf = self.partial + data if self.partial else data
        last = buf.rfind(b"\n")
        if self.line_start and buf.startswith(b".\r\n"):
            end = 0
        else:
            found = buf.find(b"\n.\r\n")
            end = found + 1 if found >= 0 else -1
        whole = end if end >= 0 else last + 1     # buf[:whole]: complete lines before the end
        if buf.count(b"\n", 0, whole) != buf.count(b"\r\n", 0, whole):
            self.partial = b""
            return b"", BARE_LF, b""
        if self.in_header and whole:
            self._count_hops_in(buf[:whole])
        if end >= 0:
            self.partial = b""
            return b"", END, buf[end + 3:]
        if last >= 0:
            self.line_start = True
        rest = buf[last + 1:]
        if len(rest) > SKIP_KEEP:
            # Only a line's first bytes matter here (`.` CR, a hop's name) and
            # its last (the CR of CR LF): keep the partial line short.
            if self.line_start and self.in_header:
                self._count_hop(rest[:-1])
            rest = rest[-1:]
            self.line_start = False
        self.partial = rest
        return b"", MORE, b""

    def _count_hops_in(self, whole: bytes) -> None:
        """_count_hop() for every line start in complete lines, by whole-chunk scans."""
        if self.line_start and whole.startswith(b"\r\n"):
            self.in_header = False
            return
        header_end = whole.find(b"\n\r\n")
        if header_end >= 0:
            whole = whole[:header_end + 1]
            self.in_header = False
        low = whole.lower()
        self.hops += low.count(b"\nreceived") + low.count(b"\ndelivered")
        if self.line_start and (low.startswith(b"received") or low.startswith(b"delivered")):
            self.hops += 1

    def _count_hop(self, raw_line: bytes) -> None:
        if not self.in_header:
            return
        if raw_line == b"\r":
            self.in_header = False
        elif raw_line[:8].lower() == b"received" or raw_line[:9].lower() == b"delivered":
            self.hops += 1

    @staticmethod
    def _unstuff(content: bytes) -> bytes:
        # qmail quirk kept: `.` CR followed by something else keeps the dot.
        if content[:1] == b"." and content[1:2] != b"\r":
            return content[1:]
        return content
