"""The HTTP contract, line by line, against a real node on 127.0.0.1."""

from __future__ import annotations

import base64
import json
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from pycrdt import Array, Doc, Map, Text

from statebus import create_app
from statebus.identity import Identity
from statebus.runner import bind
from statebus.settings import Settings
from tests.conftest import Node, NodeFactory
from tests.sse import open_stream

JSON = {"Accept": "application/json"}
BINARY = {"Accept": "application/octet-stream"}
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
YJS = {"Content-Type": "application/octet-stream"}


async def get_json(client: httpx.AsyncClient, key: str) -> Any:
    response = await client.get(key, headers=JSON)
    assert response.status_code == 200, response.text
    return response.json()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


# -- values ------------------------------------------------------------------


EVERY_JSON_TYPE: dict[str, Any] = {
    "int": 42,
    "negative": -7,
    "zero": 0,
    "largest_safe": 2**53 - 1,
    "float": 0.1,
    "exponent": 1.5e300,
    "true": True,
    "false": False,
    "null": None,
    "text": "plain",
    "unicode": "héllo wörld ✓ 日本語 😀 𝄞",
    "empty_text": "",
    "nested": {"a": {"b": {"c": [1, 2, {"d": "deep"}]}}},
    "empty_object": {},
    "array": [1, "two", 3.5, None, True, [], {}, [[1]]],
    "empty_array": [],
}


async def test_every_json_type_round_trips(client: httpx.AsyncClient) -> None:
    assert (await client.put("/types", json=EVERY_JSON_TYPE)).status_code == 200
    value = await get_json(client, "/types")
    assert value == EVERY_JSON_TYPE
    # Types survive, not just equality: 42 stays an int, True stays a bool.
    assert type(value["int"]) is int
    assert type(value["largest_safe"]) is int
    assert type(value["float"]) is float
    assert type(value["true"]) is bool
    assert type(value["array"][0]) is int


async def test_an_integral_float_reads_back_as_an_integer(client: httpx.AsyncClient) -> None:
    await client.put("/n", json={"x": 2.0, "y": 2.5})
    assert await get_json(client, "/n") == {"x": 2, "y": 2.5}


async def test_put_replaces_the_value_and_keeps_untouched_fields_as_they_were(
    client: httpx.AsyncClient,
) -> None:
    await client.put("/doc", json={"a": 1, "b": {"c": 2}, "d": [1, 2, 3]})
    await client.put("/doc", json={"a": 1, "b": {"c": 3}, "d": [1, 2, 3, 4]})
    assert await get_json(client, "/doc") == {"a": 1, "b": {"c": 3}, "d": [1, 2, 3, 4]}
    await client.put("/doc", json={"b": {}})
    assert await get_json(client, "/doc") == {"b": {}}


async def test_an_unchanged_put_writes_nothing(client: httpx.AsyncClient) -> None:
    first = await client.put("/same", json={"a": 1, "b": [1, {"c": True}]})
    again = await client.put("/same", json={"a": 1, "b": [1, {"c": True}]})
    assert again.status_code == 200
    assert again.json()["version"] == first.json()["version"]
    assert again.headers["version"] == first.headers["version"]


async def test_merge_patch_follows_rfc_7396(client: httpx.AsyncClient) -> None:
    await client.put(
        "/patched", json={"title": "Goodbye!", "author": {"givenName": "John", "familyName": "Doe"}}
    )
    patch = (
        b'{"title": "Hello!", "phoneNumber": "+01-123-456-7890", "author": {"familyName": null}}'
    )
    response = await client.patch("/patched", content=patch, headers=MERGE_PATCH)
    assert response.status_code == 200
    assert await get_json(client, "/patched") == {
        "title": "Hello!",
        "author": {"givenName": "John"},
        "phoneNumber": "+01-123-456-7890",
    }
    await client.patch("/patched", content=b'{"new": {"a": 1, "gone": null}}', headers=MERGE_PATCH)
    assert (await get_json(client, "/patched"))["new"] == {"a": 1}


async def test_patch_creates_a_key(client: httpx.AsyncClient) -> None:
    await client.patch("/fresh", content=b'{"a": 1}', headers=MERGE_PATCH)
    assert await get_json(client, "/fresh") == {"a": 1}


async def test_versions_increase_and_are_in_the_header(client: httpx.AsyncClient) -> None:
    versions = []
    for i in range(3):
        response = await client.put("/v", json={"i": i})
        version = response.json()["version"]
        assert response.headers["version"] == f'"{version}"'
        versions.append(version)
    assert versions == sorted(versions) and len(set(versions)) == 3
    got = await client.get("/v", headers=JSON)
    assert got.headers["version"] == f'"{versions[-1]}"'


async def test_a_key_never_written_is_404_as_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/never", headers=JSON)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert (await client.get("/never", headers=BINARY)).status_code == 404


async def test_delete_removes_the_key_and_a_write_brings_it_back(
    client: httpx.AsyncClient,
) -> None:
    await client.put("/gone", json={"a": 1})
    reader, stream = await open_stream(client, "/gone")
    try:
        assert (await reader.data()).json()["value"] == {"a": 1}
        response = await client.delete("/gone")
        assert response.status_code == 200
        deleted = await reader.data()
        assert deleted.json()["value"] is None
        assert (await client.get("/gone", headers=JSON)).status_code == 404
        listing = await get_json(client, "/")
        assert "/gone" not in [k["key"] for k in listing["keys"]]
        assert (await client.delete("/gone")).status_code == 404
        await client.put("/gone", json={"b": 2})
        assert (await reader.data()).json()["value"] == {"b": 2}
        assert await get_json(client, "/gone") == {"b": 2}
    finally:
        await stream.aclose()


async def test_concurrent_patches_of_different_fields_are_both_kept(node: Node) -> None:
    async with node.client() as one, node.client() as two:
        await one.put("/shared", json={"a": 0, "b": 0})
        for round_ in range(1, 21):
            async with anyio.create_task_group() as tg:
                for http, field in ((one, "a"), (two, "b")):
                    body = f'{{"{field}": {round_}}}'.encode()
                    tg.start_soon(partial(http.patch, "/shared", content=body, headers=MERGE_PATCH))
        assert await get_json(one, "/shared") == {"a": 20, "b": 20}


async def test_concurrent_puts_from_the_same_version_keep_both_writers_fields(
    node: Node,
) -> None:
    """Each writer reads the value, changes one field and PUTs the whole object
    with ``Parents`` naming the version it read: only its own change applies."""
    async with node.client() as one, node.client() as two:
        await one.put("/form", json={"name": "", "bio": "", "tags": ["a"]})
        for round_ in range(1, 11):
            read = await one.get("/form", headers=JSON)
            base, parents = read.json(), read.headers["version"]
            async with anyio.create_task_group() as tg:
                for http, field in ((one, "name"), (two, "bio")):
                    value = base | {field: f"{field} {round_}"}
                    tg.start_soon(
                        partial(http.put, "/form", json=value, headers={"Parents": parents})
                    )
        assert await get_json(one, "/form") == {"name": "name 10", "bio": "bio 10", "tags": ["a"]}
        # Without Parents, a PUT is the whole value: the other field is overwritten.
        await one.put("/form", json={"name": "only"})
        assert await get_json(one, "/form") == {"name": "only"}


async def test_a_put_based_on_an_unknown_version_is_a_conflict(client: httpx.AsyncClient) -> None:
    await client.put("/c", json={"a": 1})
    response = await client.put("/c", json={"a": 2}, headers={"Parents": '"999999"'})
    assert response.status_code == 409 and response.json()["error"] == "conflict"
    bad = await client.put("/c", json={"a": 2}, headers={"Parents": "yesterday"})
    assert bad.status_code == 400
    assert await get_json(client, "/c") == {"a": 1}


# -- Yjs binary --------------------------------------------------------------


async def test_yjs_updates_from_a_separate_doc_merge_and_read_back(
    client: httpx.AsyncClient,
) -> None:
    doc: Doc[Any] = Doc()
    data = doc.get("data", type=Map)
    data["title"] = "from pycrdt"
    data["items"] = Array([1.0, 2.0])
    data["body"] = Text("hello 😀")
    response = await client.put("/yjs", content=doc.get_update(), headers=YJS)
    assert response.status_code == 200
    assert await get_json(client, "/yjs") == {
        "title": "from pycrdt",
        "items": [1, 2],
        "body": "hello 😀",
    }
    state = (await client.get("/yjs", headers=BINARY)).content
    copy: Doc[Any] = Doc()
    copy.apply_update(state)
    assert copy.get("data", type=Map).to_py() == data.to_py()

    # An edit made in the doc after the first sync reaches the node as a diff.
    before = doc.get_state()
    data["body"].insert(len(b"hello"), ",")
    diff = doc.get_update(before)
    await client.put("/yjs", content=diff, headers=YJS)
    assert (await get_json(client, "/yjs"))["body"] == "hello, 😀"


async def test_since_returns_only_what_the_state_vector_lacks(client: httpx.AsyncClient) -> None:
    await client.put("/since", json={"a": 1})
    mirror: Doc[Any] = Doc()
    mirror.apply_update((await client.get("/since", headers=BINARY)).content)
    await client.patch("/since", content=b'{"b": 2}', headers=MERGE_PATCH)
    full = (await client.get("/since", headers=BINARY)).content
    diff_response = await client.get(f"/since?since={b64url(mirror.get_state())}", headers=BINARY)
    diff = diff_response.content
    assert diff_response.headers["content-type"] == "application/octet-stream"
    assert len(diff) < len(full)
    mirror.apply_update(diff)
    assert mirror.get("data", type=Map).to_py() == {"a": 1.0, "b": 2.0}
    up_to_date = await client.get(f"/since?since={b64url(mirror.get_state())}", headers=BINARY)
    fresh: Doc[Any] = Doc()
    fresh.apply_update(up_to_date.content)
    assert fresh.get("data", type=Map).to_py() in ({}, None)  # nothing missing


async def test_a_json_put_edits_a_yjs_text_in_place(client: httpx.AsyncClient) -> None:
    """A string that a Yjs client made Y.Text stays Y.Text; concurrent edits merge."""
    doc: Doc[Any] = Doc()
    data = doc.get("data", type=Map)
    data["note"] = Text("hello world")
    await client.put("/text", content=doc.get_update(), headers=YJS)
    # A JSON writer changes the end, a Yjs writer the start, concurrently.
    synced = doc.get_state()
    data["note"].insert(0, ">> ")
    await client.put("/text", json={"note": "hello world!"})
    await client.put("/text", content=doc.get_update(synced), headers=YJS)
    assert (await get_json(client, "/text"))["note"] == ">> hello world!"


# -- SSE -----------------------------------------------------------------------


async def test_sse_first_event_for_a_key_never_written_is_null(
    client: httpx.AsyncClient,
) -> None:
    reader, stream = await open_stream(client, "/nothing-yet")
    try:
        assert stream.headers["cache-control"] == "no-store"
        first = await reader.data()
        body = first.json()
        assert body["key"] == "/nothing-yet"
        assert body["value"] is None
        assert first.id == str(body["version"])
        await client.put("/nothing-yet", json={"now": "something"})
        change = await reader.data()
        assert change.json()["value"] == {"now": "something"}
    finally:
        await stream.aclose()


async def test_sse_carries_the_whole_state_then_each_update(client: httpx.AsyncClient) -> None:
    await client.put("/live", json={"n": 0})
    reader, stream = await open_stream(client, "/live")
    try:
        first = (await reader.data()).json()
        mirror: Doc[Any] = Doc()
        mirror.apply_update(base64.b64decode(first["update"]))
        for n in range(1, 6):
            await client.put("/live", json={"n": n})
            event = await reader.data()
            body = event.json()
            assert body["value"] == {"n": n}
            assert event.id == str(body["version"])
            mirror.apply_update(base64.b64decode(body["update"]))
            assert mirror.get("data", type=Map).to_py() == {"n": float(n)}
    finally:
        await stream.aclose()


@pytest.mark.parametrize("accept", [None, "*/*", "text/event-stream"])
async def test_curl_and_event_source_get_the_stream(
    client: httpx.AsyncClient, accept: str | None
) -> None:
    headers = {"Accept": accept} if accept else {}
    if accept is None:
        client.headers.pop("accept", None)
    reader, stream = await open_stream(client, "/curl", headers)
    try:
        assert (await reader.data()).json()["key"] == "/curl"
    finally:
        await stream.aclose()


async def test_heartbeats_keep_an_idle_stream_alive(node_factory: NodeFactory) -> None:
    node = await node_factory(heartbeat_seconds=0.05)
    async with node.client() as client:
        reader, stream = await open_stream(client, "/quiet")
        try:
            await reader.data()
            beat = await reader.next()
            assert beat.comments == ["heartbeat"] and beat.data == ""
        finally:
            await stream.aclose()


async def test_last_event_id_resumes_with_nothing_lost_and_nothing_twice(
    client: httpx.AsyncClient,
) -> None:
    await client.put("/resume", json={"n": 0})
    reader, stream = await open_stream(client, "/resume")
    first = await reader.data()
    await stream.aclose()
    versions = []
    for n in range(1, 4):  # written while the reader is away
        versions.append((await client.put("/resume", json={"n": n})).json()["version"])
    await client.put("/other", json={"noise": True})
    reader, stream = await open_stream(client, "/resume", {"Last-Event-ID": first.id or ""})
    try:
        replayed = [await reader.data() for _ in range(3)]
        assert [e.id for e in replayed] == [str(v) for v in versions]
        assert [e.json()["value"] for e in replayed] == [{"n": 1}, {"n": 2}, {"n": 3}]
        await client.put("/resume", json={"n": 4})
        live = await reader.data()
        assert live.json()["value"] == {"n": 4}  # next is live, not a repeat
    finally:
        await stream.aclose()


async def test_resuming_at_the_head_sends_nothing_until_a_change(
    client: httpx.AsyncClient,
) -> None:
    version = (await client.put("/atop", json={"n": 1})).json()["version"]
    reader, stream = await open_stream(client, "/atop", {"Last-Event-ID": str(version)})
    try:
        await client.put("/atop", json={"n": 2})
        event = await reader.data()
        assert event.json()["value"] == {"n": 2}
    finally:
        await stream.aclose()


async def test_resuming_from_an_unknown_future_id_sends_the_whole_state(
    client: httpx.AsyncClient,
) -> None:
    await client.put("/future", json={"n": 1})
    reader, stream = await open_stream(client, "/future", {"Last-Event-ID": "999999"})
    try:
        assert (await reader.data()).json()["value"] == {"n": 1}
    finally:
        await stream.aclose()


# -- folders -------------------------------------------------------------------


async def test_folder_listing(client: httpx.AsyncClient) -> None:
    for key in ["/posts/a", "/posts/b", "/posts/deep/c", "/postscript", "/other"]:
        await client.put(key, json={"k": key})
    listing = await get_json(client, "/posts/")
    assert listing["folder"] == "/posts/"
    assert [k["key"] for k in listing["keys"]] == ["/posts/a", "/posts/b", "/posts/deep/c"]
    assert all(isinstance(k["version"], int) for k in listing["keys"])
    assert listing["next"] is None
    page = await get_json(client, "/posts/?limit=2")
    assert [k["key"] for k in page["keys"]] == ["/posts/a", "/posts/b"]
    rest = await get_json(client, f"/posts/?after={page['next']}")
    assert [k["key"] for k in rest["keys"]] == ["/posts/deep/c"]
    everything = await get_json(client, "/")
    assert len(everything["keys"]) == 5
    empty = await get_json(client, "/nothing/")
    assert empty["keys"] == []


async def test_folder_stream_lists_then_streams_every_change_under_it(
    client: httpx.AsyncClient,
) -> None:
    await client.put("/feed/one", json={"n": 1})
    await client.put("/feed/sub/two", json={"n": 2})
    reader, stream = await open_stream(client, "/feed/")
    try:
        listed = [await reader.data(), await reader.data()]
        assert {e.json()["key"] for e in listed} == {"/feed/one", "/feed/sub/two"}
        assert all(e.id is None for e in listed)
        synced = await reader.data()
        assert synced.event == "synced" and synced.id is not None
        await client.put("/elsewhere", json={"n": 0})
        await client.put("/feed/sub/three", json={"n": 3})
        change = await reader.data()
        assert change.json()["key"] == "/feed/sub/three"
        assert change.json()["value"] == {"n": 3}
        await client.delete("/feed/one")
        removed = await reader.data()
        assert removed.json() | {"update": ""} == {
            "key": "/feed/one",
            "value": None,
            "update": "",
            "version": int(removed.id or 0),
        }
    finally:
        await stream.aclose()


async def test_folder_stream_resumes_by_last_event_id(client: httpx.AsyncClient) -> None:
    await client.put("/box/a", json={"n": 1})
    reader, stream = await open_stream(client, "/box/")
    await reader.data()
    synced = await reader.data()
    await stream.aclose()
    await client.put("/box/b", json={"n": 2})
    await client.put("/box/a", json={"n": 3})
    reader, stream = await open_stream(client, "/box/", {"Last-Event-ID": synced.id or ""})
    try:
        one, two = await reader.data(), await reader.data()
        assert (one.json()["key"], one.json()["value"]) == ("/box/b", {"n": 2})
        assert (two.json()["key"], two.json()["value"]) == ("/box/a", {"n": 3})
        assert int(one.id or 0) < int(two.id or 0)
    finally:
        await stream.aclose()


# -- machinery and errors ------------------------------------------------------


async def test_health(node: Node) -> None:
    async with node.client(owner=False) as anonymous:
        response = await anonymous.get("/_health")
    assert response.status_code == 200
    assert response.json()["ok"] is True
    assert response.json()["node"] == node.node_id


async def test_own_namespace_by_its_long_name_is_the_same_document(
    node: Node, client: httpx.AsyncClient
) -> None:
    await client.put(f"/~{node.node_id}/same", json={"a": 1})
    assert await get_json(client, "/same") == {"a": 1}
    await client.patch("/same", content=b'{"b": 2}', headers=MERGE_PATCH)
    assert await get_json(client, f"/~{node.node_id}/same") == {"a": 1, "b": 2}


async def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == code
    assert isinstance(body["detail"], str) and body["detail"]


@pytest.mark.parametrize(
    ("body", "headers", "code"),
    [
        (b'{"a": ', {"Content-Type": "application/json"}, "invalid_body"),
        (b"[1, 2]", {"Content-Type": "application/json"}, "invalid_body"),
        (b'"text"', {"Content-Type": "application/json"}, "invalid_body"),
        (b"42", {"Content-Type": "application/json"}, "invalid_body"),
        (b'{"a": NaN}', {"Content-Type": "application/json"}, "invalid_body"),
        (b'{"a": 9007199254740993}', {"Content-Type": "application/json"}, "invalid_body"),
        (b'{"a": 1e999}', {"Content-Type": "application/json"}, "invalid_body"),
        (b"\xff\xfe", {"Content-Type": "application/json"}, "invalid_body"),
        (b"not yjs at all", YJS, "invalid_body"),
        (b"", YJS, "invalid_body"),
        (b"\x01\x02\x03", YJS, "invalid_body"),
        (b'{"a": 1}', {"Content-Type": "text/plain"}, "unsupported_media_type"),
        (b'{"a": 1}', {}, "unsupported_media_type"),
    ],
)
async def test_bad_puts_are_refused_and_change_nothing(
    client: httpx.AsyncClient, body: bytes, headers: dict[str, str], code: str
) -> None:
    before = await client.put("/guarded", json={"keep": "me"})
    response = await client.put("/guarded", content=body, headers=headers)
    status = 415 if code == "unsupported_media_type" else 400
    await assert_error(response, status, code)
    after = await client.get("/guarded", headers=JSON)
    assert after.json() == {"keep": "me"}
    assert after.headers["version"] == before.headers["version"]


async def test_deep_nesting_is_refused(client: httpx.AsyncClient) -> None:
    deep = b'{"a": ' * 100 + b"1" + b"}" * 100
    await assert_error(
        await client.put("/deep", content=deep, headers={"Content-Type": "application/json"}),
        400,
        "invalid_body",
    )


async def test_bad_patches_are_refused(client: httpx.AsyncClient) -> None:
    await client.put("/p", json={"keep": 1})
    await assert_error(
        await client.patch("/p", content=b"[]", headers=MERGE_PATCH), 400, "invalid_body"
    )
    await assert_error(
        await client.patch("/p", content=b"{}", headers={"Content-Type": "text/csv"}),
        415,
        "unsupported_media_type",
    )
    assert await get_json(client, "/p") == {"keep": 1}


@pytest.mark.parametrize(
    "path",
    [
        "/a/../b",
        "/a/./b",
        "/a//b",
        "/a%2Fb",
        "/bad%00key",
        "/tab%09key",
        "/_reserved",
        "/_health/x",
        "/~notanodeid/x",
        "/%FF%FE",
        "/" + "k" * 1100,
    ],
)
async def test_keys_outside_the_grammar_are_refused(
    node: Node, client: httpx.AsyncClient, path: str
) -> None:
    # Raw bytes on the socket: an HTTP client library would tidy "..", "." away.
    for method, body in (("PUT", b'{"a": 1}'), ("GET", b"")):
        status, _head, payload = await raw_request(node, method, path, body)
        assert status == 400, (path, method, status, payload)
        assert json.loads(payload)["error"] == "invalid_key"
    listing = await get_json(client, "/")
    assert listing["keys"] == []


async def test_a_folder_cannot_be_written(client: httpx.AsyncClient) -> None:
    await assert_error(await client.put("/folder/", json={"a": 1}), 400, "invalid_key")


async def test_a_body_over_the_limit_is_413_without_reading_it_all(
    node_factory: NodeFactory,
) -> None:
    node = await node_factory(max_body=1024)
    async with node.client() as client:
        await client.put("/limited", json={"small": True})
        big = b'{"a": "' + b"x" * 2000 + b'"}'
        await assert_error(
            await client.put("/limited", content=big, headers={"Content-Type": "application/json"}),
            413,
            "payload_too_large",
        )
        sent = 0

        async def trickle() -> Any:  # a chunked body: no Content-Length to judge by
            nonlocal sent
            for _ in range(100):
                sent += 512
                yield b" " * 512

        response = await client.put(
            "/limited", content=trickle(), headers={"Content-Type": "application/json"}
        )
        await assert_error(response, 413, "payload_too_large")
        assert await get_json(client, "/limited") == {"small": True}

        # A declared length over the limit is refused before any of the body is read.
        declared = await client.put(
            "/limited",
            content=b"{}",
            headers={"Content-Type": "application/json", "Content-Length": "2"},
        )
        assert declared.status_code == 200
    async with await anyio.connect_tcp("127.0.0.1", node.port) as sock:
        await sock.send(
            b"PUT /limited HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {node.token}\r\n".encode()
            + b"Content-Length: 1000000000\r\n\r\n{"
        )
        with anyio.fail_after(10):
            head = await sock.receive()
        assert head.startswith(b"HTTP/1.1 413")


async def test_writes_need_the_owner_token_and_private_reads_are_absent(node: Node) -> None:
    async with node.client(owner=False) as anonymous:
        response = await anonymous.put("/secret", json={"a": 1})
        await assert_error(response, 401, "not_authenticated")
        assert response.headers["www-authenticate"].startswith("Bearer")
        wrong = {"Authorization": "Bearer wrong"}
        await assert_error(
            await anonymous.put("/secret", json={"a": 1}, headers=wrong), 401, "not_authenticated"
        )
        async with node.client() as owner:
            await owner.put("/secret", json={"a": 1})
        await assert_error(await anonymous.get("/secret", headers=JSON), 404, "not_found")
        await assert_error(await anonymous.get("/nothing", headers=JSON), 404, "not_found")


async def test_login_link_sets_the_owner_cookie(node: Node) -> None:
    async with node.client(owner=False) as browser:
        bad = await browser.get("/_login?token=nope")
        await assert_error(bad, 401, "not_authenticated")
        response = await browser.get(f"/_login?token={node.token}")
        assert response.status_code == 303
        assert "httponly" in response.headers["set-cookie"].lower()
        assert (await browser.put("/mine", json={"a": 1})).status_code == 200


async def test_two_nodes_on_one_host_keep_their_own_login_cookies(
    node_factory: NodeFactory,
) -> None:
    """A browser keeps cookies per host, not per port: logging in to a second node on
    127.0.0.1 must not log the browser out of the first."""
    a, b = await node_factory("cookie-a"), await node_factory("cookie-b")
    async with httpx.AsyncClient(timeout=30) as browser:  # one cookie jar, as a browser has
        for node in (a, b):
            assert (await browser.get(f"{node.url}/_login?token={node.token}")).status_code == 303
        for node in (a, b):
            answer = await browser.put(f"{node.url}/mine", json={"node": node.port})
            assert answer.status_code == 200, answer.text
    async with httpx.AsyncClient(timeout=30) as only_a:  # a's login is no login at b
        assert (await only_a.get(f"{a.url}/_login?token={a.token}")).status_code == 303
        await assert_error(await only_a.put(f"{b.url}/mine", json={}), 401, "not_authenticated")
        assert (await only_a.put(f"{a.url}/mine", json={})).status_code == 200


async def test_unknown_methods_and_accepts_get_json_errors(client: httpx.AsyncClient) -> None:
    await client.put("/m", json={"a": 1})
    await assert_error(await client.post("/m", json={}), 405, "method_not_allowed")
    await assert_error(
        await client.get("/m", headers={"Accept": "image/png"}), 406, "not_acceptable"
    )
    await assert_error(await client.get("/folder/", headers=BINARY), 406, "not_acceptable")
    await assert_error(await client.get("/m?since=!!!", headers=BINARY), 400, "invalid_body")
    await assert_error(await client.get("/m?since=__8", headers=BINARY), 400, "invalid_body")


async def test_a_stream_ends_when_the_node_stops(node_factory: NodeFactory) -> None:
    node = await node_factory("stopping")
    async with node.client() as client:
        reader, stream = await open_stream(client, "/k")
        await reader.data()
        with anyio.fail_after(10):
            await node.stop()
        with pytest.raises((EOFError, httpx.HTTPError)):
            while True:
                await reader.next()
        await stream.aclose()


async def raw_request(
    node: Node, method: str, path: str, body: bytes = b""
) -> tuple[int, bytes, bytes]:
    """One HTTP/1.1 request written byte for byte; (status, head, body) of the answer."""
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Authorization: Bearer {node.token}\r\nContent-Type: application/json\r\n"
        f"Accept: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    async with await anyio.connect_tcp("127.0.0.1", node.port) as sock:
        await sock.send(request)
        answer = b""
        with anyio.fail_after(10):
            while True:
                try:
                    answer += await sock.receive()
                except anyio.EndOfStream:
                    break
    head, _, payload = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), head, payload


async def test_create_app_under_a_plain_uvicorn_serves_a_node(tmp_path: Path) -> None:
    """``create_app`` is the whole node's app: served by a plain uvicorn (as an
    embedder would, without the runner), documents are written, read and refused
    as everywhere else, and the machinery under ``/_`` answers too."""
    identity = Identity.generate()
    app = create_app(Settings(data_dir=tmp_path), identity=identity, owner_token="t0ken")
    sock = bind("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning"))
    owner = {"Authorization": "Bearer t0ken"}
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(server.serve, sockets=[sock]))
        with anyio.fail_after(20):
            while not server.started:  # noqa: ASYNC110  (uvicorn offers no readiness event)
                await anyio.sleep(0.02)
        async with httpx.AsyncClient(base_url=url) as http:
            written = await http.put("/k", json={"a": 1}, headers=owner)
            assert written.status_code == 200
            version = int(written.headers["version"].strip('"'))
            assert written.json() == {"key": "/k", "version": version}
            patched = await http.patch("/k", json={"b": 2}, headers={**owner, **MERGE_PATCH})
            assert patched.status_code == 200
            assert (await http.get("/k", headers={**owner, **JSON})).json() == {"a": 1, "b": 2}
            await assert_error(await http.put("/k", json={"a": 2}), 401, "not_authenticated")
            broken = {**owner, "Content-Type": "application/json"}
            await assert_error(
                await http.put("/k", content=b"{", headers=broken), 400, "invalid_body"
            )
            assert (await http.delete("/k", headers=owner)).status_code == 200
            gone = await http.get("/k", headers={**owner, **JSON})
            await assert_error(gone, 404, "not_found")
            assert (await http.get("/_health")).json()["ok"] is True
            await assert_error(await http.post("/k", json={}), 405, "method_not_allowed")
        server.should_exit = True
