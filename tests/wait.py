"""Waiting on a node-side condition in tests: under a deadline, never a fixed sleep."""

from __future__ import annotations

from collections.abc import Callable

import anyio


async def eventually(condition: Callable[[], bool], within: float = 10) -> None:
    """Wait until ``condition()`` holds (for state with no event to wait on)."""
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110  (polls the node's own state, not a sleep)
            await anyio.sleep(0.02)
