"""What every benchmark module receives: run settings, scratch space, and how to start servers."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench._paths import BASELINES_DIR, PYTHON, REPO_ROOT
from bench._procs import ServerProcess, free_port


@dataclass(frozen=True)
class Settings:
    """How long each measured window lasts; built by the CLI."""

    seconds: float = 4.0
    repeats: int = 2  # fan-out and write windows per system, interleaved; the best counts
    fanout_sizes: tuple[int, ...] = (100, 1000)
    write_clients: int = 50
    cold_entries: int = 100_000
    idle_keys: int = 10_000
    idle_subscribers: int = 1000


@dataclass
class Context:
    """One bench run: its settings, its scratch directory, and a progress log on stderr."""

    settings: Settings
    work_dir: Path
    node_problem: str | None = None  # why the Node side cannot run, if it cannot
    started: float = field(default_factory=time.monotonic)
    other_load: list[float] = field(default_factory=list)  # see note_other_load

    def note_other_load(self, cpu_s: float, window_s: float) -> None:
        """Record the CPU other processes used during a measured window (1.0 = one core)."""
        if window_s > 0:
            self.other_load.append(max(0.0, cpu_s) / window_s)

    def log(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[bench {elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)

    def path(self, name: str) -> Path:
        """A path under this run's scratch directory (parents created)."""
        target = self.work_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def uvicorn(self, name: str, app: str) -> ServerProcess:
        """A bare baseline app under uvicorn with uvloop, httptools and no access log."""
        port = free_port()
        argv = [
            PYTHON, "-m", "uvicorn", app, "--factory",
            "--host", "127.0.0.1", "--port", str(port),
            "--loop", "uvloop", "--http", "httptools",
            "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        return ServerProcess(
            name,
            argv,
            port=port,
            log_path=self.path(f"logs/{name}.log"),
            cwd=REPO_ROOT,
            env={"PYTHONPATH": str(REPO_ROOT)},
        )

    def hocuspocus(self) -> ServerProcess:
        """Hocuspocus 3.4.4 under Node, one plain server without extensions or persistence."""
        port = free_port()
        return ServerProcess(
            "hocuspocus",
            ["node", str(BASELINES_DIR / "hocuspocus_server.mjs"), str(port)],
            port=port,
            log_path=self.path("logs/hocuspocus.log"),
            cwd=BASELINES_DIR,
            ready_path="/",
        )
