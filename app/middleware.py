"""The service's outer layer (pure ASGI, one pass per request): request id, access log, metrics, security
headers, and the limits that protect the service — request body size, request time and a rate limit per API key.

Refusals are RFC 9457 problem documents like every other error: 413 (body too large), 429 (rate limit, with
``Retry-After``), 503 (time limit, with ``Retry-After``). Written as plain ASGI rather than Starlette's
``BaseHTTPMiddleware`` so streamed responses (GeoJSON and CSV pages) pass through untouched and context
variables (the request id in log lines) reach the endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import secrets
import time
import uuid
from collections import OrderedDict

import asyncpg
from starlette.datastructures import MutableHeaders
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth import key_from_authorization, session_key, split_key
from app.errors import problem
from app.observability import Metrics, csp_nonce, request_id
from app.settings import ApiSettings

log = logging.getLogger("tpa.access")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class _BodyTooLarge(Exception):
    pass


class TokenBuckets:
    """Token buckets per client (API key id, else client address): ``rate`` requests per minute, ``burst``
    at once. Least recently seen clients are forgotten beyond ``max_clients``."""

    def __init__(self, per_minute: int, burst: int, max_clients: int = 100_000) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(max(burst, 1))
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str, now: float | None = None) -> float:
        """0 when the request may pass, else the seconds until a token is free."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


# The generic cell rate algorithm (GCRA, ITU-T I.371; the "virtual scheduling" form of a token bucket) in one
# statement: one number per client, the theoretical arrival time (tat), updated under the row's lock, so requests on
# every worker and machine count against one allowance. $2 = the emission interval T (60 / requests per minute),
# $3 = the tolerance τ = (burst − 1)·T: a request at `now` passes when max(tat, now) − now ≤ τ and moves tat on by
# T. This allows exactly what :class:`TokenBuckets` allows (burst at once, then one per T). The database's clock
# is the only clock: machines' clocks may differ. In the UPDATE, b.* are the old values and EXCLUDED.seen is now.
GCRA = """
INSERT INTO rate_bucket AS b (client, tat, seen, ok)
SELECT $1, n.t + $2, n.t, true FROM (SELECT extract(epoch FROM clock_timestamp())::float8 AS t) AS n
ON CONFLICT (client) DO UPDATE SET
  ok = greatest(b.tat, EXCLUDED.seen) - EXCLUDED.seen <= $3,
  tat = CASE WHEN greatest(b.tat, EXCLUDED.seen) - EXCLUDED.seen <= $3
             THEN greatest(b.tat, EXCLUDED.seen) + $2 ELSE b.tat END,
  seen = EXCLUDED.seen
RETURNING ok, tat - seen - $3 AS wait"""
# a row whose tat has passed is a full allowance, the same as no row
SWEEP = "DELETE FROM rate_bucket WHERE tat < extract(epoch FROM clock_timestamp()) - 60"
SWEEP_EVERY_S = 60.0
SHARED_DOWN_S = 5.0  # after a failure, count locally this long before asking the database again


class SharedLimits:
    """The rate limits of all API workers and machines, kept in PostgreSQL (table ``rate_bucket``, GCRA above).

    One short statement per limited request on a small pool of its own (never the requests' pools, so a busy read
    path does not hold the limit up). When the database does not answer within ``timeout_s``, the worker counts
    with its own :class:`TokenBuckets` for a few seconds: a limit that cannot be checked must not refuse or delay
    requests (those that need the database get their own 503)."""

    def __init__(self, pool: asyncpg.Pool, timeout_s: float = 1.0) -> None:
        self.pool = pool
        self.timeout_s = timeout_s
        self._swept = 0.0
        self._down_until = 0.0

    async def take(self, client: str, local: TokenBuckets) -> float:
        now = time.monotonic()
        if now < self._down_until:
            return local.take(client, now)
        interval = 1.0 / local.rate
        try:
            async with asyncio.timeout(self.timeout_s):
                row = await self.pool.fetchrow(GCRA, client, interval, (local.burst - 1.0) * interval)
                if now - self._swept > SWEEP_EVERY_S:
                    self._swept = now
                    await self.pool.execute(SWEEP)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("shared rate limit unavailable (%s); counting in this worker for %g s",
                        type(exc).__name__, SHARED_DOWN_S)
            self._down_until = now + SHARED_DOWN_S
            return local.take(client, now)
        return 0.0 if row["ok"] else max(float(row["wait"]), 1e-3)

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.pool.close(), 5.0)
        except TimeoutError:
            self.pool.terminate()


def _client(scope: Scope, headers: dict[bytes, bytes]) -> tuple[str, bool]:
    """(identity, authenticated) of the caller for the rate limit: the key's public id when a key is sent."""
    with contextlib.suppress(ValueError):  # a malformed header is refused later (401); limited by address here
        key = key_from_authorization(headers.get(b"authorization", b"").decode("latin-1"))
        if key:
            return f"key:{split_key(key) or key[:24]}", True
    key = session_key(headers.get(b"cookie", b"").decode("latin-1"))  # the portal's sign-in
    if key:
        return f"key:{split_key(key) or key[:24]}", True
    client = scope.get("client")
    return f"addr:{client[0] if client else 'unknown'}", False


def content_security_policy(nonce: str, basemap_url: str) -> str:
    img = "'self' data: blob:"
    if basemap_url:
        m = re.match(r"(https?://[^/{}]+)", basemap_url)
        if m:
            img += f" {m.group(1)}"
    return (f"default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; "
            f"img-src {img}; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
            "frame-ancestors 'none'")


class CompressedAssets:
    """gzip where the weight of a page is (Accept-Encoding permitting): static files (MapLibre GL JS is 1.4 MB, a
    quarter of that compressed), vector tiles and the portal's pages. The API's other answers are left as they are
    (their throughput is what the benches measure, and bulk formats are compressed already)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=1024, compresslevel=6)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path.startswith(("/static/", "/portal")) or "/tiles/" in path:
            await self.gzip(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class ServiceMiddleware:
    def __init__(self, app: ASGIApp, settings: ApiSettings, metrics: Metrics, sync_limit_s: float) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.sync_limit_s = sync_limit_s
        self.keys = TokenBuckets(settings.rate_limit_per_minute, settings.rate_limit_burst) \
            if settings.rate_limit_per_minute else None
        self.anonymous = TokenBuckets(settings.rate_limit_anonymous_per_minute, settings.rate_limit_burst) \
            if settings.rate_limit_anonymous_per_minute else None

    def _time_limit(self, scope: Scope) -> float:
        if scope["method"] == "POST" and scope["path"].startswith("/processes/"):
            # a synchronous execution has its own (longer) limit and answers 503 itself when it is reached
            return max(self.settings.request_timeout_s, self.sync_limit_s + 15.0)
        return self.settings.request_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        head = method == "HEAD"
        if head:  # HEAD wherever GET is served: the GET answer's status and headers, without its body
            scope = {**scope, "method": "GET"}
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        rid_token = request_id.set(rid)
        nonce = secrets.token_urlsafe(16)
        nonce_token = csp_nonce.set(nonce)
        started = time.perf_counter()
        state = {"status": 500, "started": False, "refused": False}
        authenticated = b"authorization" in headers or session_key(headers.get(b"cookie", b"").decode("latin-1")) \
            is not None
        s = self.settings

        async def send_wrapper(message: Message) -> None:
            if state["refused"]:
                return  # the answer (413) is already sent; what the application still sends is dropped
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["started"] = True
                h = MutableHeaders(scope=message)
                h["X-Request-ID"] = rid
                h.setdefault("X-Content-Type-Options", "nosniff")
                h.setdefault("Referrer-Policy", "no-referrer")
                h.setdefault("X-Frame-Options", "DENY")
                if authenticated and "cache-control" not in h:
                    h["Cache-Control"] = "private, no-store"  # personal data: never in a shared cache
                if h.get("content-type", "").startswith("text/html"):
                    h["Content-Security-Policy"] = content_security_policy(nonce, s.basemap_url)
                    h.setdefault("Cross-Origin-Opener-Policy", "same-origin")
            elif head and message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # the rest of a streamed body is not sent (the application still writes it)
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        received = 0

        async def too_large() -> None:
            await self._refuse(scope, send_wrapper, 413, "PayloadTooLarge", "Request body too large",
                               f"The request body exceeds {s.max_body_bytes} bytes.")

        async def receive_limited() -> Message:
            # a body without Content-Length (chunked) is counted as it arrives: past the limit the client gets
            # 413 at once and the application sees a disconnected client (nothing of the body is processed)
            nonlocal received, reason
            message = await receive()
            if message["type"] == "http.request" and not state["refused"]:
                received += len(message.get("body", b""))
                if received > s.max_body_bytes:
                    if state["started"]:
                        raise _BodyTooLarge
                    reason = "body_too_large"
                    await too_large()
                    state["refused"] = True
                    return {"type": "http.disconnect"}
            return message

        self.metrics.in_flight.inc()
        reason = None
        try:
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > s.max_body_bytes):
                reason = "body_too_large"
                await too_large()
                return
            if scope["path"] not in UNLIMITED_PATHS:
                client, keyed = _client(scope, headers)
                buckets = self.keys if keyed else self.anonymous
                wait = 0.0
                if buckets is not None:
                    shared: SharedLimits | None = getattr(scope["app"].state, "limits", None) \
                        if "app" in scope else None
                    wait = await shared.take(client, buckets) if shared is not None else buckets.take(client)
                if wait > 0:
                    reason = "rate_limited"
                    await self._refuse(scope, send_wrapper, 429, "TooManyRequests", "Too many requests",
                                       "The rate limit of this client is reached; try again later.",
                                       retry_after=math.ceil(wait))
                    return
            limit = self._time_limit(scope)
            try:
                async with asyncio.timeout(limit) as cm:
                    await self.app(scope, receive_limited, send_wrapper)
            except TimeoutError:
                if not cm.expired() or state["started"]:
                    raise
                reason = "timeout"
                log.warning("request stopped after its time limit of %g s", limit)
                await self._refuse(scope, send_wrapper, 503, "RequestTimeout", "The request took too long",
                                   f"The request was stopped after {limit:g} s; narrow it (bbox, filter, limit) "
                                   "or, for a process, execute it asynchronously.", retry_after=s.retry_after_s)
            except asyncio.CancelledError:
                if not state["started"]:
                    state["status"] = 499  # the client went away before an answer (nginx's "client closed")
                raise
            except Exception:
                if not state["refused"]:  # after a 413, the application's reaction to the disconnect is moot
                    raise
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(method, template, str(state["status"])).inc()
            self.metrics.latency.labels(method, template).observe(elapsed)
            if reason:
                self.metrics.rejected.labels(reason).inc()
            if s.access_log:
                client = scope.get("client")
                log.info("%s %s %s", method, scope["path"], state["status"], extra={
                    "method": method, "path": scope["path"], "route": template, "status": state["status"],
                    "duration_ms": round(elapsed * 1000, 2), "client": client[0] if client else None})
            request_id.reset(rid_token)
            csp_nonce.reset(nonce_token)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, status: int, code: str, title: str, detail: str,
                      retry_after: int | None = None) -> None:
        response = problem(status, code, title, detail, scope["path"])
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)

        async def empty() -> Message:  # the request body is never read
            return {"type": "http.disconnect"}

        await response(scope, empty, send)
