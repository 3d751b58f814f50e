from __future__ import annotations

import httpx

from tests.conftest import Node
from tests.sse import open_stream


async def test_put_then_get_and_stream(node: Node, client: httpx.AsyncClient) -> None:
    response = await client.put("/profile", json={"name": "Ada"})
    assert response.status_code == 200
    version = response.json()["version"]
    assert response.headers["version"] == f'"{version}"'
    got = await client.get("/profile", headers={"Accept": "application/json"})
    assert got.json() == {"name": "Ada"}
    reader, stream = await open_stream(client, "/profile")
    try:
        first = await reader.data()
        assert first.id == str(version)
        assert first.json()["value"] == {"name": "Ada"}
        await client.patch(
            "/profile",
            content=b'{"bio": "math"}',
            headers={"Content-Type": "application/merge-patch+json"},
        )
        change = await reader.data()
        assert change.json()["value"] == {"name": "Ada", "bio": "math"}
        assert int(change.id or 0) > version
    finally:
        await stream.aclose()
