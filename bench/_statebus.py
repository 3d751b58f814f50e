"""Starting the statebus node under test, exactly as a user would, and speaking to it."""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from typing import Any, Self

from bench._context import Context
from bench._errors import BenchError, ClientFailed, Unavailable
from bench._paths import PYTHON, REPO_ROOT
from bench._procs import LOOPBACK, ServerProcess, cpu_seconds, free_port

CORE = ("statebus/cli.py", "statebus/server")


def missing_core() -> str | None:
    """Why statebus cannot be benchmarked in this tree, or None when its core is here."""
    absent = [part for part in CORE if not (REPO_ROOT / part).exists()]
    if absent:
        return f"statebus core not in this tree yet ({', '.join(absent)} missing)"
    return None


class StatebusNode(ServerProcess):
    """`python -m statebus serve` on a data directory; ready once /_health answers 200
    and DATA/owner.token exists. Opens by `with StatebusNode(ctx, name, data) as node:`."""

    def __init__(self, ctx: Context, name: str, data_dir: Path) -> None:
        port = free_port()
        argv = [
            PYTHON, "-m", "statebus", "serve",
            "--host", LOOPBACK, "--port", str(port), "--data", str(data_dir),
        ]  # fmt: skip
        super().__init__(
            name,
            argv,
            port=port,
            log_path=ctx.path(f"logs/{name}.log"),
            cwd=REPO_ROOT,
            env={"PYTHONPATH": str(REPO_ROOT)},
        )
        self.data_dir = data_dir
        self.token = ""

    def __enter__(self) -> Self:
        reason = missing_core()
        if reason is not None:
            raise Unavailable(reason)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        super().__enter__()
        token_file = self.data_dir / "owner.token"
        deadline = time.monotonic() + 5
        while not token_file.exists():
            if time.monotonic() > deadline:
                self.stop()
                raise Unavailable(f"{self.name} wrote no {token_file.name}")
            time.sleep(0.05)
        self.token = token_file.read_text().strip()
        return self

    def loop_cpu_seconds(self) -> float:
        """CPU time of the node's main thread, which runs its event loop (the rest of
        cpu_seconds is the store's writer process and worker threads)."""
        return cpu_seconds(self.pid, self.pid)

    def auth(self, **headers: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **headers}

    def get(self, conn: http.client.HTTPConnection, path: str, accept: str) -> bytes:
        """The body of a 200 answer to the owner's GET of ``path`` over ``conn``."""
        conn.request("GET", path, headers=self.auth(Accept=accept))
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise ClientFailed(f"GET {path} ({accept}) answered {response.status}: {body[:200]!r}")
        return body

    def head(self) -> int:
        """The node's newest seq (``/_health``): how many entries it has stored."""
        return int(self.read_json("/_health")["version"])

    def read_json(self, path: str) -> Any:
        """The JSON value of a key, as the owner reads it."""
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=30)
        try:
            return json.loads(self.get(conn, path, "application/json"))
        finally:
            conn.close()


def check_holds(value: Any, path: str, written: dict[str, int]) -> None:
    """BenchError unless the key's JSON ``value`` holds every acknowledged write
    (:meth:`LoadResult.written`): a write answered but not applied would be counted
    for work the node never did."""
    if not written:
        raise BenchError(f"no write to {path} was acknowledged")
    held = value if isinstance(value, dict) else {}
    wrong = [
        f"{name}: {held.get(name)!r}, not {n}" for name, n in written.items() if held.get(name) != n
    ]
    if wrong:
        raise BenchError(f"{path} lacks acknowledged writes ({len(wrong)} fields), {wrong[0]}")
