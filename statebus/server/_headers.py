"""Request headers by name, from one dict per request.

Starlette's ``request.headers`` scans the raw header list for every lookup, and a
missing header costs it a KeyError; a write asks for eight headers, most of
them absent. The server (uvicorn) hands them over lowercased, so one dict built
on first use answers every later lookup. A name sent twice keeps its last value.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

SCOPE_KEY = "statebus.headers"


def header(request: HTTPConnection, name: bytes, default: str = "") -> str:
    """The value of header ``name`` (lowercase bytes), or ``default``."""
    found: dict[bytes, bytes] | None = request.scope.get(SCOPE_KEY)
    if found is None:
        found = request.scope[SCOPE_KEY] = dict(request.scope["headers"])
    value = found.get(name)
    return default if value is None else value.decode("latin-1")


def has_header(request: HTTPConnection, name: bytes) -> bool:
    header(request, b"")  # builds the dict
    return name in request.scope[SCOPE_KEY]
