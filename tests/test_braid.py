"""Braid-HTTP subscriptions (``statebus/server/_braid.py``), read as raw bytes."""

from __future__ import annotations

import httpx
import pytest

from tests.braid import subscribe
from tests.conftest import Node
from tests.sse import open_stream

JSON = {"Content-Type": "application/json"}


async def put(client: httpx.AsyncClient, path: str, value: object, **headers: str) -> int:
    response = await client.put(path, json=value, headers=headers)
    assert response.status_code == 200, response.text
    version: int = response.json()["version"]
    return version


async def test_subscription_sends_the_value_then_each_change(client: httpx.AsyncClient) -> None:
    reader, stream = await subscribe(client, "/doc")
    try:
        assert stream.headers["cache-control"] == "no-store"
        assert stream.headers["x-accel-buffering"] == "no"
        assert "heartbeats" not in stream.headers
        first = await reader.block()
        assert first.version == '"0"'
        assert first.parents is None
        assert first.headers["content-type"] == "application/json"
        assert first.json() is None  # never written
        v1 = await put(client, "/doc", {"name": "Ada"})
        second = await reader.block()
        assert (second.version, second.parents) == (f'"{v1}"', '"0"')
        assert second.json() == {"name": "Ada"}
        v2 = await put(client, "/doc", {"name": "Ada", "emoji": "😀"})
        third = await reader.block()
        assert (third.version, third.parents) == (f'"{v2}"', f'"{v1}"')
        assert third.json() == {"name": "Ada", "emoji": "😀"}
        assert "😀".encode() in third.body  # UTF-8, not escaped
        assert third.headers["content-length"] == str(len(third.body))
        assert (await client.delete("/doc")).status_code == 200
        assert (await reader.block()).json() is None
    finally:
        await stream.aclose()


async def test_the_first_block_of_a_written_key_is_its_value(client: httpx.AsyncClient) -> None:
    version = await put(client, "/written", {"a": [1, 2.5, None]})
    reader, stream = await subscribe(client, "/written")
    try:
        first = await reader.block()
        assert (first.version, first.parents) == (f'"{version}"', None)
        assert first.json() == {"a": [1, 2.5, None]}
    finally:
        await stream.aclose()


@pytest.mark.parametrize("value", ["?1", "true", "", "True"])
async def test_subscribe_values(client: httpx.AsyncClient, value: str) -> None:
    async with client.stream("GET", "/doc", headers={"Subscribe": value}) as response:
        assert response.status_code == 209


@pytest.mark.parametrize(
    "headers",
    [
        {"Subscribe": "?0"},
        {"Subscribe": "false"},
        {"Subscribe": "true", "Accept": "text/event-stream"},
        {"Accept": "*/*"},  # curl -N
    ],
)
async def test_sse_stays_the_answer_otherwise(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    reader, stream = await open_stream(client, "/doc", headers)
    try:
        assert (await reader.data()).json()["value"] is None
    finally:
        await stream.aclose()


async def test_reconnecting_with_parents_resumes_from_there(client: httpx.AsyncClient) -> None:
    v1 = await put(client, "/resume", {"n": 1})
    v2 = await put(client, "/resume", {"n": 2})
    v3 = await put(client, "/resume", {"n": 3})
    reader, stream = await subscribe(client, "/resume", {"Parents": f'"{v1}"'})
    try:
        second = await reader.block()
        assert (second.version, second.parents, second.json()) == (f'"{v2}"', f'"{v1}"', {"n": 2})
        third = await reader.block()
        assert (third.version, third.parents, third.json()) == (f'"{v3}"', f'"{v2}"', {"n": 3})
    finally:
        await stream.aclose()
    # Up to date: nothing until the next change, which names the client's parents.
    reader, stream = await subscribe(client, "/resume", {"Parents": f'"{v3}"'})
    try:
        v4 = await put(client, "/resume", {"n": 4})
        fourth = await reader.block()
        assert (fourth.version, fourth.parents, fourth.json()) == (f'"{v4}"', f'"{v3}"', {"n": 4})
    finally:
        await stream.aclose()


async def test_parents_from_elsewhere_start_afresh(client: httpx.AsyncClient) -> None:
    version = await put(client, "/fresh", {"n": 1})
    for parents in ['"not-ours"', '"99999"']:
        reader, stream = await subscribe(client, "/fresh", {"Parents": parents})
        try:
            first = await reader.block()
            assert (first.version, first.parents) == (f'"{version}"', None)
            assert first.json() == {"n": 1}
        finally:
            await stream.aclose()


async def test_heartbeats_when_asked(client: httpx.AsyncClient) -> None:
    reader, stream = await subscribe(client, "/beat", {"Heartbeats": "1s"})
    try:
        assert stream.headers["heartbeats"] == "1s"
        await reader.block()
        await reader.blank_lines_after_block(2)  # the block's separator
        await reader.blank_lines_after_block(4, within=5)  # then two heartbeats
    finally:
        await stream.aclose()


async def test_a_peers_own_writes_are_not_echoed_to_it(client: httpx.AsyncClient) -> None:
    v0 = await put(client, "/peer", {"n": 0})
    reader, stream = await subscribe(client, "/peer", {"Peer": "alice"})
    try:
        assert (await reader.block()).version == f'"{v0}"'
        await put(client, "/peer", {"n": 1}, Peer="alice")
        v2 = await put(client, "/peer", {"n": 2}, Peer="bob")
        block = await reader.block()
        assert (block.version, block.parents, block.json()) == (f'"{v2}"', f'"{v0}"', {"n": 2})
    finally:
        await stream.aclose()


async def test_an_sse_reader_with_a_peer_header_is_not_echoed_either(
    client: httpx.AsyncClient,
) -> None:
    reader, stream = await open_stream(client, "/peer-sse", {"Peer": "alice"})
    try:
        assert (await reader.data()).json()["value"] is None
        await put(client, "/peer-sse", {"n": 1}, Peer="alice")
        await put(client, "/peer-sse", {"n": 2})
        assert (await reader.data()).json()["value"] == {"n": 2}
    finally:
        await stream.aclose()


async def test_put_with_version_and_parents_is_accepted(client: httpx.AsyncClient) -> None:
    version = await put(client, "/braid-put", {"n": 1}, Version='"client-1"', Parents='"0"')
    response = await client.get("/braid-put", headers={"Accept": "application/json"})
    assert response.json() == {"n": 1}
    assert response.headers["version"] == f'"{version}"'


async def test_parents_that_are_not_versions_are_refused_and_change_nothing(
    client: httpx.AsyncClient,
) -> None:
    await put(client, "/parented", {"n": 1})
    response = await client.put(
        "/parented", content=b'{"n": 2}', headers={**JSON, "Parents": '"abc"'}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_body"
    assert "Parents must list versions" in response.json()["detail"]
    assert '"abc"' in response.json()["detail"]
    current = await client.get("/parented", headers={"Accept": "application/json"})
    assert current.json() == {"n": 1}


@pytest.mark.parametrize("header", [{"Content-Range": "json .n"}, {"Patches": "1"}])
async def test_range_patches_are_refused_and_change_nothing(
    client: httpx.AsyncClient, header: dict[str, str]
) -> None:
    await put(client, "/ranged", {"n": 1, "m": 2})
    response = await client.put("/ranged", content=b'{"x": 3}', headers={**JSON, **header})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_body"
    got = await client.get("/ranged", headers={"Accept": "application/json"})
    assert got.json() == {"n": 1, "m": 2}


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/posts/", {}),
        ("/doc", {"Accept": "application/octet-stream"}),
    ],
)
async def test_what_a_braid_subscription_cannot_answer(
    client: httpx.AsyncClient, path: str, headers: dict[str, str]
) -> None:
    response = await client.get(path, headers={"Subscribe": "true", **headers})
    assert response.status_code == 406
    assert response.json()["error"] == "not_acceptable"


async def test_head_with_subscribe_is_a_plain_head(client: httpx.AsyncClient) -> None:
    version = await put(client, "/headed", {"n": 1})
    response = await client.head("/headed", headers={"Subscribe": "true"})
    assert response.status_code == 200
    assert response.headers["version"] == f'"{version}"'


async def test_a_private_key_is_absent_to_a_visitor(node: Node) -> None:
    async with node.client() as owner:
        await owner.put("/doc", json={"secret": True})
    async with node.client(owner=False) as anonymous:
        response = await anonymous.get("/doc", headers={"Subscribe": "true"})
    assert response.status_code == 404


async def test_streams_end_when_the_node_stops(node: Node, client: httpx.AsyncClient) -> None:
    reader, stream = await subscribe(client, "/doc")
    try:
        await reader.block()
        await node.stop()
        with pytest.raises(EOFError):
            await reader.block()
    finally:
        await stream.aclose()


async def test_parents_compacted_away_get_the_whole_value(
    node: Node, client: httpx.AsyncClient
) -> None:
    v1 = await put(client, "/squashed", {"n": 1})
    await put(client, "/squashed", {"n": 2})
    v3 = await put(client, "/squashed", {"n": 3})
    assert await node.running.bus.compact(f"/~{node.node_id}/squashed")
    reader, stream = await subscribe(client, "/squashed", {"Parents": f'"{v1}"'})
    try:
        first = await reader.block()
        assert (first.version, first.parents, first.json()) == (f'"{v3}"', None, {"n": 3})
    finally:
        await stream.aclose()
