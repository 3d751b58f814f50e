"""Nodes as separate processes (`python -m statebus serve`), for what only a real
process shows: kill -9, the CLI, startup errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
from anyio.abc import Process

REPO = Path(__file__).resolve().parent.parent


def statebus_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "statebus", *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


class NodeProcess:
    """A node running in its own process; ``kill()`` is SIGKILL, no goodbye."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.data_dir = data_dir
        self.extra = extra
        self.process: Process | None = None
        self.log = data_dir.parent / f"{data_dir.name}.log"
        self.url = ""

    async def start(self) -> NodeProcess:
        address = self.data_dir / "node.json"
        address.unlink(missing_ok=True)
        command = statebus_command(
            "serve", "--port", "0", "--data", str(self.data_dir), "--log-level", "warning",
            *self.extra,
        )  # fmt: skip
        with self.log.open("ab") as log:  # a file, never a pipe nobody drains
            self.process = await anyio.open_process(
                command, env=env(), stdout=subprocess.DEVNULL, stderr=log
            )
        with anyio.fail_after(30):
            while not address.exists():
                if self.process.returncode is not None:
                    raise RuntimeError(
                        f"the node exited with {self.process.returncode}: {self.log.read_text()}"
                    )
                await anyio.sleep(0.02)  # polling a file another process writes
        self.url = json.loads(address.read_text())["url"]
        return self

    @property
    def token(self) -> str:
        return (self.data_dir / "owner.token").read_text().strip()

    def kill(self) -> None:
        """SIGKILL, at once: no flush, no goodbye."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)

    async def terminate(self) -> int:
        assert self.process is not None
        self.process.terminate()
        with anyio.fail_after(20):
            return await self.process.wait()

    async def close(self) -> None:
        """Kill the node, then wait for its helper processes (the store's writer) to
        finish too: they exit at the end of their input, and the database's files
        settle only then."""
        if self.process is None:
            return
        helpers = _children(self.process.pid)
        if self.process.returncode is None:
            self.kill()
        with anyio.fail_after(20):
            await self.process.wait()
            for pid in helpers:
                await exited(pid)
        await self.process.aclose()


def _children(pid: int) -> list[int]:
    try:
        listed = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in listed.split()]


async def exited(pid: int) -> None:
    """Wait for a process that is not our child (so not ours to wait() on) to end:
    its pidfd turns readable then."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await anyio.wait_readable(pidfd)
    finally:
        os.close(pidfd)
