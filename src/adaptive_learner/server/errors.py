"""One JSON error shape for every endpoint: ``{"error": {"type", "message", "limit", "request_id"}}``.

Every failure reaches the client in this shape, from one place: a user mistake as 4xx with one
readable line, an unexpected fault as 500 with no detail (it is logged on the server). No
traceback ever leaves the process.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import UserError

log = logging.getLogger("adaptive_learner.server")

_TYPES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          409: "conflict", 413: "limit_exceeded", 415: "unsupported_media_type", 422: "invalid_input",
          429: "limit_exceeded", 503: "unavailable"}


class ApiError(StarletteHTTPException):
    """A request the server refuses: status, a stable type, one line, and the limit it hit (if any).

    An HTTP exception, so that it passes through the framework's body reading unchanged (a body
    over its size cap is refused from inside ``receive``)."""

    def __init__(self, status: int, message: str, limit: str | None = None, type_: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status, detail=message, headers=headers)
        self.status = status
        self.message = message
        self.limit = limit
        self.type = type_ or _TYPES.get(status, "error")
        self.headers = headers


def limit_error(limit: str, message: str, status: int = 413) -> ApiError:
    """A request over one of the server's caps (named by its option, e.g. ``max_inputs``)."""
    return ApiError(status, message, limit=limit, type_="limit_exceeded")


def error_response(request: Request | None, status: int, type_: str, message: str, limit: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    rid = getattr(request.state, "request_id", None) if request is not None else None
    body = {"error": {"type": type_, "message": _one_line(message), "limit": limit, "request_id": rid}}
    return JSONResponse(body, status_code=status, headers=headers)


def _one_line(message: str, width: int = 500) -> str:
    text = " ".join(str(message).split())
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate would fail the JSON encoding
    return text if len(text) <= width else text[: width - 3] + "..."


def describe_validation(exc: RequestValidationError) -> str:
    """The first few validation problems, by field, without echoing the (possibly huge) input."""
    parts = []
    for e in exc.errors()[:3]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    more = len(exc.errors()) - 3
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception to the one error shape."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc.status, exc.type, exc.message, exc.limit, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request, 422, "invalid_input", describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        return error_response(request, exc.status_code, _TYPES.get(exc.status_code, "error"), detail,
                              headers=getattr(exc, "headers", None))

    @app.exception_handler(UserError)
    async def _user(request: Request, exc: UserError) -> JSONResponse:
        return error_response(request, 422, "invalid_input", str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return internal_error(request, exc)


def internal_error(request: Request, exc: BaseException) -> JSONResponse:
    """An unexpected fault: logged here with its traceback, a 500 with no detail for the client."""
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(request, 500, "internal", "internal error; the server log has the details")


def as_api_error(exc: BaseException) -> Any:
    """A user mistake found in the model thread, as the error the client sees."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, UserError):
        return ApiError(422, str(exc))
    return exc
