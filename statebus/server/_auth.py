"""Who is asking: the owner (by token or cookie) or an anonymous visitor."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from ..identity import NodeId


def token_cookie(node_id: NodeId) -> str:
    """The owner cookie's name, one per node: browsers keep cookies per host, not per
    port, so two nodes on one machine (8765 and 8766) need two names, or the second
    login would put the first node's cookie out."""
    return f"statebus_token_{node_id[:16]}"


def presented_token(request: Request) -> str | None:
    """The bearer token of the request: Authorization header first, then the cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    name: str = request.state.owner_cookie
    return request.cookies.get(name)


def is_owner(request: Request, owner_token: str) -> bool:
    token = presented_token(request)
    return token is not None and hmac.compare_digest(token.encode(), owner_token.encode())
