"""Domain errors and their RFC 9457 ``application/problem+json`` rendering.

Every error the API returns is a problem document with ``type``, ``title``, ``status`` and
``detail``, plus ``code`` and ``description`` for OGC API - Features 1.0 clients
(the OGC exception schema). Unexpected exceptions become a generic 500 without internals.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import i18n

log = logging.getLogger("tpa.errors")

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://tpa-gis.org/problems/"
REALM = "tpa-gis"


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


class ServiceBusy(DomainError):
    """Every pooled database connection stayed in use for the pool's queue timeout."""

    status, code, title = 503, "ServiceBusy", "The service is busy"


@cache
def connection_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the database is away or the pool exhausted: connection refused or lost, server
    shutting down or starting, a connection broken mid-operation, pool timeout. (Imported late: this module
    is the base of the error tree and loads before the drivers.)"""
    import asyncpg
    import sqlalchemy.exc

    return (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
            asyncpg.AdminShutdownError, asyncpg.exceptions._base.InternalClientError, sqlalchemy.exc.TimeoutError,
            sqlalchemy.exc.DisconnectionError)


def is_unavailable(exc: BaseException) -> bool:
    """Whether an exception, or one it was raised from, is one of :func:`connection_errors` (or a driver error
    that invalidated its connection)."""
    import sqlalchemy.exc

    seen = 0
    node: BaseException | None = exc
    while node is not None and seen < 8:
        if isinstance(node, connection_errors()):
            return True
        if isinstance(node, sqlalchemy.exc.DBAPIError) and node.connection_invalidated:
            return True
        node = node.__cause__ or node.__context__
        seen += 1
    return False


_DATA_FORMATS = frozenset({"json", "geojson", "csv"})


def _wants_html(request: Request | None) -> bool:
    """Whether an error goes to a browser: ``f=html``, or (no ``f``, or an ``f`` not offered) an Accept header
    preferring HTML."""
    if request is None:
        return False
    f = (request.query_params.get("f") or "").lower()
    if f == "html":
        return True
    if f in _DATA_FORMATS:
        return False
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
    state = getattr(getattr(request, "app", None), "state", None)
    headers: dict[str, str] = {}
    if status in (429, 503):
        settings = getattr(state, "settings", None)
        headers["Retry-After"] = str(settings.api.retry_after_s if settings is not None else 5)
    env = getattr(state, "templates", None)
    response: Response
    if env is not None and _wants_html(request):
        settings = getattr(state, "settings", None)
        lang = i18n.activate_for(request)
        page = env.get_template("error.html").render(
            problem=body, title=settings.api.title if settings is not None else title,
            base=str(request.base_url).rstrip("/"), request_url=str(request.url), lang=lang,
            here=request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        response = HTMLResponse(page, status_code=status, headers={**headers, "Content-Language": lang})
    else:
        response = JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)
    if status == 401:
        # One challenge per header, Basic first: browsers prompt for a user name and password only when a
        # WWW-Authenticate header is a Basic challenge on its own (a combined "Basic …, Bearer" is ignored).
        # Not for a script's request in a browser (fetch, XHR: Sec-Fetch-Mode is not "navigate"): a page such as the
        # portal handles the refusal itself, and a prompt would hold its request until a person answers.
        if request.headers.get("sec-fetch-mode", "navigate") == "navigate":
            response.headers.append("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')
        response.headers.append("WWW-Authenticate", f'Bearer realm="{REALM}"')
    return response


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


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    code = _HTTP_CODES.get(exc.status_code, "HTTPError")
    detail = exc.detail if isinstance(exc.detail, str) else "HTTP error"
    response = problem(exc.status_code, code, detail, detail, request.url.path, request)
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    if exc.status_code == 405:  # Allow lists the methods of every route on this path, not only the matched one
        response.headers["Allow"] = ", ".join(_allowed_methods(request))
    return response


def _allowed_methods(request: Request) -> list[str]:
    """Methods of the path in the API's own description (routes are nested in included routers)."""
    from starlette.routing import compile_path

    state = request.app.state
    table = getattr(state, "allowed_methods", None)
    if table is None:
        table = [(compile_path(path)[0], {m.upper() for m in item if m != "parameters"})
                 for path, item in request.app.openapi().get("paths", {}).items()]
        state.allowed_methods = table
    path = request.url.path
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    methods = {m for regex, methods in table if regex.fullmatch(path) for m in methods}
    if "GET" in methods:
        methods.add("HEAD")  # answered wherever GET is (the service middleware)
    return sorted(methods)


async def _unexpected(request: Request, exc: Exception) -> Response:
    if is_unavailable(exc):  # a connection error that no repository translated: still a 503, not a 500
        log.warning("database unavailable on %s %s (%s)", request.method, request.url.path, type(exc).__name__)
        return problem(503, "ServiceUnavailable", "Database unavailable", "The database is not reachable; try "
                       "again later.", request.url.path, request)
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(500, "ServerError", "Internal server error", "An unexpected error occurred.", request.url.path,
                   request)


def add_exception_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    # connection errors no repository translated are handled inside the app (a 503, not re-raised to the server)
    import sqlalchemy.exc

    for cls in (*connection_errors(), sqlalchemy.exc.DBAPIError):
        app.add_exception_handler(cls, _unexpected)
    app.add_exception_handler(Exception, _unexpected)


# ------------------------------------------------------------------------------------------ OpenAPI
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details (with `code` and `description` of the OGC exception schema).",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
        "detail": {"type": "string"}, "instance": {"type": "string"}, "code": {"type": "string"},
        "description": {"type": "string"},
    },
    "additionalProperties": True,
}
_ANSWERS = {
    "400": "Invalid parameter or input",
    "401": "Missing or invalid API key",
    "403": "The key's role may not do this",
    "404": "Not found",
    "406": "None of the requested formats is offered",
    "413": "Request body too large",
    "415": "Request body in a media type that is not accepted",
    "429": "Rate limit reached (see Retry-After)",
    "503": "Database unavailable or busy, or time limit reached (see Retry-After)",
}
_UNGUARDED = {"/healthz", "/readyz", "/metrics"}


def document_problems(doc: dict[str, Any]) -> dict[str, Any]:
    """Declare the error answers every operation can give, as problem documents: FastAPI documents 422 for
    validation errors, but this service answers 400 (OGC), and the limits (413, 429, 503) apply everywhere."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    retry = {"Retry-After": {"description": "Seconds to wait before trying again", "schema": {"type": "integer"}}}
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            codes = {"429", "503"} if path not in _UNGUARDED else set()
            if path not in _UNGUARDED:
                codes |= {"400", "401", "406"}
            if "{" in path:
                codes.add("404")
            if "requestBody" in op:
                codes |= {"413", "415"}
            for code in sorted(codes | {c for c in responses if c[0] in "45"}):
                entry = responses.setdefault(code, {"description": _ANSWERS.get(code, "Error")})
                content = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
                if method == "get":
                    content["text/html"] = {"schema": {"type": "string"}}
                if code == "503" and entry.get("content"):
                    continue  # /readyz documents its own 503 body
                entry["content"] = content
                if code in ("429", "503"):
                    entry["headers"] = retry
    return doc
