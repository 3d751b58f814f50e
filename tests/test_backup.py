"""Encrypted export and import of a whole node."""

from __future__ import annotations

from pathlib import Path

import pytest
from nacl.pwhash import argon2id

from statebus.backup import CHUNK, export, restore
from statebus.errors import BackupError
from statebus.identity import KdfLimits
from tests.conftest import NodeFactory
from tests.test_cli import one_line_error, run

FAST = KdfLimits(argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN)
JSON = {"Accept": "application/json"}


async def test_round_trip_of_a_running_node(node_factory: NodeFactory, tmp_path: Path) -> None:
    node = await node_factory("original")
    big = "x" * (3 * CHUNK)  # several encrypted chunks
    async with node.client() as client:
        for i in range(20):
            await client.put(f"/posts/{i}", json={"i": i, "text": big if i == 7 else "short"})
        await client.delete("/posts/3")
    backup_file = tmp_path / "node.backup"
    size = export(node.data_dir, backup_file, "correct horse", limits=FAST)  # while it runs
    assert size == backup_file.stat().st_size > 3 * CHUNK
    assert big.encode() not in backup_file.read_bytes()
    original_id, original_token = node.node_id, node.token

    restored_dir = tmp_path / "restored"
    names = restore(backup_file, restored_dir, "correct horse")
    assert names == ["identity.key", "owner.token", "statebus.db"]
    assert (restored_dir / "identity.key").stat().st_mode & 0o777 == 0o600
    restored = await node_factory("restored")
    assert restored.node_id == original_id and restored.token == original_token
    async with restored.client() as client:
        listing = (await client.get("/posts/", headers=JSON)).json()
        assert len(listing["keys"]) == 19
        assert (await client.get("/posts/7", headers=JSON)).json()["text"] == big
        assert (await client.get("/posts/3", headers=JSON)).status_code == 404


@pytest.fixture
def backup_file(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "identity.key").write_text('{"not": "checked here"}')
    (data / "owner.token").write_text("token\n")
    target = tmp_path / "b.backup"
    export(data, target, "right", limits=FAST)
    return target


def test_a_wrong_passphrase_writes_nothing(backup_file: Path, tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="wrong passphrase"):
        restore(backup_file, tmp_path / "out", "wrong")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".statebus")] == []


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:-10], "truncated"),
        (lambda b: b[:200] + bytes([b[200] ^ 1]) + b[201:], "damaged"),
        (lambda b: b[:-5] + bytes([b[-5] ^ 1]) + b[-4:], "damaged"),
        (lambda b: b + b"extra", "after its end"),
        (lambda b: b"garbage" + b, "not a statebus backup"),
        (lambda b: b"", "not a statebus backup"),
    ],
)
def test_a_damaged_backup_writes_nothing(
    backup_file: Path, tmp_path: Path, damage: object, message: str
) -> None:
    assert callable(damage)
    backup_file.write_bytes(damage(backup_file.read_bytes()))
    with pytest.raises(BackupError, match=message):
        restore(backup_file, tmp_path / "out", "right")
    assert not (tmp_path / "out").exists()


def test_restore_refuses_a_data_directory_in_use(backup_file: Path, tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "statebus.db").write_bytes(b"precious")
    with pytest.raises(BackupError, match="not empty"):
        restore(backup_file, busy, "right")
    assert (busy / "statebus.db").read_bytes() == b"precious"


def test_export_refuses_to_overwrite(backup_file: Path, tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="exists already"):
        export(tmp_path / "data", backup_file, "right", limits=FAST)
    with pytest.raises(BackupError, match="holds no node"):
        export(tmp_path / "nothing", tmp_path / "new.backup", "right", limits=FAST)


def test_export_and_import_on_the_command_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "identity.key").write_text("{}")
    (data / "owner.token").write_text("t\n")
    right = {"STATEBUS_BACKUP_PASSPHRASE": "pass phrase"}
    made = run("export", str(tmp_path / "x.backup"), "--data", str(data), extra_env=right)
    assert made.returncode == 0, made.stderr
    assert "encrypted" in made.stdout
    back = run(
        "import", str(tmp_path / "x.backup"), "--data", str(tmp_path / "back"), extra_env=right
    )
    assert back.returncode == 0, back.stderr
    assert (tmp_path / "back" / "owner.token").read_text() == "t\n"
    wrong = {"STATEBUS_BACKUP_PASSPHRASE": "not it"}
    again = run(
        "import", str(tmp_path / "x.backup"), "--data", str(tmp_path / "again"), extra_env=wrong
    )
    assert "wrong passphrase" in one_line_error(again)
    assert not (tmp_path / "again").exists()
