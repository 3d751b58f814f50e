"""The Python client of tests/js/sync.test.mjs: pycrdt edits and plain JSON writes.

Usage: py_client.py URL TOKEN KEY ROUNDS. It loads the key's binary state into
a pycrdt Doc, prints ``ready`` and waits for a line on stdin (so that it starts
at the same moment as the Node clients). Then, each round, it inserts into the
shared Y.Text and appends to the shared array (one Yjs update, PUT
application/octet-stream) and merge-patches a counter of its own (JSON), while
the Node clients edit the same key. Then it prints ``written`` and, once told
(another line), fetches what it lacks (``?since=<state vector>``) and prints
``{"json": <its value>, "state_vector": <base64>}``.
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

import httpx
from pycrdt import Array, Doc, Map, Text


def main(url: str, token: str, key: str, rounds: int) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    binary = {"Accept": "application/octet-stream"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        doc: Doc[Any] = Doc()
        state = http.get(key, headers=binary)
        state.raise_for_status()
        doc.apply_update(state.content)
        data = doc.get("data", type=Map)
        text = data["text"]
        items = data["list"]
        assert isinstance(text, Text) and isinstance(items, Array)
        print("ready", flush=True)
        sys.stdin.readline()
        for i in range(rounds):
            before = doc.get_state()
            with doc.transaction():
                text.insert(len(str(text).encode()) if i % 2 else 0, f"[py{i}🐍]")
                items.append(f"py{i}")
            put = http.put(
                key,
                content=doc.get_update(before),
                headers={"Content-Type": "application/octet-stream"},
            )
            put.raise_for_status()
            patch = http.patch(
                key,
                content=json.dumps({"counters": {"py": i + 1}}),
                headers={"Content-Type": "application/merge-patch+json"},
            )
            patch.raise_for_status()
        print("written", flush=True)
        sys.stdin.readline()
        since = base64.urlsafe_b64encode(doc.get_state()).decode().rstrip("=")
        missing = http.get(key, params={"since": since}, headers=binary)
        missing.raise_for_status()
        doc.apply_update(missing.content)
        state_vector = base64.b64encode(doc.get_state()).decode()
        print(json.dumps({"json": data.to_py(), "state_vector": state_vector}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
