"""Recovery: a node loses its data directory but keeps its key, and a friend gives it back."""

from __future__ import annotations

import shutil
from pathlib import Path

import anyio

from statebus.identity import Identity, NodeId, verify_entry
from tests.conftest import Node, NodeFactory
from tests.federated import FAST, eventually, keys, pin_port, publish, put, share, state, value
from tests.processes import env, statebus_command


async def test_recovery_after_deleting_the_data_directory(node_factory: NodeFactory) -> None:
    a = pin_port(await node_factory("a", compact_after=4, **FAST))
    b = await node_factory("b", peers=(share(a),), **FAST)
    await publish(a, "/", [b.node_id])  # B may hold A's data; it never leaves B
    own = NodeId(a.node_id)
    async with a.client() as http:
        await put(http, "/profile", {"name": "Ada", "bio": "engines"})
        for n in range(1, 4):
            await put(http, f"/posts/{n}", {"text": f"post {n}"})
        assert (await http.delete("/posts/2")).status_code == 200
        for n in range(10):  # enough to be compacted into a signed snapshot
            await put(http, "/counter", {"n": n})
    names = await keys(a, own)
    before = {key: (await value(a, key), await state(a, key)) for key in names}

    async def b_holds_everything() -> bool:
        return all([await state(b, key) == before[key][1] for key in names])

    await eventually(b_holds_everything)

    await a.stop()
    key_file = a.data_dir / "identity.key"
    saved = key_file.read_bytes()
    shutil.rmtree(a.data_dir)
    a.data_dir.mkdir(mode=0o700)
    key_file.write_bytes(saved)
    key_file.chmod(0o600)

    command = statebus_command("recover", "--from", share(b), "--data", str(a.data_dir))
    with anyio.fail_after(60):
        done = await anyio.run_process(command, env=env(), check=False)
    assert done.returncode == 0, done.stderr.decode()
    report = done.stdout.decode()
    assert f"restored {len(names)} documents ({len(names) - 1} with a value)" in report
    assert f"every entry verified as signed by {own}" in report
    assert "sharing rules (/_acl) never leave a node" in report

    again = await anyio.run_process(command, env=env(), check=False)
    assert again.returncode == 1
    assert b"already holds entries" in again.stderr

    await a.start()
    assert a.node_id == own
    assert await keys(a, own) == names
    for key, (expected_value, _) in before.items():
        assert await value(a, key) == expected_value
    for key in names:
        for entry in (await a.running.bus.log(key)).entries:
            assert entry.author == own
            verify_entry(own, own, key[len(f"/~{own}") :], entry.update, entry.signature)
    # the sharing rules never left the node: share again, and new writes reach the friend
    await publish(a, "/", [b.node_id])
    async with a.client() as http:
        await put(http, "/profile", {"name": "Ada", "bio": "back"})
    await eventually(lambda: _has(b, f"/~{own}/profile", {"name": "Ada", "bio": "back"}))


async def _has(node: Node, key: str, expected: object) -> bool:
    return bool(await value(node, key) == expected)


async def test_recover_refuses_without_a_key_or_a_reachable_friend(
    node_factory: NodeFactory, tmp_path: Path
) -> None:
    b = await node_factory("b", **FAST)
    empty = tmp_path / "empty"
    command = statebus_command("recover", "--from", share(b), "--data", str(empty))
    done = await anyio.run_process(command, env=env(), check=False)
    assert done.returncode == 1
    (line,) = done.stderr.decode().strip().splitlines()
    assert line.startswith("statebus: error: no identity.key in")

    lost = tmp_path / "lost"
    Identity.generate().save(lost)
    gone = f"{b.node_id}@127.0.0.1:1"
    command = statebus_command("recover", "--from", gone, "--data", str(lost), "--timeout", "10")
    done = await anyio.run_process(command, env=env(), check=False)
    assert done.returncode == 1
    (line,) = done.stderr.decode().strip().splitlines()
    assert line.startswith(f"statebus: error: {gone}: cannot connect")
