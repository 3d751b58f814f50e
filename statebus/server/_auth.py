"""Who is asking: the owner (by token or cookie) or an anonymous visitor."""

from __future__ import annotations

import hmac

from starlette.requests import Request

TOKEN_COOKIE = "statebus_token"


def presented_token(request: Request) -> str | None:
    """The bearer token of the request: Authorization header first, then the cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.cookies.get(TOKEN_COOKIE)


def is_owner(request: Request, owner_token: str) -> bool:
    token = presented_token(request)
    return token is not None and hmac.compare_digest(token.encode(), owner_token.encode())
