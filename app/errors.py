"""Domain errors and their RFC 9457 ``application/problem+json`` rendering.

Every error the API returns is a problem document with ``type``, ``title``, ``status`` and
``detail``, plus ``code`` and ``description`` for OGC API - Features 1.0 clients
(the OGC exception schema). Unexpected exceptions become a generic 500 without internals.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("tpa.errors")

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://tpa-gis.org/problems/"


class DomainError(Exception):
    """Base of all errors that carry a safe, user-facing message."""

    status: int = 500
    code: str = "ServerError"
    title: str = "Internal server error"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = {k: v for k, v in extra.items() if v is not None}

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.code


class InvalidParameter(DomainError):
    status, code, title = 400, "InvalidParameterValue", "Invalid parameter value"


class InvalidData(DomainError):
    status, code, title = 400, "InvalidData", "Invalid data"


class ConstraintViolation(DomainError):
    status, code, title = 409, "ConstraintViolation", "Data rule violated"


class NotFound(DomainError):
    status, code, title = 404, "NotFound", "Not found"


class Conflict(DomainError):
    status, code, title = 409, "Conflict", "Conflicts with the current data"


class PreconditionFailed(DomainError):
    status, code, title = 412, "PreconditionFailed", "Precondition failed"


class UnsupportedMediaType(DomainError):
    status, code, title = 415, "UnsupportedMediaType", "Unsupported media type"


class Unauthorized(DomainError):
    status, code, title = 401, "Unauthorized", "Authentication required"


class Forbidden(DomainError):
    status, code, title = 403, "Forbidden", "Not allowed"


class DatabaseUnavailable(DomainError):
    status, code, title = 503, "ServiceUnavailable", "Database unavailable"


def _wants_html(request: Request | None) -> bool:
    if request is None:
        return False
    f = request.query_params.get("f")
    if f is not None:
        return f.lower() == "html"
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "json" not in accept.split("text/html")[0]


def problem(
    status: int, code: str, title: str, detail: str, instance: str | None = None, request: Request | None = None,
    **extra: Any,
) -> Response:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "description": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    headers = {"WWW-Authenticate": 'Basic realm="tpa-gis", Bearer'} if status == 401 else None
    env = getattr(getattr(getattr(request, "app", None), "state", None), "templates", None)
    if env is not None and _wants_html(request):
        page = env.get_template("error.html").render(problem=body, title=title, base=str(request.base_url).rstrip("/"))
        return HTMLResponse(page, status_code=status, headers=headers)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


async def _domain_error(request: Request, exc: DomainError) -> JSONResponse:
    if exc.status >= 500:
        log.warning("%s on %s: %s", exc.code, request.url.path, exc.detail)
    return problem(exc.status, exc.code, exc.title, exc.detail, request.url.path, request, **exc.extra)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    # OGC API wants 400 for malformed parameters, not FastAPI's 422.
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "path", "body"))
        parts.append(f"{loc or 'request'}: {err.get('msg', 'invalid')}")
    return problem(400, "InvalidParameterValue", "Invalid parameter value", "; ".join(parts), request.url.path,
                   request)


_HTTP_CODES = {
    400: "InvalidParameterValue",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    415: "UnsupportedMediaType",
}


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _HTTP_CODES.get(exc.status_code, "HTTPError")
    detail = exc.detail if isinstance(exc.detail, str) else "HTTP error"
    return problem(exc.status_code, code, detail, detail, request.url.path, request)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(500, "ServerError", "Internal server error", "An unexpected error occurred.", request.url.path,
                   request)


def add_exception_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
