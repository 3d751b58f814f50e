"""Speed bumps: per-peer and per-visitor limits, so that nobody else can flood a node.

Each principal (a peer's node id, or a visitor's address) has token buckets
that refill continuously: bytes written and updates written per minute, and
requests per minute for visitors; plus a cap on streams held open at once and
on the size of any one document a peer writes. Past a limit the request is
refused with 429 (and ``Retry-After``) or 413, before anything is stored. The
owner is never limited. Buckets of principals that went quiet are forgotten,
so the table stays bounded however many addresses come by.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import PayloadTooLarge, QuotaExceeded

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    write_bytes_per_minute: int = 64 * MiB
    writes_per_minute: int = 6000
    requests_per_minute: int = 3000
    open_streams: int = 64
    document_bytes: int = 32 * MiB


class _Bucket:
    __slots__ = ("level", "stamp")

    def __init__(self, level: float, stamp: float) -> None:
        self.level = level
        self.stamp = stamp


class SpeedBumps:
    """The buckets of every principal. One per node, owned by the server's lifespan."""

    def __init__(
        self,
        limits: Limits,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_principals: int = 10_000,
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._max = max_principals
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()
        self._streams: dict[str, int] = {}

    def _take(self, principal: str, kind: str, per_minute: int, amount: float) -> None:
        now = self._clock()
        rate = per_minute / 60.0
        bucket = self._buckets.pop((principal, kind), None)
        if bucket is None:
            bucket = _Bucket(float(per_minute), now)
        bucket.level = min(float(per_minute), bucket.level + (now - bucket.stamp) * rate)
        bucket.stamp = now
        self._buckets[(principal, kind)] = bucket  # most recently used last
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        if amount > bucket.level:
            wait = (amount - bucket.level) / rate if rate else 60.0
            raise QuotaExceeded(
                f"{principal} is over its limit of {per_minute} {kind} per minute; "
                f"retry in {wait:.1f} s",
                retry_after=wait,
                limit=kind,
            )
        bucket.level -= amount

    def request(self, principal: str) -> None:
        """Count one request of a visitor."""
        self._take(principal, "requests", self.limits.requests_per_minute, 1)

    def write(self, principal: str, *, updates: int, nbytes: int) -> None:
        """Charge a peer's write before it is stored; all or nothing."""
        if nbytes > self.limits.write_bytes_per_minute:
            raise PayloadTooLarge(
                f"{nbytes} bytes in one go is over {principal}'s limit per minute",
                limit=self.limits.write_bytes_per_minute,
            )
        self._take(principal, "updates", self.limits.writes_per_minute, updates)
        try:
            self._take(principal, "bytes", self.limits.write_bytes_per_minute, nbytes)
        except QuotaExceeded:
            self._buckets[(principal, "updates")].level += updates  # refund: nothing stored
            raise

    def document(self, size: int) -> None:
        """Refuse to let a peer grow one document past the limit."""
        if size > self.limits.document_bytes:
            raise PayloadTooLarge(
                f"the document would grow to {size} bytes, over the limit of "
                f"{self.limits.document_bytes}",
                limit=self.limits.document_bytes,
            )

    @contextmanager
    def stream(self, principal: str) -> Iterator[None]:
        """Hold one of the principal's open streams for the ``with`` block."""
        held = self._streams.get(principal, 0)
        if held >= self.limits.open_streams:
            raise QuotaExceeded(
                f"{principal} holds {held} open streams, the most allowed; close one first",
                retry_after=5.0,
                limit="streams",
            )
        self._streams[principal] = held + 1
        try:
            yield
        finally:
            left = self._streams[principal] - 1
            if left:
                self._streams[principal] = left
            else:
                del self._streams[principal]
