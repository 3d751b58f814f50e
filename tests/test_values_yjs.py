"""Values a Yjs client can store that JSON cannot hold: reading them is total.

Before, binary content, NaN, XML types and sub-documents made a key's JSON
read fail (500), and so every write to it while someone was subscribed.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import httpx
from pycrdt import Doc, Map, XmlElement, XmlFragment, XmlText

from statebus.values import DocValue, normalize
from tests.conftest import Node
from tests.sse import open_stream


def odd_doc() -> Doc[Any]:
    doc: Doc[Any] = Doc()
    data = doc.get("data", type=Map)
    with doc.transaction():
        data["bytes"] = b"\x01\x02\xfa"
        data["nan"] = math.nan
        data["inf"] = -math.inf
        xml = XmlFragment()
        data["xml"] = xml
        paragraph = XmlElement("p")
        xml.children.append(paragraph)
        text = XmlText()
        paragraph.children.append(text)
        text.insert(0, "hi")
        data["sub"] = Doc()
        data["fine"] = "still here"
    return doc


ODD_JSON: dict[str, Any] = {
    "bytes": base64.b64encode(b"\x01\x02\xfa").decode(),
    "nan": None,
    "inf": None,
    "xml": "<p>hi</p>",
    "sub": {},
    "fine": "still here",
}


def test_read_is_total() -> None:
    assert DocValue(odd_doc()).read() == ODD_JSON


def test_normalize_keeps_json_as_is() -> None:
    value = {"a": [1, 2.5, "x", None, True, {"b": -0.0}], "c": 2.0**60}
    assert normalize(value) == {"a": [1, 2.5, "x", None, True, {"b": 0}], "c": 2.0**60}


def test_writing_back_what_was_read_changes_nothing() -> None:
    doc = odd_doc()
    view = DocValue(doc)
    before = doc.get_state()
    with doc.transaction():
        view.assign(view.read())
    assert doc.get_state() == before
    assert isinstance(view.data["bytes"], bytes | bytearray)


async def test_a_yjs_update_with_odd_content_is_served_and_streamed(
    node: Node, client: httpx.AsyncClient
) -> None:
    reader, stream = await open_stream(client, "/odd")
    try:
        assert (await reader.data()).json()["value"] is None
        update = odd_doc().get_update()
        response = await client.put(
            "/odd", content=update, headers={"Content-Type": "application/octet-stream"}
        )
        assert response.status_code == 200
        assert (await reader.data()).json()["value"] == ODD_JSON
    finally:
        await stream.aclose()
    got = await client.get("/odd", headers={"Accept": "application/json"})
    assert got.status_code == 200
    assert got.json() == ODD_JSON
