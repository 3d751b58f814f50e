from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from statebus.computed import Computed, Reader
from tests.conftest import Node
from tests.sse import open_stream
from tests.wait import eventually

JSON = {"Accept": "application/json"}


def computed_of(node: Node) -> Computed:
    app = node.running.app
    assert app is not None
    computed: Computed = app.state.computed
    return computed


async def value(client: httpx.AsyncClient, key: str) -> Any:
    response = await client.get(key, headers=JSON)
    return response.json() if response.status_code == 200 else None


async def settle(client: httpx.AsyncClient, key: str, expected: Any) -> None:
    """Wait, on the key's own event stream, until the computed key holds ``expected``."""
    reader, stream = await open_stream(client, key)
    try:
        while (await reader.data()).json()["value"] != expected:
            pass
    finally:
        await stream.aclose()


async def total(read: Reader) -> dict[str, Any]:
    prices = await read.folder("/prices/")
    rate = (await read.get("/rate")) or {"factor": 1}
    return {
        "total": sum(price["amount"] for price in prices.values()) * rate["factor"],
        "items": sorted(prices),
    }


async def test_a_computed_key_follows_its_inputs_and_streams_like_any_key(
    node: Node, client: httpx.AsyncClient
) -> None:
    computed_of(node).define("/total", total)
    await settle(client, "/total", {"total": 0, "items": []})
    reader, stream = await open_stream(client, "/total")
    folder_reader, folder_stream = await open_stream(client, "/")
    try:
        assert (await reader.data()).json()["value"] == {"total": 0, "items": []}
        await client.put("/prices/apple", json={"amount": 3})
        await client.put("/prices/pear", json={"amount": 4})
        await client.put("/rate", json={"factor": 10})
        while (event := (await reader.data()).json())["value"]["total"] != 70:
            assert event["value"]["total"] in (3, 7, 30)  # runs may coalesce commits
        assert event["value"]["items"] == ["/prices/apple", "/prices/pear"]
        await client.delete("/prices/apple")
        assert (await reader.data()).json()["value"] == {"total": 40, "items": ["/prices/pear"]}
        # It is listed in its folder and its changes run through folder streams.
        listed = []
        while (folder_event := await folder_reader.data()).event != "synced":
            listed.append(folder_event.json()["key"])
        assert "/total" in listed
        while (await folder_reader.data()).json()["key"] != "/total":
            pass
    finally:
        await stream.aclose()
        await folder_stream.aclose()
    listing = (await client.get("/", headers=JSON)).json()
    assert "/total" in [entry["key"] for entry in listing["keys"]]


async def test_dependencies_are_what_the_last_run_read(
    node: Node, client: httpx.AsyncClient
) -> None:
    async def pick(read: Reader) -> dict[str, Any]:
        switch = await read.get("/switch") or {"use": "a"}
        chosen = await read.get(f"/{switch['use']}")
        return {"from": switch["use"], "value": chosen}

    computed = computed_of(node)
    await client.put("/a", json={"n": 1})
    await client.put("/b", json={"n": 2})
    computed.define("/picked", pick)
    await settle(client, "/picked", {"from": "a", "value": {"n": 1}})
    await eventually(lambda: computed.runs("/picked") == 1)
    runs = computed.runs("/picked")
    await client.put("/b", json={"n": 3})  # not read by the last run: no run
    await client.put("/a", json={"n": 4})
    await settle(client, "/picked", {"from": "a", "value": {"n": 4}})
    await eventually(lambda: computed.runs("/picked") > runs)  # counted after its write
    assert computed.runs("/picked") == runs + 1
    await client.put("/switch", json={"use": "b"})
    await settle(client, "/picked", {"from": "b", "value": {"n": 3}})
    await client.put("/b", json={"n": 5})
    await settle(client, "/picked", {"from": "b", "value": {"n": 5}})


async def test_a_write_by_anyone_else_is_undone_and_none_deletes(
    node: Node, client: httpx.AsyncClient
) -> None:
    async def echo(read: Reader) -> dict[str, Any] | None:
        return await read.get("/source")

    computed_of(node).define("/echo", echo)
    await client.put("/source", json={"x": 1})
    await settle(client, "/echo", {"x": 1})
    await client.put("/echo", json={"x": "forged"})
    await settle(client, "/echo", {"x": 1})
    await client.delete("/source")
    await settle(client, "/echo", None)


async def test_a_failing_getter_keeps_its_value_and_recovers(
    node: Node, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    async def fragile(read: Reader) -> dict[str, Any]:
        source = await read.get("/source") or {"n": 1}
        if source.get("bad"):
            raise RuntimeError("a bad input")
        return {"inverse": 1 / source["n"]}

    computed = computed_of(node)
    computed.define("/inverse", fragile)
    await client.put("/source", json={"n": 4})
    await settle(client, "/inverse", {"inverse": 0.25})
    with caplog.at_level(logging.ERROR, logger="statebus.computed"):
        runs = computed.runs("/inverse")
        await client.put("/source", json={"n": 8, "bad": True})
        await eventually(lambda: computed.runs("/inverse") > runs)
    assert "/inverse failed" in caplog.text
    assert await value(client, "/inverse") == {"inverse": 0.25}
    await client.put("/source", json={"n": 2})
    await settle(client, "/inverse", {"inverse": 0.5})


async def test_definitions_are_checked(node: Node) -> None:
    computed = computed_of(node)
    computed.define("/once", total)
    with pytest.raises(ValueError, match="already computed"):
        computed.define("/once", total)
    with pytest.raises(ValueError, match="document of this node"):
        computed.define("/folder/", total)


async def test_reader_lists_namespaces_own_first(node: Node, client: httpx.AsyncClient) -> None:
    shared = await client.put("/_acl", json={"/x": {"read": "public"}})  # in no namespace
    assert shared.status_code == 200
    reader = Reader(node.running.bus)
    assert await reader.namespaces() == [node.node_id]
    assert not reader.depends_on("/_acl")
    assert reader.depends_on(f"/~{'a' * 56}/posts/1")  # an unseen namespace re-runs
    assert not reader.depends_on(f"/~{node.node_id}/posts/1")
