"""The node's outermost ASGI layer, in front of its Starlette app.

Every document request (a path outside ``/_``, a document method) goes from here
straight to the document endpoint (pages for browsers, reads, writes), answered
by :func:`answer` with the same error answers as the app's. Starlette's
middleware, router and endpoint wrappers stay with the node's machinery
(``/_...``) and with the methods a document does not take (405 from the
router). They would cost a durable write about a third of its time on the loop,
and hold about 5 KiB of coroutine frames and closures for each open event
stream, for the stream's whole life (bench/README.md).

Requests for the app also get the server's own ``send`` in the scope
(``RAW_SEND``): Starlette's middleware wraps ``send`` to learn whether an answer
has started, and a stream that has sent its start through them writes its body
straight to the server.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive, Scope, Send

from ..errors import StatebusError
from ._errors import statebus_error, unexpected_error
from ._pages import Endpoint
from ._sse import RAW_SEND

DOCUMENT_METHODS = ("GET", "HEAD", "PUT", "PATCH", "DELETE")


class Front:
    """``Front(app, document)``: the node's ASGI app; ``state`` is the app's."""

    def __init__(self, app: Starlette, document: Endpoint) -> None:
        self.app = app
        self.document = document

    @property
    def state(self) -> State:
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["method"] in DOCUMENT_METHODS and not scope["path"].startswith("/_"):
                await answer(self.document, scope, receive, send)
                return
            scope[RAW_SEND] = send
        await self.app(scope, receive, send)


async def answer(endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
    """Run an endpoint as Starlette's router would, with the app's error answers."""
    request = Request(scope, receive, send)
    try:
        response = await endpoint(request)
    except ClientDisconnect:
        return  # nobody to answer; nothing was applied
    except StatebusError as exc:
        response = await statebus_error(request, exc)
    except Exception as exc:  # the same last resort as the app's
        response = await unexpected_error(request, exc)
    await response(scope, receive, send)
