"""The command line, run as a user runs it: a real process, its exit code, its words."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path

import anyio
import pytest

from tests.processes import NodeProcess, env, statebus_command


def run(
    *args: str, timeout: float = 30, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        statebus_command(*args),
        env=env() | (extra_env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.match(r"statebus( \w+)?: error: ", lines[0]), lines[0]
    return lines[0]


def test_help_explains_every_flag() -> None:
    result = run("serve", "--help")
    assert result.returncode == 0
    for flag in ["--host", "--port", "--data", "--peer", "--max-body", "--log-level"]:
        assert flag in result.stdout
    top = run("--help")
    for command in ["serve", "get", "put", "watch"]:
        assert command in top.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("serve", "--bogus"),
        ("serve", "--port", "eighty"),
        ("frobnicate",),
        ("get",),
    ],
)
def test_a_bad_flag_is_one_line(args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.returncode == 2
    one_line_error(result)


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "--port", str(port), "--data", str(tmp_path / "d"))
    assert one_line_error(result).endswith(f"port {port} on 127.0.0.1 is already in use")


def test_an_unusable_data_directory_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run("serve", "--port", "0", "--data", str(blocker / "data"))
    assert "cannot create data directory" in one_line_error(result)
    result = run("serve", "--port", "0", "--data", str(blocker))
    assert "not a directory" in one_line_error(result)


def test_a_damaged_key_file_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / "identity.key").write_text("{ not json")
    assert "identity.key" in one_line_error(run("serve", "--port", "0", "--data", str(data)))


def test_a_new_owner_token_passes_as_a_flag_value(tmp_path: Path) -> None:
    """Hex only: a token starting with "-" was taken for an option by --token."""
    from statebus.datadir import DataDir

    made = [DataDir(tmp_path / f"d{n}") for n in range(32)]
    for data_dir in made:
        data_dir.ensure()
    tokens = {data_dir.owner_token() for data_dir in made}
    assert len(tokens) == 32
    assert all(re.fullmatch(r"[0-9a-f]{64}", token) for token in tokens)


async def test_get_put_and_watch_against_a_running_node(tmp_path: Path) -> None:
    node = await NodeProcess(tmp_path / "data").start()
    data = str(tmp_path / "data")
    try:
        put = await anyio.to_thread.run_sync(
            lambda: run("put", "/profile", '{"name": "Ada"}', "--data", data)
        )
        assert put.returncode == 0, put.stderr
        assert json.loads(put.stdout)["key"] == "/profile"
        got = await anyio.to_thread.run_sync(lambda: run("get", "/profile", "--data", data))
        assert got.returncode == 0 and json.loads(got.stdout) == {"name": "Ada"}
        by_url = await anyio.to_thread.run_sync(
            lambda: run("get", "profile", "--node", node.url, "--token", node.token)
        )
        assert by_url.returncode == 0, by_url.stderr
        assert json.loads(by_url.stdout) == {"name": "Ada"}
        listing = await anyio.to_thread.run_sync(lambda: run("get", "/", "--data", data))
        assert [k["key"] for k in json.loads(listing.stdout)["keys"]] == ["/profile"]

        watch = await anyio.open_process(
            statebus_command("watch", "/profile", "--data", data), env=env()
        )
        try:
            assert watch.stdout is not None
            lines = watch.stdout

            async def next_line() -> dict[str, object]:
                buffered = b""
                with anyio.fail_after(20):
                    while b"\n" not in buffered:
                        buffered += await lines.receive(1)
                line: dict[str, object] = json.loads(buffered)
                return line

            first = await next_line()
            assert first["value"] == {"name": "Ada"} and "update" not in first
            await anyio.to_thread.run_sync(
                lambda: run("put", "/profile", '{"name": "Grace"}', "--data", data)
            )
            assert (await next_line())["value"] == {"name": "Grace"}
        finally:
            watch.kill()
            await watch.aclose()

        bad = await anyio.to_thread.run_sync(
            lambda: run("put", "/profile", "{nope", "--data", data)
        )
        assert "not valid JSON" in one_line_error(bad)
        refused = await anyio.to_thread.run_sync(
            lambda: run("put", "/profile", "{}", "--node", node.url, "--token", "wrong")
        )
        assert "401 not_authenticated" in one_line_error(refused)
        missing = await anyio.to_thread.run_sync(lambda: run("get", "/nothing", "--data", data))
        assert "404 not_found" in one_line_error(missing)
    finally:
        await node.close()
    gone = run("get", "/profile", "--data", str(tmp_path / "elsewhere"))
    assert "no running node recorded" in one_line_error(gone)


async def test_share_reaches_the_running_node(tmp_path: Path) -> None:
    node = await NodeProcess(tmp_path / "data").start()
    data = str(tmp_path / "data")
    friend = "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkenl5sid"
    try:
        await anyio.to_thread.run_sync(
            lambda: run("put", "/posts/1", '{"t": "hi"}', "--data", data)
        )

        def visitor_sees() -> int:
            import httpx

            return httpx.get(
                f"{node.url}/posts/1", headers={"Accept": "application/json"}
            ).status_code

        assert await anyio.to_thread.run_sync(visitor_sees) == 404
        public = await anyio.to_thread.run_sync(
            lambda: run("share", "/posts/", "--public", "--data", data)
        )
        assert public.returncode == 0, public.stderr
        assert json.loads(public.stdout) == {"/posts/": {"read": "public"}}
        assert await anyio.to_thread.run_sync(visitor_sees) == 200
        friends = await anyio.to_thread.run_sync(
            lambda: run("share", "/posts/", "--with", friend, "--writers", friend, "--data", data)
        )
        assert json.loads(friends.stdout) == {"/posts/": {"read": [friend], "write": [friend]}}
        assert await anyio.to_thread.run_sync(visitor_sees) == 404
        bad = await anyio.to_thread.run_sync(
            lambda: run("share", "/posts/", "--with", "nobody", "--data", data)
        )
        assert "400 invalid_body" in one_line_error(bad)
        nothing = await anyio.to_thread.run_sync(lambda: run("share", "/posts/", "--data", data))
        assert "say who may read it" in one_line_error(nothing)
    finally:
        await node.close()


async def test_put_encrypt_to_seals_the_key(tmp_path: Path) -> None:
    node = await NodeProcess(tmp_path / "data").start()
    data = str(tmp_path / "data")
    friend = "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkenl5sid"
    try:
        sealed = await anyio.to_thread.run_sync(
            lambda: run("put", "/note", '{"t": "shh"}', "--encrypt-to", friend, "--data", data)
        )
        assert sealed.returncode == 0, sealed.stderr
        got = await anyio.to_thread.run_sync(lambda: run("get", "/note", "--data", data))
        assert json.loads(got.stdout) == {"t": "shh"}
    finally:
        await node.close()
    files = list((tmp_path / "data").glob("statebus.db*"))  # the database and its WAL
    assert sum(f.stat().st_size for f in files) > 0
    assert all(b"shh" not in f.read_bytes() for f in files)
    assert any(b"SBSEAL1" in f.read_bytes() for f in files)  # the sealed entries are there
