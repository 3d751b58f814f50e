"""What a Yjs document holds, and whether one signed update adds anything to it.

A Yjs state vector says which inserts a document holds (per client, every
clock below a bound) but nothing about deletions, and an update that only
deletes has no clock at all. So a :class:`Digest` is a Yjs *snapshot*: the
delete set and the state vector together (``Snapshot.from_doc(doc).encode()``,
delete set first). With it :func:`lacks` answers exactly "would this update
change a document in that state?", which is what catch-up between peers needs
(send precisely the entries the other side lacks) and what the bus needs to
tell a redundant entry from one whose parts wait for missing dependencies.

The structs of an update are measured by pycrdt's own diff against a state
vector (``get_update(update, sv)`` keeps exactly the structs the vector lacks,
and the update's whole delete set); only the delete set, a list of varuints,
is decoded here. Every function is pure and safe to call from a worker thread.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field

from pycrdt import get_update

EMPTY_STATE = b"\x00"  # a state vector with no clients

Ranges = list[tuple[int, int]]  # sorted, merged, non-adjacent [start, end) clock ranges


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def varuint(self) -> int:
        # Locals, not attributes, in the loop: client ids take five bytes, and each
        # entry a peer sends has some (about 7 µs an entry with attribute access).
        data, pos = self.data, self.pos
        value = shift = 0
        while pos < len(data):
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                self.pos = pos
                return value
            shift += 7
            if shift > 63:
                raise ValueError("varuint longer than 64 bits")
        raise ValueError("truncated varuint")


def _merge(ranges: list[tuple[int, int]]) -> Ranges:
    ranges.sort()
    merged: list[tuple[int, int]] = []
    for start, end in ranges:
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _read_delete_set(reader: _Reader) -> dict[int, Ranges]:
    deleted: dict[int, list[tuple[int, int]]] = {}
    for _ in range(reader.varuint()):
        client = reader.varuint()
        ranges = deleted.setdefault(client, [])
        for _ in range(reader.varuint()):
            clock = reader.varuint()
            length = reader.varuint()
            if length:
                ranges.append((clock, clock + length))
    return {client: _merge(ranges) for client, ranges in deleted.items() if ranges}


def _read_state_vector(reader: _Reader) -> dict[int, int]:
    return {reader.varuint(): reader.varuint() for _ in range(reader.varuint())}


def _write_varuint(value: int, out: bytearray) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def encode_state_vector(clocks: dict[int, int]) -> bytes:
    out = bytearray()
    _write_varuint(len(clocks), out)
    for client, clock in sorted(clocks.items()):
        _write_varuint(client, out)
        _write_varuint(clock, out)
    return bytes(out)


@dataclass(frozen=True, slots=True)
class Digest:
    """A document's state as a peer describes it: its inserts and its deletions."""

    clocks: dict[int, int] = field(default_factory=dict)
    deleted: dict[int, Ranges] = field(default_factory=dict)
    state_vector: bytes = EMPTY_STATE
    sealed: bool = False  # a sealed document: its entries are not Yjs, nothing can be compared

    @classmethod
    def decode(cls, snapshot: bytes) -> Digest:
        """Parse a Yjs v1 snapshot (delete set, then state vector); ValueError if malformed."""
        if not snapshot:
            return EMPTY
        if snapshot == SEALED_DIGEST:
            return SEALED
        reader = _Reader(snapshot)
        deleted = _read_delete_set(reader)
        start = reader.pos
        clocks = _read_state_vector(reader)
        if reader.pos != len(snapshot):
            raise ValueError("trailing bytes after the state vector")
        return cls(clocks, deleted, snapshot[start:])

    def covers(self, other: Digest) -> bool:
        """Whether a document in this state holds everything ``other`` holds (never, for
        sealed documents: their logs are exchanged whole, and dedup'd on arrival)."""
        if self.sealed or other.sealed:
            return False
        for client, clock in other.clocks.items():
            if self.clocks.get(client, 0) < clock:
                return False
        return all(
            _contains(self.deleted.get(client, []), start, end)
            for client, ranges in other.deleted.items()
            for start, end in ranges
        )


EMPTY = Digest()
SEALED_DIGEST = b"\xffsealed"  # what a sealed document's digest is instead of a snapshot
SEALED = Digest(sealed=True)


def _contains(ranges: Ranges, start: int, end: int) -> bool:
    index = bisect.bisect_right(ranges, (start, float("inf"))) - 1
    return index >= 0 and ranges[index][0] <= start and end <= ranges[index][1]


def _update_delete_set(update: bytes, state_vector: bytes) -> dict[int, Ranges] | None:
    """The update's delete set if a document at ``state_vector`` holds all its
    structs; None when some struct is missing there."""
    rest = get_update(update, state_vector)
    reader = _Reader(rest)
    if reader.varuint() != 0:
        return None
    return _read_delete_set(reader)


def lacks(update: bytes, digest: Digest) -> bool:
    """Whether applying ``update`` to a document in state ``digest`` would add anything.

    Raises ValueError if ``update`` is not a Yjs v1 update.
    """
    deleted = _update_delete_set(update, digest.state_vector)
    if deleted is None:
        return True
    return any(
        not _contains(digest.deleted.get(client, []), start, end)
        for client, ranges in deleted.items()
        for start, end in ranges
    )


def waiting(update: bytes, state_vector: bytes) -> bool:
    """Whether part of ``update`` cannot be integrated by a document at ``state_vector``:
    a struct it does not hold yet, or a deletion of one (Yjs keeps those pending).

    On every entry a peer sends, so it reads the delete set in place (no ranges
    built and merged) and the state vector only if something was deleted."""
    # What get_update leaves is all varuints (no structs: a struct count, then the
    # delete set), and so is a state vector: each is decoded in one pass.
    numbers = _varuints(get_update(update, state_vector))
    if not numbers or numbers[0] != 0:
        return True  # structs the document does not hold yet
    try:
        return _deletes_missing(numbers, state_vector)
    except IndexError:
        raise ValueError("truncated delete set") from None


def _deletes_missing(numbers: list[int], state_vector: bytes) -> bool:
    """Whether a delete set (after a zero struct count) names clocks past the state."""
    clocks: dict[int, int] | None = None
    at = 2
    for _ in range(numbers[1] if len(numbers) > 1 else 0):
        client, ranges = numbers[at], numbers[at + 1]
        at += 2
        for _ in range(ranges):
            clock, length = numbers[at], numbers[at + 1]
            at += 2
            if not length:
                continue
            if clocks is None:
                vector = _varuints(state_vector)
                clocks = dict(zip(vector[1::2], vector[2::2], strict=True))
            if clock + length > clocks.get(client, 0):
                return True
    return False


def _varuints(data: bytes) -> list[int]:
    """Every varuint in ``data``, in one loop over its bytes (a call per number cost
    more than the numbers: on every entry a peer sends)."""
    numbers: list[int] = []
    value = shift = 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            numbers.append(value)
            value = shift = 0
        else:
            shift += 7
            if shift > 63:
                raise ValueError("varuint longer than 64 bits")
    if shift:
        raise ValueError("truncated varuint")
    return numbers


def iter_ranges(deleted: dict[int, Ranges]) -> Iterator[tuple[int, int, int]]:
    """(client, start, end) of every deleted range, for tests and logs."""
    for client, ranges in sorted(deleted.items()):
        for start, end in ranges:
            yield client, start, end
