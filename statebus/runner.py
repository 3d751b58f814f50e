"""Running a node: its uvicorn server, in the current event loop, on a socket it binds.

The CLI runs one; tests run several in one loop. ``async with NodeServer(...)``
returns once the node answers (readiness is an event, not a sleep) and leaves
only after the server and its lifespan have shut down. Signals are the
caller's business: the CLI maps SIGINT/SIGTERM to :meth:`NodeServer.stop`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from collections.abc import Generator
from types import TracebackType
from typing import Self

import anyio
import anyio.to_thread
import uvicorn
from anyio.abc import TaskGroup, TaskStatus

from .bus import Bus
from .datadir import DataDir
from .errors import StartupError
from .federation import Federation
from .identity import Identity
from .server import create_app
from .server._front import Front
from .server._http import HttpProtocol
from .settings import Settings

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn's server with a readiness event and without its signal handlers."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = anyio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket, or a one-line StartupError saying why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose
    # proto says TCP, and without it Nagle + delayed ACKs add 40 ms to answers.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(f"port {port} on {host} is already in use") from None
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


class NodeServer:
    """One node: prepares its data directory, binds, and serves until stopped.

    ``await tg.start(node.run)`` returns once the node answers; :meth:`stop`
    asks it to end and :attr:`stopped` is set once server and lifespan have
    shut down. ``async with NodeServer(...)`` does both in its own task group,
    for callers whose scopes nest (the CLI).
    """

    def __init__(
        self, settings: Settings, *, identity: Identity | None = None, log_level: str = "warning"
    ) -> None:
        self.settings = settings
        self.datadir = DataDir(settings.data_dir)
        self.identity = identity
        self._log_level = log_level
        self._server: _Server | None = None
        self._tg: TaskGroup | None = None
        self.app: Front | None = None
        self.stopped = anyio.Event()
        self.url = ""
        self.owner_token = ""

    async def run(self, *, task_status: TaskStatus[NodeServer] = anyio.TASK_STATUS_IGNORED) -> None:
        self.datadir.ensure()
        self.owner_token = self.datadir.owner_token()
        if self.identity is None:
            self.identity = await anyio.to_thread.run_sync(
                Identity.load_or_create, self.settings.data_dir, self.settings.passphrase
            )
        sock = bind(self.settings.host, self.settings.port)
        host, port = sock.getsockname()[:2]
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        self.app = create_app(self.settings, identity=self.identity, owner_token=self.owner_token)
        config = uvicorn.Config(
            self.app,
            lifespan="on",
            access_log=False,
            log_level=self._log_level,
            http=HttpProtocol,  # uvicorn's httptools protocol, a head sent with its body
            # The node uses no X-Forwarded-* header (it names a visitor by its socket's
            # address in the log at most), and the middleware costs every request.
            proxy_headers=False,
            timeout_graceful_shutdown=5,
            timeout_keep_alive=30,
        )
        server = self._server = _Server(config)
        finished = anyio.Event()

        async def serve() -> None:
            try:
                await server.serve(sockets=[sock])
            except SystemExit:  # uvicorn's answer to a failed lifespan startup
                log.error("the node's app failed to start")
            finally:
                sock.close()
                finished.set()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(serve)
                await _first(server.ready, finished)
                if not server.ready.is_set():
                    raise StartupError("the node failed to start (see the log above)")
                self.datadir.write_address(self.url)
                task_status.started(self)
                await finished.wait()
        finally:
            self.datadir.clear_address()
            self.stopped.set()

    @property
    def bus(self) -> Bus:
        bus: Bus | None = getattr(self.app.state, "bus", None) if self.app else None
        if bus is None:
            raise RuntimeError("the node is not running")
        return bus

    def stop(self) -> None:
        """Ask the node to stop: streams end first, then the server drains and exits."""
        bus: Bus | None = getattr(self.app.state, "bus", None) if self.app else None
        if bus is not None:
            bus.close_streams()
        federation: Federation | None = (
            getattr(self.app.state, "federation", None) if self.app else None
        )
        if federation is not None:
            federation.close_streams()
        if self._server is not None:
            self._server.should_exit = True

    async def __aenter__(self) -> Self:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            await self._tg.start(self.run)
        except BaseException as exc:
            await self._tg.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        assert self._tg is not None
        await self._tg.__aexit__(exc_type, exc, tb)


async def _first(*events: anyio.Event) -> None:
    """Return as soon as one of the events is set."""
    async with anyio.create_task_group() as tg:

        async def wait(event: anyio.Event) -> None:
            await event.wait()
            tg.cancel_scope.cancel()

        for event in events:
            tg.start_soon(wait, event)
