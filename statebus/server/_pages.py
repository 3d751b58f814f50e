"""The node's pages: the key browser under ``/_ui/``, the app under ``/_app/``,
and the content negotiation that shows them to a browser.

A ``GET`` whose ``Accept`` prefers ``text/html`` gets a page instead of data:
at ``/`` the app (when the node serves one, else the key browser), at any
other key the key browser open at that key. Every other answer (JSON, SSE,
binary) is left to the document routes. Pages are static files that speak to
the node through the same public HTTP surface as any client, so they are
served without the owner token; the data they ask for is not.

An app is a Python module (``Settings.app``, e.g. ``apps.twitter_clone``)
whose directory holds its static files; it may define computed keys with a
function ``define(computed: Computed) -> None``.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import mimeparse
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Scope

from ..computed import Computed
from ..errors import NotAcceptable, StartupError

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parents[2] / "web"  # in the source tree (editable install)
HTML_TYPE = "text/html"
# text/html first: mimeparse breaks ties towards the end, so `*/*` (curl) stays a stream.
OFFERED = [HTML_TYPE, "application/octet-stream", "application/json", "text/event-stream"]
IMAGE_PROBE = "image/png"
SERVED_SUFFIXES = frozenset({".html", ".js", ".css", ".svg", ".png", ".ico", ".json", ".txt"})
PAGE_HEADERS = {
    # Pages build their DOM from data with textContent only; this is the second lock.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        "form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

Endpoint = Callable[[Request], Awaitable[Response | ASGIApp]]


@dataclass(frozen=True, slots=True)
class App:
    """An app the node serves: its files, and the computed keys it defines."""

    module: str
    directory: Path
    define: Callable[[Computed], None] | None


def load_app(module: str) -> App:
    """Import the app module named in the settings; a StartupError says why it cannot be."""
    try:
        loaded = importlib.import_module(module)
    except ImportError as exc:
        raise StartupError(f"cannot load the app {module!r}: {exc}") from None
    if loaded.__file__ is None:
        raise StartupError(f"the app {module!r} is not a package with files")
    directory = Path(loaded.__file__).resolve().parent
    if not (directory / "index.html").is_file():
        raise StartupError(f"the app {module!r} has no index.html in {directory}")
    return App(module, directory, getattr(loaded, "define", None))


class _PageFiles(StaticFiles):
    """Static files of the pages only (no Python sources), with the page headers."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        if Path(full_path).suffix not in SERVED_SUFFIXES:
            raise HTTPException(404)
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(PAGE_HEADERS)
        return response


def page_routes(app: App | None) -> list[BaseRoute]:
    routes: list[BaseRoute] = []
    if (WEB_DIR / "index.html").is_file():
        routes.append(Mount("/_ui", _PageFiles(directory=WEB_DIR, html=True)))
    else:
        log.warning("the key browser's files are not in %s: browsers get data, not pages", WEB_DIR)
    if app is not None:
        routes.append(Mount("/_app", _PageFiles(directory=app.directory, html=True)))
    return routes


def _preferred(request: Request) -> str:
    """What the request prefers of a page, an image, or the data types."""
    accept = request.headers.get("accept", "")
    return mimeparse.best_match([IMAGE_PROBE, *OFFERED], accept) if accept else ""


def negotiate(document: Endpoint, app: App | None) -> Endpoint:
    """The document endpoint, with pages for browsers in front of it."""
    key_browser = WEB_DIR / "index.html"
    front = app.directory / "index.html" if app is not None else key_browser
    if not key_browser.is_file():
        return document

    async def endpoint(request: Request) -> Response | ASGIApp:
        if request.method in ("GET", "HEAD"):
            preferred = _preferred(request)
            if preferred == HTML_TYPE:
                page = front if request.url.path == "/" else key_browser
                return FileResponse(page, headers={**PAGE_HEADERS, "Vary": "Accept"})
            if preferred == IMAGE_PROBE:
                # A browser's <img> or favicon request, which would otherwise hold a
                # connection open forever as an event stream.
                raise NotAcceptable("keys are not images; ask for JSON or an event stream")
        return await document(request)

    return endpoint
