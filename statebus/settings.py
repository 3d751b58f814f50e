"""The node's settings: one frozen value built by the CLI (or a test), read by all."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .quotas import Limits

DEFAULT_PORT = 8765
MiB = 1024 * 1024
DEFAULT_MAX_BODY = 16 * MiB


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = Path(".statebus")
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    peers: tuple[str, ...] = ()
    passphrase: str | None = field(default=None, repr=False)
    max_body: int = DEFAULT_MAX_BODY
    max_docs: int = 10_000
    idle_seconds: float = 300.0
    queue_limit: int = 1024
    compact_after: int = 512
    heartbeat_seconds: float = 15.0
    replay_limit: int = 1000
    synchronous: str = "FULL"  # SQLite: FULL fsyncs every commit (a batch under load)
    limits: Limits = field(default_factory=Limits)  # speed bumps for peers and visitors
    peer_backoff: float = 0.5  # first delay before dialling a lost peer again; doubles
    peer_backoff_max: float = 30.0
    peer_heartbeat: float = 15.0  # a peer stream silent for 3x this is dead
    peer_queue_limit: int = 8192  # live entries queued per peer before it is resynced
    fetch_wait: float = 3.0  # how long a read of an unknown foreign key waits for peers
    app: str | None = None  # module of the app served at / and /_app/, e.g. "apps.twitter_clone"
