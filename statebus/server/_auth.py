"""Who is asking: the owner (by token or cookie) or an anonymous visitor."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from ..identity import NodeId
from ._headers import header


def token_cookie(node_id: NodeId) -> str:
    """The owner cookie's name, one per node: browsers keep cookies per host, not per
    port, so two nodes on one machine (8765 and 8766) need two names, or the second
    login would put the first node's cookie out."""
    return f"statebus_token_{node_id[:16]}"


def presented_token(request: Request, cookie: str) -> str | None:
    """The bearer token of the request: Authorization header first, then the cookie
    named ``cookie``."""
    scheme, _, credentials = header(request, b"authorization").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.cookies.get(cookie)


def is_owner(request: Request, node: Mapping[str, Any]) -> bool:
    """Whether the request carries the node's owner token (``node``: its NodeState)."""
    token = presented_token(request, node["owner_cookie"])
    return token is not None and hmac.compare_digest(token.encode(), node["owner_token"].encode())
