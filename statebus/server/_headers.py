"""Request headers by name, from one dict per request.

Starlette's ``request.headers`` scans the raw header list for every lookup, and a
missing header costs it a KeyError; a write asks for eight headers, most of
them absent. The server (uvicorn) hands them over lowercased, so one dict built
on first use answers every later lookup. A name sent twice keeps its last value.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

SCOPE_KEY = "statebus.headers"


def _by_name(request: HTTPConnection) -> dict[bytes, bytes]:
    found: dict[bytes, bytes] | None = request.scope.get(SCOPE_KEY)
    if found is None:
        found = request.scope[SCOPE_KEY] = dict(request.scope["headers"])
    return found


def header(request: HTTPConnection, name: bytes) -> str:
    """The value of header ``name`` (lowercase bytes), or "" when it is absent."""
    value = _by_name(request).get(name)
    return "" if value is None else value.decode("latin-1")


def has_header(request: HTTPConnection, name: bytes) -> bool:
    """Whether header ``name`` was sent at all (even empty)."""
    return name in _by_name(request)
