"""The order in which a session takes a peer's batches of frames, whatever order they arrive in.

A dialler keeps up to ``PUSHES_IN_FLIGHT`` pushes in flight (each POST answered
only once durable), numbered 0, 1, 2, … in each session; the reader of a
stream numbers its chunks the same way. :class:`Order` gives each number its
turn in sequence: a batch is applied only after every earlier one was, and
the turn passes on as soon as the batch is handed to the store, so the next
batch is applied while this one commits (the two used to take turns, and the
verifying threads idled through every commit).

A batch refused over the peer's speed bump (charged as it arrives, before any
of it is verified) has to come again: the ones after it are refused too, and
nothing of them is stored, until it does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from ..errors import ProtocolError, QuotaExceeded

PUSHES_IN_FLIGHT = 2  # what a dialler sends before it waits for an answer
WINDOW = 8  # how far ahead of its turn a batch may arrive (each waiting one holds its body)


class Order:
    """Owned by a :class:`Session`; one number per batch, each taken once."""

    def __init__(self, window: int = WINDOW) -> None:
        self._window = window
        self._next = 0  # the number whose turn it is
        self._holding = False  # whether the batch numbered _next has its turn
        self._arrived: set[int] = set()  # numbers that arrived and are not taken yet
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._refused: tuple[int, QuotaExceeded] | None = None  # must come again, and why
        self._closed = False

    @property
    def taken(self) -> int:
        """Batches taken so far (the number of the next one)."""
        return self._next

    @property
    def waiting(self) -> int:
        """Batches that arrived before their turn and wait for it."""
        return len(self._waiting)

    def arrive(self, number: int) -> None:
        """Note a batch as it arrives (no wait). ProtocolError for a number sent twice or
        too far ahead; QuotaExceeded while an earlier batch was refused and not sent again."""
        if self._closed:
            raise ProtocolError("the session closed")
        if number < self._next or number in self._arrived:
            raise ProtocolError(f"batch {number} was sent twice")
        if number >= self._next + self._window:
            raise ProtocolError(
                f"batch {number} is more than {self._window} ahead of batch {self._next}, "
                "which has not arrived"
            )
        if self._refused is not None:
            refused, why = self._refused
            if number > refused:
                raise _come_first(refused, why)
            if number == refused:
                self._refused = None  # it came again
        self._arrived.add(number)

    def refuse(self, number: int, why: QuotaExceeded) -> None:
        """An arrived batch was over the speed bump: it must come again before any later
        one is taken; those waiting already are refused."""
        self._arrived.discard(number)
        if self._refused is None or number < self._refused[0]:
            self._refused = (number, why)
        for waiting, future in self._waiting.items():
            if waiting > number and not future.done():
                future.set_exception(_come_first(number, why))

    def leave(self, number: int) -> None:
        """An arrived batch will not be taken (its push failed before its turn)."""
        self._arrived.discard(number)

    @contextlib.asynccontextmanager
    async def turn(self, number: int) -> AsyncIterator[Callable[[], None]]:
        """Wait for an arrived batch's turn and hold it; yields the call that passes it on
        early (the batch is staged), and passes it on at the end anyway."""
        try:
            await self._wait(number)
            self._holding = True
            yield lambda: self._pass(number)
        finally:
            self._arrived.discard(number)
            self._pass(number)

    def close(self) -> None:
        """The session ended: every batch still waiting for its turn fails."""
        self._closed = True
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ProtocolError("the session closed"))

    async def _wait(self, number: int) -> None:
        if self._closed:
            raise ProtocolError("the session closed")
        if number == self._next:
            return
        future = self._waiting[number] = asyncio.get_running_loop().create_future()
        try:
            await future
        finally:
            del self._waiting[number]

    def _pass(self, number: int) -> None:
        if number != self._next or not self._holding:
            return  # passed on already, or never held
        self._next += 1
        self._holding = False
        future = self._waiting.get(self._next)
        if future is not None and not future.done():
            future.set_result(None)


def _come_first(number: int, why: QuotaExceeded) -> QuotaExceeded:
    return QuotaExceeded(
        f"batch {number} was over the limit and must come first: {why.detail}",
        retry_after=why.retry_after,
        limit=why.limit,
    )
