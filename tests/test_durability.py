"""Nothing acknowledged is lost: kill -9 right after the answers, then restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx

from tests.processes import NodeProcess

MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


async def test_kill_9_in_the_middle_of_writes_loses_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    """Writers keep writing big values; the node is killed the instant the 40th
    answer arrives, with other writes in flight. Every acknowledged write must be
    there after a restart; the unacknowledged ones may or may not be."""
    node = await NodeProcess(tmp_path / "data").start()
    acknowledged: dict[str, dict[str, Any]] = {}
    bulk = "x" * 1_000_000
    killed = anyio.Event()
    try:
        headers = {"Authorization": f"Bearer {node.token}"}
        async with httpx.AsyncClient(base_url=node.url, headers=headers, timeout=30) as client:

            async def writer(w: int) -> None:
                for i in range(1000):
                    key = f"/w{w}/k{i}"
                    value = {"i": i, "w": w, "bulk": bulk}
                    try:
                        response = await client.put(key, json=value)
                    except httpx.TransportError:
                        assert killed.is_set()
                        return
                    if killed.is_set():
                        return
                    assert response.status_code == 200
                    acknowledged[key] = value
                    if len(acknowledged) == 40:
                        node.kill()  # now, with the other writers' requests in flight
                        killed.set()
                        return

            with anyio.fail_after(120):
                async with anyio.create_task_group() as tg:
                    for w in range(6):
                        tg.start_soon(writer, w)
    finally:
        await node.close()
    assert killed.is_set()

    node = await NodeProcess(tmp_path / "data").start()
    try:
        headers = {"Authorization": f"Bearer {node.token}", "Accept": "application/json"}
        async with httpx.AsyncClient(base_url=node.url, headers=headers, timeout=30) as client:
            for key, value in acknowledged.items():
                response = await client.get(key)
                assert response.status_code == 200, key
                assert response.json() == value, key
    finally:
        await node.close()


async def test_a_clean_stop_on_sigterm_keeps_everything_too(tmp_path: Path) -> None:
    node = await NodeProcess(tmp_path / "data").start()
    try:
        headers = {"Authorization": f"Bearer {node.token}"}
        async with httpx.AsyncClient(base_url=node.url, headers=headers) as client:
            await client.put("/x", json={"a": 1})
        assert await node.terminate() == 0
        assert not (tmp_path / "data" / "node.json").exists()
    finally:
        await node.close()
    node = await NodeProcess(tmp_path / "data").start()
    try:
        headers = {"Authorization": f"Bearer {node.token}", "Accept": "application/json"}
        async with httpx.AsyncClient(base_url=node.url, headers=headers) as client:
            assert (await client.get("/x")).json() == {"a": 1}
    finally:
        await node.close()
