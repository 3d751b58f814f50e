"""Running the Node load clients (bench/js) and reading their one-line JSON reports."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from bench._errors import ClientFailed
from bench._paths import BASELINES_DIR

JsonObject = dict[str, Any]


def _argv(script: str, config: JsonObject) -> list[str]:
    return ["node", str(BASELINES_DIR / script), json.dumps(config)]


def _parse(line: str, script: str) -> JsonObject:
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise ClientFailed(f"{script} printed {line[:200]!r}") from exc
    if not isinstance(message, dict):
        raise ClientFailed(f"{script} printed {line[:200]!r}")
    if "error" in message:
        raise ClientFailed(f"{script}: {str(message['error']).splitlines()[0]}")
    return message


@dataclass(frozen=True)
class LoadResult:
    """What bench/js/load.mjs measured: completed requests per second over the measured window."""

    requests: int
    rate: float
    p50_ms: float
    p99_ms: float
    statuses: dict[str, int]
    client_cpu_s: float  # over the load loop
    process_cpu_s: float  # the whole client process, building requests included
    elapsed_s: float
    wall_s: float
    acked: tuple[int, ...] = ()  # per connection, its writes answered 2xx (each in order)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if not status.startswith("2"))

    def written(self, fields: int = 1) -> dict[str, int]:
        """What the key must hold once every acknowledged write is in, as load.mjs
        writes: connection ``c`` sets ``c<c>`` (with ``fields`` > 1, ``c<c>_<n % fields>``)
        to n = 0, 1, 2, … in order, and stops at its first non-2xx answer."""
        value: dict[str, int] = {}
        for c, n in enumerate(self.acked):
            if fields == 1 and n:
                value[f"c{c}"] = n - 1
            elif fields > 1:
                for k in range(min(n, fields)):
                    value[f"c{c}_{k}"] = k + fields * ((n - 1 - k) // fields)
        return value


def run_load(config: JsonObject, *, timeout: float, log_path: Path) -> LoadResult:
    """Run load.mjs to completion (it bounds itself by count and time; `timeout` is a backstop)."""
    with log_path.open("ab") as log:
        try:
            done = subprocess.run(
                _argv("load.mjs", config),
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ClientFailed(f"load.mjs still running after {timeout:.0f} s") from exc
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    if not lines:
        raise ClientFailed(f"load.mjs exited with {done.returncode} and printed nothing")
    r = _parse(lines[-1], "load.mjs")["result"]
    return LoadResult(
        requests=int(r["requests"]),
        rate=float(r["rate"]),
        p50_ms=float(r["p50_ms"] or 0.0),
        p99_ms=float(r["p99_ms"] or 0.0),
        statuses={str(k): int(v) for k, v in r["statuses"].items()},
        client_cpu_s=float(r["client_cpu_s"]),
        process_cpu_s=float(r["process_cpu_s"]),
        elapsed_s=float(r["elapsed_s"]),
        wall_s=float(r["wall_s"]),
        acked=tuple(int(n) for n in r.get("acked", ())),
    )


@dataclass(frozen=True)
class FanoutResult:
    """What bench/js/fanout.mjs measured over its measured window."""

    subs: int
    events: int
    deliveries: int
    missing: int
    complete: bool
    write_errors: int
    elapsed_s: float
    deliveries_per_s: float
    p50_ms: float
    p99_ms: float
    client_cpu_s: float


class FanoutClient:
    """One run of fanout.mjs: connect and warm up, report ready, measure on `go()`.

    Opens by `with FanoutClient(config, ...) as client:`; the process is killed
    on exit if it has not finished by itself.
    """

    def __init__(self, config: JsonObject, *, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._buffer = b""

    def __enter__(self) -> Self:
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            _argv("fanout.mjs", self.config),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
        if self._log is not None:
            self._log.close()

    def _read_message(self, timeout: float) -> JsonObject:
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + timeout
        stdout = self._proc.stdout
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ClientFailed(f"fanout.mjs said nothing for {timeout:.0f} s")
                if not selector.select(left):
                    continue
                chunk = os.read(stdout.fileno(), 65536)
                if not chunk:
                    raise ClientFailed(f"fanout.mjs exited with {self._proc.wait(timeout=5)}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return _parse(line.decode(errors="replace"), "fanout.mjs")

    def wait_ready(self, timeout: float) -> JsonObject:
        ready: JsonObject = self._read_message(timeout)["ready"]
        return ready

    def go(self) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(b"go\n")
        self._proc.stdin.flush()

    def result(self, timeout: float) -> FanoutResult:
        r = self._read_message(timeout)["result"]
        return FanoutResult(
            subs=int(r["subs"]),
            events=int(r["events"]),
            deliveries=int(r["deliveries"]),
            missing=int(r["missing"]),
            complete=bool(r["complete"]),
            write_errors=int(r["write_errors"]),
            elapsed_s=float(r["elapsed_s"]),
            deliveries_per_s=float(r["deliveries_per_s"]),
            p50_ms=float(r["p50_ms"] or 0.0),
            p99_ms=float(r["p99_ms"] or 0.0),
            client_cpu_s=float(r["client_cpu_s"]),
        )
