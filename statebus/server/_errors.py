"""The one table from error classes to HTTP statuses, and the one JSON shape.

Every error answer is ``{"error": code, "detail": text}``. Starlette resolves
handlers along the MRO, so a family's entry covers its subclasses; routes
never build error responses themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from .. import errors
from ._json import JSONResponse

log = logging.getLogger(__name__)

STATUS: dict[type[errors.StatebusError], int] = {
    errors.RequestError: 400,
    errors.InvalidKey: 400,
    errors.InvalidBody: 400,
    errors.InvalidNodeId: 400,
    errors.NotAuthenticated: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.NotAcceptable: 406,
    errors.Conflict: 409,
    errors.PayloadTooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.QuotaExceeded: 429,
    errors.VerificationError: 422,
    errors.PeerError: 502,
    errors.IdentityError: 500,
    errors.DataDirError: 500,
    errors.StoreError: 503,
    errors.StatebusError: 500,
}


def error_response(
    status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
) -> Response:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


async def statebus_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.StatebusError)
    status = next(STATUS[cls] for cls in type(exc).__mro__ if cls in STATUS)
    headers = None
    if isinstance(exc, errors.QuotaExceeded):
        headers = {"Retry-After": str(max(1, round(exc.retry_after)))}
    elif isinstance(exc, errors.NotAuthenticated):
        headers = {"WWW-Authenticate": 'Bearer realm="statebus"'}
    if status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc.detail)
    return error_response(status, exc.code, exc.detail, headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), exc.headers)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("%s %s crashed", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "the node failed to handle this request")


HANDLERS = {
    errors.StatebusError: statebus_error,
    HTTPException: http_error,
    Exception: unexpected_error,
}
