from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.browser import Pages, pages_for


@pytest.fixture
async def pages(request: pytest.FixtureRequest) -> AsyncIterator[Pages]:
    async with pages_for(request) as opened:
        yield opened
