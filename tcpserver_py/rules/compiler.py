"""Streaming rules compiler: input lines -> cdb records (pure).

Records go to an `add(key, value)` callable (a cdb maker) in file order, as
the original does, so that duplicates keep "first line wins".  The common
line (`ADDRESS:INSTRUCTION` with an already-seen instruction and a plain
address) takes a fast path of a few C-level operations; ranges, CIDR blocks
and new instructions split at the first colon go straight to addr;
everything else (comments, IPv6, errors) goes through parse.

Keys of CIDR rules that are wider than the rule (a /9 written as sixteen-bit
keys) are noted: a more specific rule may produce the same key later in the
file, and then its record must be the one found.  shadow decides that
once the whole file is known.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from itertools import repeat
from operator import itemgetter

from .addr import AddressError, Keys, address_keys, ipv6_address
from .parse import (TRAILING_BLANKS, RuleSyntaxError, ipv6_split, parse_instruction,
                        parse_line, strip_line)

CARE_FIRST = (b"#", b" ", b"\t")  # comment, or a key that never matches
# An address containing one of these bytes takes the careful path: a range,
# a CIDR block, or maybe a comment or a leading blank (single bytes, so that
# a chunk without any is cleared by one memchr each).
CARE_BYTES = (b"-", b"/") + CARE_FIRST
FIRST = itemgetter(0)
THIRD = itemgetter(2)
INSTRUCTION_CACHE_LIMIT = 1 << 16
# Linux refuses any single environment string over 128 KiB (MAX_ARG_STRLEN),
# so a longer rule line could never reach a program: refuse it early
# instead of holding megabytes of a runaway line in memory.
MAX_LINE = 128 * 1024


def _lines_containing(joined: bytes, needle: bytes) -> list[int]:
    """Indices of the newline-separated parts of `joined` containing the
    byte `needle`."""
    found = []
    pos = joined.find(needle)
    line = 0
    counted_to = 0
    while pos != -1:
        line += joined.count(b"\n", counted_to, pos + 1)
        counted_to = pos + 1
        found.append(line)
        pos = joined.find(needle, pos + 1)
    return found


class CompileError(ValueError):
    """A parse error on a numbered line (the original's exit 100)."""

    def __init__(self, lineno: int, line: bytes, reason: str):
        super().__init__(f"line {lineno}: {reason}")
        self.lineno = lineno
        self.line = line
        self.reason = reason


class LineMap:
    """Record index -> input line number, stored only where the plain
    "one record per line" rhythm breaks (comments, ranges, CIDR ...)."""

    def __init__(self):
        self.starts = [0]      # first record index of each segment
        self.lines = [1]       # line number of that record
        self.steps = [1]       # 1: one record per line; 0: all from one line

    def mark_line(self, record: int, line: int, written: int) -> None:
        """Line `line` wrote `written` records (not one) from `record` on;
        the one-record-per-line rhythm resumes after them."""
        if self.starts[-1] == record:  # an empty segment: replace it
            del self.starts[-1], self.lines[-1], self.steps[-1]
        if written:
            self.starts.append(record)
            self.lines.append(line)
            self.steps.append(0)
        self.starts.append(record + written)
        self.lines.append(line + 1)
        self.steps.append(1)

    def line_of(self, record: int) -> int:
        seg = bisect_right(self.starts, record) - 1
        return self.lines[seg] + self.steps[seg] * (record - self.starts[seg])

    def records_of(self, record: int, total: int) -> int:
        """How many records the line that wrote `record` wrote."""
        seg = bisect_right(self.starts, record) - 1
        if self.steps[seg]:
            return 1
        end = self.starts[seg + 1] if seg + 1 < len(self.starts) else total
        return end - self.starts[seg]


class Compiler:
    """Feed chunks of input, then finish(); `warn(lineno, text)` reports."""

    def __init__(self, add: Callable[[bytes, bytes], object],
                 warn: Callable[[int, str], None]):
        self._add = add
        self._warn = warn
        self._values: dict[bytes, bytes] = {b"allow": b"", b"deny": b"D\0"}
        self._tail = b""
        self._next_line = 1
        self._run_record = 0   # record index where the current 1:1 run starts
        self._run_line = 1     # line number where it starts
        self.linemap = LineMap()
        # (first record, record count, prefix length) of each CIDR rule whose
        # keys are wider than the rule: a more specific rule may share a key.
        self.wide: list[tuple[int, int, int]] = []

    @property
    def records(self) -> int:
        """Records written so far (all lines before `_next_line`)."""
        return self._run_record + (self._next_line - self._run_line)

    def feed(self, chunk: bytes) -> None:
        lines = (self._tail + chunk).split(b"\n")
        self._tail = lines.pop()
        # Only the first line can be too long when the chunk itself is short
        # enough (the tail before it was checked last time).
        longest = len(lines[0]) if lines else 0
        if len(chunk) > MAX_LINE and lines:
            longest = max(map(len, lines))
        if longest > MAX_LINE:
            for offset, line in enumerate(lines):
                if len(line) > MAX_LINE:
                    self._compile(lines[:offset])  # earlier errors come first
                    self._too_long(self._next_line, line)
        self._compile(lines)
        if len(self._tail) > MAX_LINE:
            self._too_long(self._next_line, self._tail)

    def finish(self) -> None:
        if self._tail:
            tail, self._tail = self._tail, b""
            self._compile([tail])

    def _too_long(self, lineno: int, line: bytes) -> None:
        raise CompileError(lineno, line, f"line is longer than {MAX_LINE} bytes")

    def _compile(self, lines: list[bytes]) -> None:
        # The hot path works on whole lists with C-level loops (split,
        # partition, dict lookups, map into the maker); only lines that need
        # a second look -- an instruction not seen before, an address with a
        # range, a CIDR, a leading '#'/blank, no colon -- go to _careful().
        if not lines:
            return
        parts = [line.partition(b":") for line in lines]
        addrs = list(map(FIRST, parts))
        try:
            values = list(map(self._values.__getitem__, map(THIRD, parts)))
            missing = False
        except KeyError:  # some instruction not seen before: find them
            values = list(map(self._values.get, map(THIRD, parts)))
            missing = True
        count = len(lines)
        careful: set[int] = set()
        if missing:
            index = values.index(None)
            while True:
                careful.add(index)
                try:
                    index = values.index(None, index + 1)
                except ValueError:
                    break
        joined = b"\n".join(addrs)
        for needle in CARE_BYTES:
            if needle in joined:
                careful.update(_lines_containing(joined, needle))
        add = self._add
        first_line = self._next_line
        start = 0
        for index in sorted(careful):
            if index > start:
                deque(map(add, addrs[start:index], values[start:index]), 0)
            self._careful(first_line + index, lines[index], addrs[index], values[index])
            start = index + 1
        if start == 0:
            deque(map(add, addrs, values), 0)
        elif start < count:
            deque(map(add, addrs[start:], values[start:]), 0)
        self._next_line += count

    def _careful(self, lineno: int, line: bytes, addr: bytes, value: bytes | None) -> None:
        """`addr` is the text before the first colon (all of a line without
        one), `value` the cached value of the text after it, or None."""
        compiled = None if addr.startswith(CARE_FIRST) else self._well_formed(line, addr, value)
        if compiled is not None:
            keys, value = compiled
            self._emit(lineno, keys.keys, value, keys.prefixlen, keys.granular, keys.note)
            return
        # Comments, blanks, no colon, errors: the full parser decides and explains.
        try:
            parsed = parse_line(line, self._values)
        except RuleSyntaxError as error:
            raise CompileError(lineno, strip_line(line), error.reason) from None
        self._emit(lineno, parsed.keys, parsed.value, parsed.prefixlen, parsed.granular,
                   parsed.warning)

    def _well_formed(self, line: bytes, addr: bytes, value: bytes | None
                     ) -> tuple[Keys, bytes] | None:
        """Keys and value of a line that compiles (a range, a CIDR block, an
        IPv6 line, a new instruction), split as parse_line splits it; None
        leaves the line to parse_line."""
        compile_address = address_keys
        if value is None:
            if len(addr) == len(line):
                return None  # no colon
            instruction = line[len(addr) + 1:]
            if not instruction.startswith((b"allow", b"deny")):
                # The first-colon split fails: maybe an IPv6 line.
                split = ipv6_split(line)
                if split is None:
                    return None
                addr, instruction = split
                compile_address = ipv6_address
            value = self._instruction_value(instruction)
            if value is None:
                return None
        try:
            return compile_address(addr), value
        except AddressError:
            return None

    def _instruction_value(self, instruction: bytes) -> bytes | None:
        """The value of an instruction text (cached), or None when it does
        not parse."""
        value = self._values.get(instruction)
        if value is None:
            try:
                value = parse_instruction(instruction.rstrip(TRAILING_BLANKS))
            except RuleSyntaxError:
                return None
            if len(self._values) < INSTRUCTION_CACHE_LIMIT:
                self._values[instruction] = value
        return value

    def _emit(self, lineno: int, keys: tuple[bytes, ...], value: bytes,
              prefixlen: int | None, granular: bool, warning: str | None) -> None:
        """Write one line's records; note where the one-record-per-line
        rhythm breaks and which records belong to a wide CIDR rule."""
        if warning:
            self._warn(lineno, warning)
        written = len(keys)
        if written == 1:
            self._add(keys[0], value)
            return
        record = self._run_record + (lineno - self._run_line)
        if written:
            deque(map(self._add, keys, repeat(value, written)), 0)
            if not granular:
                self.wide.append((record, written, prefixlen))
        self.linemap.mark_line(record, lineno, written)
        self._run_record, self._run_line = record + written, lineno + 1
