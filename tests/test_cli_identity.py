"""``statebus id``, ``init --passphrase`` and the passphrase ``serve`` asks for:
real processes, their exit codes and their one-line errors."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import anyio
import pytest

from statebus.identity import NODE_ID_LENGTH, Identity, parse_node_id
from tests.processes import NodeProcess, env, statebus_command


def run(*args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        statebus_command(*args),
        env={**env(), **extra_env},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("statebus: error: "), line
    return line


def test_id_prints_the_id_then_the_share_line(tmp_path: Path) -> None:
    data = tmp_path / "node"
    first = run("id", "--data", str(data))
    assert first.returncode == 0, first.stderr
    node_id, share = first.stdout.splitlines()
    assert len(node_id) == NODE_ID_LENGTH and parse_node_id(node_id) == node_id
    assert share == f"{node_id}@127.0.0.1:8765"
    assert (data / "identity.key").stat().st_mode & 0o777 == 0o600
    assert run("id", "--data", str(data)).stdout == first.stdout  # the same key, kept


async def test_id_gives_the_running_node_s_address(tmp_path: Path) -> None:
    node = await NodeProcess(tmp_path / "node").start()
    try:
        result = await anyio.run_process(
            statebus_command("id", "--data", str(tmp_path / "node")), env=env()
        )
        node_id, share = result.stdout.decode().splitlines()
        assert share == f"{node_id}@{node.url.removeprefix('http://')}"
    finally:
        await node.close()


def test_init_seals_the_key_and_serve_needs_the_passphrase(tmp_path: Path) -> None:
    data = tmp_path / "node"
    made = run("init", "--passphrase", "--data", str(data), STATEBUS_PASSPHRASE="correct horse")
    assert made.returncode == 0, made.stderr
    assert Identity.is_sealed(data)
    assert b"correct horse" not in (data / "identity.key").read_bytes()
    node_id = made.stdout.strip()
    assert run("id", "--data", str(data)).stdout.splitlines()[0] == node_id  # no passphrase
    assert Identity.load(data, "correct horse").node_id == node_id
    line = one_line_error(
        run("init", "--passphrase", "--data", str(data), STATEBUS_PASSPHRASE="again")
    )
    assert "sealed already" in line
    line = one_line_error(run("serve", "--port", "0", "--data", str(data)))
    assert "sealed: set STATEBUS_PASSPHRASE or run on a terminal" in line
    line = one_line_error(
        run("serve", "--port", "0", "--data", str(data), STATEBUS_PASSPHRASE="wrong")
    )
    assert "wrong passphrase" in line


async def test_serve_opens_a_sealed_key_with_the_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "node"
    Identity.generate().save(data, "open sesame")
    monkeypatch.setenv("STATEBUS_PASSPHRASE", "open sesame")
    node = await NodeProcess(data).start()
    try:
        assert node.url.startswith("http://127.0.0.1:")
    finally:
        await node.close()


@pytest.mark.parametrize(
    ("peer", "says"),
    [
        ("nonsense", "a peer is ID@HOST[:PORT]"),
        ("abc@127.0.0.1:1", "a node id is 56 base32 characters"),
        ("{typo}@127.0.0.1:1", "checksum mismatch"),
        ("{id}@127.0.0.1:99999", "is not a port number"),
    ],
)
def test_a_bad_peer_is_one_line(tmp_path: Path, peer: str, says: str) -> None:
    node_id = Identity.generate().node_id
    typo = ("b" if node_id[0] != "b" else "c") + node_id[1:]
    given = peer.format(id=node_id, typo=typo)
    result = run("serve", "--port", "0", "--data", str(tmp_path), "--peer", given)
    assert says in one_line_error(result)


def test_id_piped_into_head_is_quiet(tmp_path: Path) -> None:
    command = " ".join(
        shlex.quote(part) for part in statebus_command("id", "--data", str(tmp_path))
    )
    result = subprocess.run(
        f"{command} | head -1", shell=True, env=env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert result.stderr == ""
    assert len(result.stdout.strip()) == NODE_ID_LENGTH
