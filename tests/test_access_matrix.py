"""Who sees what, with real nodes: (owner, named friend, other peer, anonymous visitor)
× (private, public, shared with the friend, encrypted to the friend) × every read path.

A owns four documents. B is the friend (things are shared with it, sealed to it),
C another peer linked to A, and a visitor reads A without a token. The friend and
the peer read A's keys on their own nodes, where federation brought them (or not).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import httpx
from pycrdt import Doc, Map

from tests.conftest import Node, NodeFactory
from tests.federated import FAST, eventually, has_value, publish, share
from tests.sse import SSEReader

KINDS = ["private", "public", "friends", "sealed"]
PATHS = ["json", "binary", "sse", "listing", "folder stream", "federation"]
JSON = {"Accept": "application/json"}


def expected() -> dict[tuple[str, str], dict[str, Any]]:
    every = dict.fromkeys(PATHS, True)
    none = dict.fromkeys(PATHS, False)
    return {
        ("owner", "private"): every,
        ("owner", "public"): every,
        ("owner", "friends"): every,
        ("owner", "sealed"): every,
        ("friend", "private"): none,
        ("friend", "public"): every,
        ("friend", "friends"): every,
        ("friend", "sealed"): every,
        ("peer", "private"): none,
        ("peer", "public"): every,
        ("peer", "friends"): none,
        ("peer", "sealed"): none | {"federation": "ciphertext"},  # stored, relayed, unread
        ("visitor", "private"): none | {"federation": None},
        ("visitor", "public"): every | {"federation": None},
        ("visitor", "friends"): none | {"federation": None},
        ("visitor", "sealed"): none | {"federation": None},
    }


async def read_paths(
    http: httpx.AsyncClient, key: str, folder: str, value: dict[str, Any]
) -> dict[str, bool]:
    """Which read paths show ``value`` at ``key`` to this client."""
    seen: dict[str, bool] = {}
    response = await http.get(key, headers=JSON)
    seen["json"] = response.status_code == 200 and response.json() == value
    response = await http.get(key, headers={"Accept": "application/octet-stream"})
    if response.status_code == 200:
        doc: Doc[Any] = Doc()
        doc.apply_update(response.content)
        seen["binary"] = doc.get("data", type=Map).to_py() == value
    else:
        seen["binary"] = False
    seen["sse"] = (await first_values(http, key)) == [value]
    listing = await http.get(folder, headers=JSON)
    seen["listing"] = listing.status_code == 200 and key in [
        k["key"] for k in listing.json()["keys"]
    ]
    seen["folder stream"] = value in await first_values(http, folder)
    return seen


async def first_values(http: httpx.AsyncClient, key: str) -> list[Any]:
    """The values a new stream of ``key`` opens with (a folder's listing up to synced)."""
    request = http.build_request("GET", key, headers={"Accept": "text/event-stream"})
    response = await http.send(request, stream=True)
    try:
        if response.status_code != 200:
            return []
        reader = SSEReader(response)
        values: list[Any] = []
        while True:
            event = await reader.data()
            if event.event == "synced":
                return values
            values.append(event.json()["value"])
            if not key.endswith("/"):
                return [v for v in values if v is not None]
    finally:
        await response.aclose()


async def federation(node: Node, key: str, plaintext: bytes) -> bool | str:
    """Whether the node holds the key's entries, and "ciphertext" when it holds them
    but they are sealed and it cannot open them."""
    entries = (await node.running.bus.log(key)).entries
    if not entries:
        return False
    if not entries[0].update.startswith(b"SBSEAL"):
        return True
    async with node.client() as http:
        readable = (await http.get(key, headers=JSON)).status_code == 200
    return True if readable else "ciphertext"


async def test_who_sees_what(node_factory: NodeFactory) -> None:
    a = await node_factory("a", **FAST)
    b = await node_factory("b", peers=(share(a),), **FAST)
    c = await node_factory("c", peers=(share(a),), **FAST)
    await publish(a, "/m/public/")
    await publish(a, "/m/friends/", [b.node_id])
    values = {kind: {"text": f"the {kind} one"} for kind in KINDS}
    async with a.client() as owner:
        for kind in ["private", "public", "friends"]:
            assert (await owner.put(f"/m/{kind}/doc", json=values[kind])).status_code == 200
        sealed = await owner.put(
            "/m/sealed/doc", json=values["sealed"], headers={"Encrypt-To": b.node_id}
        )
        assert sealed.status_code == 200

    ns = f"/~{a.node_id}"
    # The friend and the peer ask for A's folders (reading subscribes upstream) and
    # wait for what must arrive; what must not arrive would have come with it.
    for reader, kinds in ((b, ["public", "friends", "sealed"]), (c, ["public"])):
        async with reader.client() as http:
            for kind in KINDS:
                await http.get(f"{ns}/m/{kind}/", headers=JSON)
        for kind in kinds:
            await eventually(partial(has_value, reader, f"{ns}/m/{kind}/doc", values[kind]))
    await eventually(lambda: _holds(c, f"{ns}/m/sealed/doc"))

    seen: dict[tuple[str, str], dict[str, Any]] = {}
    clients = {
        "owner": (a, True, ""),
        "friend": (b, True, ns),
        "peer": (c, True, ns),
        "visitor": (a, False, ""),
    }
    for who, (node, owner_token, prefix) in clients.items():
        async with node.client(owner=owner_token) as http:
            for kind in KINDS:
                key, folder = f"{prefix}/m/{kind}/doc", f"{prefix}/m/{kind}/"
                row: dict[str, Any] = await read_paths(http, key, folder, values[kind])
                plaintext = values[kind]["text"].encode()
                if who == "visitor":
                    row["federation"] = None  # a visitor holds nothing
                else:
                    row["federation"] = await federation(node, f"{ns}/m/{kind}/doc", plaintext)
                seen[(who, kind)] = row
    wrong = {cell: (seen[cell], want) for cell, want in expected().items() if seen[cell] != want}
    assert not wrong, "\n".join(
        f"{cell}: saw {got}, expected {want}" for cell, (got, want) in wrong.items()
    )


async def _holds(node: Node, key: str) -> bool:
    return bool((await node.running.bus.log(key)).entries)
