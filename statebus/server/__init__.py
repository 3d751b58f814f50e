"""The node's HTTP server: a Starlette app whose lifespan owns store, bus and federation.

``create_app`` builds the app (:class:`~._front.Front` in front of Starlette:
document requests skip Starlette's stack); nothing exists at import time. The lifespan
opens the store, then the bus, then federation, then the computed keys, in
one exit stack (closed in reverse), loads the sharing rules, and hands them
to routes as typed lifespan state (:class:`NodeState`). Browsers get the
pages of ``_pages`` in front of the document routes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import Route

from ..access import Access, acl_key
from ..bus import Bus
from ..computed import Computed
from ..datadir import DataDir
from ..errors import NotFound
from ..federation import Federation, Policy
from ..grants import Held
from ..identity import Identity
from ..quotas import SpeedBumps
from ..settings import Settings
from ..store import SQLiteStore
from ._auth import token_cookie
from ._errors import HANDLERS
from ._front import DOCUMENT_METHODS, Front
from ._pages import load_app, negotiate, page_routes
from ._peers import auth, hello, peer, peers, push, stream
from ._routes import NodeState, document, health, login
from ._sharing import acl

__all__ = ["NodeState", "create_app"]


def create_app(settings: Settings, *, identity: Identity, owner_token: str) -> Front:
    """The ASGI app of one node. ``app.state.bus`` and ``.computed`` are set while it runs."""
    served = load_app(settings.app) if settings.app else None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[NodeState]:
        datadir = DataDir(settings.data_dir)
        async with AsyncExitStack() as stack:
            store = await stack.enter_async_context(
                SQLiteStore(datadir.database, synchronous=settings.synchronous)
            )
            access = Access(identity.node_id)
            held = Held(datadir.path / "grants.json")
            bus = await stack.enter_async_context(
                Bus(
                    store,
                    identity,
                    held=held,
                    may_write=access.can_write,
                    max_docs=settings.max_docs,
                    idle_seconds=settings.idle_seconds,
                    queue_limit=settings.queue_limit,
                    compact_after=settings.compact_after,
                    heartbeat_seconds=settings.heartbeat_seconds,
                    replay_limit=settings.replay_limit,
                )
            )
            with contextlib.suppress(NotFound):  # nothing shared yet: private is the default
                access.update((await bus.read(acl_key(identity.node_id)))[0])
            bumps = SpeedBumps(settings.limits)
            federation = await stack.enter_async_context(
                Federation(
                    bus,
                    identity,
                    settings,
                    policy=Policy(identity.node_id, access, bus.is_sealed),
                    bumps=bumps,
                    held=held,
                )
            )
            app.state.federation = federation
            computed = Computed(bus)
            if served is not None and served.define is not None:
                served.define(computed)
            await stack.enter_async_context(computed)
            app.state.bus = bus
            app.state.computed = computed
            try:
                yield {
                    "settings": settings,
                    "identity": identity,
                    "bus": bus,
                    "federation": federation,
                    "access": access,
                    "bumps": bumps,
                    "owner_token": owner_token,
                    "owner_cookie": token_cookie(identity.node_id),
                }
            finally:
                app.state.bus = None
                app.state.computed = None
                app.state.federation = None

    endpoint = negotiate(document, served)
    routes = [
        Route("/_health", health),
        Route("/_login", login),
        Route("/_acl", acl, methods=["GET", "PUT", "PATCH"]),
        Route("/_peers", peers, methods=["GET", "POST"]),
        Route("/_peers/{node}", peer, methods=["DELETE"]),
        Route("/_fed/hello", hello, methods=["POST"]),
        Route("/_fed/auth", auth, methods=["POST"]),
        Route("/_fed/stream", stream),
        Route("/_fed/push", push, methods=["POST"]),
        *page_routes(served),
        Route("/{path:path}", endpoint, methods=list(DOCUMENT_METHODS)),  # see Front
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=HANDLERS)
    return Front(app, endpoint)
