"""After the stream: records to drop so that the most specific rule wins,
and rules that can never match (pure).

A lookup finds the first record of a key.  Records of plain lines keep file
order (first line wins, as in the original).  A record of a wide CIDR rule
(a /9 written as sixteen-bit keys) must not hide a record of a more
specific rule with the same key, wherever the two lines are: such records
are dropped.  A line none of whose records is ever found gets a warning
naming the line(s) found instead.

Input comes from the finished cdb: its keys in record order and its
distinct keys in first-seen order, which is all it takes to find every
duplicate without holding all keys in memory.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from itertools import compress, count, islice
from operator import ne

from .compiler import LineMap
from .parse import show

BLOCK = 512
EXACT = 1 << 10  # specificity of any record that is not from a wide rule


class Resolution:
    """Record indices to drop; the first `limit` warnings (line, text) in
    line order; how many rules never match in all."""

    def __init__(self):
        self.drop: set[int] = set()
        self.warnings: list[tuple[int, str]] = []
        self.never_count = 0


def duplicate_records(all_keys: Iterable[bytes],
                      unique_keys: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """(record index, key) of each record whose key appeared before.

    A first occurrence is always the next distinct key not yet seen, so the
    two sequences match record for record except at duplicates.  They are
    compared a block at a time (C-level list equality) for speed.
    """
    records = iter(all_keys)
    distinct = iter(unique_keys)
    pending: list[bytes] = []
    index = 0
    while True:
        block = list(islice(records, BLOCK))
        if not block:
            return
        while block:
            if len(pending) < len(block):
                pending.extend(islice(distinct, len(block) - len(pending)))
            limit = min(len(block), len(pending))
            miss = next(compress(count(), map(ne, block, pending)), limit)
            if miss == len(block):
                index += miss
                del pending[:miss]
                break
            yield index + miss, block[miss]
            index += miss + 1
            del block[:miss + 1]
            del pending[:miss]


def _positions(all_keys: Iterable[bytes], wanted: set[bytes]) -> dict[bytes, list[int]]:
    found: dict[bytes, list[int]] = {}
    for index, key in enumerate(all_keys):
        if key in wanted:
            found.setdefault(key, []).append(index)
    return found


def resolve(total: int, linemap: LineMap, wide: list[tuple[int, int, int]],
            all_keys: Callable[[], Iterable[bytes]],
            unique_keys: Callable[[], Iterable[bytes]],
            distinct: int, limit: int = 100) -> Resolution:
    """Find records to drop and rules that never match.

    `wide` lists (first record, count, prefix length) of wide CIDR rules;
    `all_keys`/`unique_keys` return fresh iterators over the written cdb,
    `distinct` is its number of distinct keys.
    """
    result = Resolution()
    if distinct >= total:
        return result
    dups = list(duplicate_records(all_keys(), unique_keys()))
    starts = [first for first, _, _ in wide]

    def specificity(record: int) -> int:
        at = bisect_right(starts, record) - 1
        if at >= 0 and record < starts[at] + wide[at][1]:
            return wide[at][2]
        return EXACT

    winner: dict[bytes, int] = {}   # key -> the record a lookup finds
    losers: list[tuple[int, bytes]] = dups
    if wide:
        losers = []
        for key, records in _positions(all_keys(), {key for _, key in dups}).items():
            ranks = [specificity(r) for r in records]
            best = records[ranks.index(max(ranks))]
            winner[key] = best
            result.drop.update(r for r in records if r < best)
            losers.extend((r, key) for r in records if r != best)
        losers.sort()
    never = list(_never_lines(losers, linemap, total))
    result.never_count = len(never)
    shown = never[:limit]
    if not wide:
        wanted = {key for _, _, keys in shown for key in keys}
        winner = {key: records[0] for key, records in
                  _positions(_until_found(all_keys(), wanted), wanted).items()}
    for line, key, keys in shown:
        lines = sorted({linemap.line_of(winner[k]) for k in keys} - {line}) or [line]
        who = (f"line {lines[0]} matches" if len(lines) == 1
               else f"lines {lines[0]} and {len(lines) - 1} more match")
        result.warnings.append(
            (line, f"rule never matches: {who} every address it covers first "
                   f"(key \"{show(key)}\")"))
    return result


def first_lines(all_keys: Iterable[bytes], wanted: set[bytes],
                linemap: LineMap) -> dict[bytes, int]:
    """Line of the first record of each wanted key."""
    firsts = _positions(_until_found(all_keys, wanted), wanted)
    return {key: linemap.line_of(records[0]) for key, records in firsts.items()}


def _until_found(keys: Iterable[bytes], wanted: set[bytes]) -> Iterator[bytes]:
    """The keys up to the first occurrence of every wanted key."""
    left = set(wanted)
    for key in keys:
        yield key
        left.discard(key)
        if not left:
            return


def _never_lines(losers: list[tuple[int, bytes]], linemap: LineMap,
                 total: int) -> Iterator[tuple[int, bytes, list[bytes]]]:
    """(line, first key, keys) of each line all of whose records are
    losers; a line's records are contiguous, so they arrive together."""
    line = first = -1
    keys: list[bytes] = []
    for record, key in losers:
        owner = linemap.line_of(record)
        if owner != line:
            if keys and len(keys) == linemap.records_of(first, total):
                yield line, keys[0], keys
            line, first, keys = owner, record, []
        keys.append(key)
    if keys and len(keys) == linemap.records_of(first, total):
        yield line, keys[0], keys
