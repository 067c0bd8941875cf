"""API keys and roles. Anonymous callers are the public; keys carry the role ``analyst`` or ``admin``.

Keys look like ``tpa_<10 hex>_<secret>`` and are accepted as ``Authorization: Bearer <key>`` or as
HTTP Basic credentials (the key as password, any user name; or the key as user name with an empty
password), so QGIS and GDAL can use their standard authentication settings. Only SHA-256 hashes are
stored; verified keys are cached for a few seconds per process.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Forbidden, Unauthorized
from app.models.codes import Role, allowed
from app.repositories import keys as keys_repo

KEY_PREFIX = "tpa_"
SIGN_IN = ("send an API key: 'Authorization: Bearer <key>', or HTTP Basic with the key as the password (any user "
           "name; browsers ask for it).")
CACHE_SECONDS = 10.0


@dataclass(frozen=True)
class NewKey:
    key: str
    prefix: str
    role: Role


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def split_key(key: str) -> str | None:
    """The lookup prefix of a well-formed key, else None."""
    if not key.startswith(KEY_PREFIX) or len(key) < 20 or key[14] != "_":
        return None
    prefix = key[4:14]
    if not all(c in "0123456789abcdef" for c in prefix):
        return None
    return prefix


async def create_key(session: AsyncSession, role: Role, name: str, days: int | None = None) -> NewKey:
    prefix = secrets.token_hex(5)
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=days) if days else None
    await keys_repo.insert_key(session, prefix, hash_key(key), role.value, name, expires)
    return NewKey(key, prefix, role)


def key_from_authorization(header: str | None) -> str | None:
    """The API key in an Authorization header (Bearer, or Basic with the key as password or user name);
    None without one; ValueError when the header is malformed."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "bearer" and value:
        return value
    if scheme == "basic" and value:
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise ValueError("Malformed Basic credentials.") from None
        return password or user
    raise ValueError("Use 'Authorization: Bearer <key>' or HTTP Basic with the key as password.")


# The portal's sign-in: the key a person typed is kept in an httpOnly, SameSite=Strict cookie, so the browser sends
# it with the portal's own requests (tiles, items, jobs) and scripts never read it. The cookie holds the key itself,
# not a server-side session: revoking or expiring the key signs the browser out, and every worker verifies it the
# same way. Requests that change something and are signed in only by the cookie must also carry the page's CSRF
# token (a header scripts of another site cannot set; SameSite=Strict already keeps the cookie off their requests).
SESSION_COOKIE = "tpa_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token(key: str) -> str:
    """The CSRF token of a session: derived from its key (HMAC), so it needs no storage and dies with the key."""
    return hmac.new(key.encode(), b"tpa-portal-csrf", hashlib.sha256).hexdigest()


def session_key(cookie_header: str | None) -> str | None:
    """The key of the portal's session cookie in a Cookie header (for the rate limit, which sees raw headers)."""
    for part in (cookie_header or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == SESSION_COOKIE and value:
            return value
    return None


def credentials(request: Request) -> str | None:
    try:
        key = key_from_authorization(request.headers.get("authorization"))
    except ValueError as exc:
        raise Unauthorized(str(exc)) from None
    if key is not None:
        return key
    key = request.cookies.get(SESSION_COOKIE) or None
    if key is not None:
        request.state.by_cookie = True
        if request.method not in SAFE_METHODS and not hmac.compare_digest(
                request.headers.get(CSRF_HEADER, ""), csrf_token(key)):
            raise Forbidden("This request is signed in by the portal's session cookie but lacks its CSRF token "
                            f"(header {CSRF_HEADER.title()}); send the key in an Authorization header instead.")
    return key


class KeyCache:
    """Verified keys (role and name, or None for a refused key) per key hash, for CACHE_SECONDS."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[float, tuple[Role, str] | None]] = {}

    def get(self, key_hash: str) -> tuple[bool, tuple[Role, str] | None]:
        hit = self._data.get(key_hash)
        if hit and hit[0] > time.monotonic():
            return True, hit[1]
        return False, None

    def put(self, key_hash: str, found: tuple[Role, str] | None) -> None:
        if len(self._data) > 10_000:
            self._data.clear()
        self._data[key_hash] = (time.monotonic() + CACHE_SECONDS, found)


async def verified(request: Request, key: str) -> tuple[Role, str] | None:
    """(role, name) of a key that is known, not revoked and not expired; None otherwise. Sets the request's actor."""
    cache: KeyCache = request.app.state.key_cache
    digest = hash_key(key)
    hit, found = cache.get(digest)
    if not hit:
        found = None
        prefix = split_key(key)
        if prefix is not None:
            async with request.app.state.engine.connect() as conn:
                row = await keys_repo.key_by_prefix(conn, prefix)
            now = dt.datetime.now(dt.UTC)
            if (
                row is not None and hmac.compare_digest(row.key_hash, digest) and row.revoked is None
                and (row.expires is None or row.expires > now)
            ):
                found = (Role(row.role), row.name)
        cache.put(digest, found)
    if found is not None:
        request.state.actor = f"key:{split_key(key)}"  # the key's public id, as `tpa keys list` shows it
        request.state.key_name = found[1]  # its name (`tpa keys create --name`): the source of features it creates
    return found


async def current_role(request: Request) -> Role | None:
    """The caller's role: None for anonymous; 401 for a key that is unknown, revoked or expired."""
    key = credentials(request)
    if key is None:
        return None
    found = await verified(request, key)
    if found is None:
        if getattr(request.state, "by_cookie", False):
            return None  # a session whose key was revoked or expired: the browser is simply signed out
        raise Unauthorized("The API key is not valid (unknown, revoked or expired).")
    return found[0]


RoleDep = Annotated[Role | None, Depends(current_role)]




def require(role: Role | None, needed: Role | None, what: str = "this resource") -> None:
    """401 for anonymous callers, 403 for a role below ``needed``."""
    if allowed(role, needed):
        return
    if role is None:
        raise Unauthorized(f"Authentication is required for {what}: {SIGN_IN}")
    raise Forbidden(f"The role '{role.value}' may not read {what}.")


# ------------------------------------------------------------------------------------------ OpenAPI
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "bearerAuth": {"type": "http", "scheme": "bearer",
                   "description": "An API key (`tpa keys create`) as `Authorization: Bearer <key>`."},
    "basicAuth": {"type": "http", "scheme": "basic",
                  "description": "HTTP Basic with the API key as the password and any user name: what browsers, "
                  "QGIS and GDAL send."},
}
_KEYED = [{"bearerAuth": []}, {"basicAuth": []}]
_PUBLIC = {"/", "/conformance", "/api", "/api.html", "/healthz", "/readyz", "/metrics"}


def key_required(path: str, method: str) -> bool:
    """Operations that refuse anonymous callers whatever the data: editing features and listing jobs."""
    return (method in ("post", "put", "patch", "delete") and path.startswith("/collections/")) or \
        (path == "/jobs" and method == "get")


def document_security(doc: dict) -> dict:
    """Declare the two ways to send a key (an Authorize button in Swagger UI, auth in generated clients) and, per
    operation, whether a key is required, optional (the answer depends on the caller's role) or not used."""
    doc.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            if path in _PUBLIC:
                op["security"] = []
            elif key_required(path, method):
                op["security"] = list(_KEYED)
            else:
                op["security"] = [{}, *_KEYED]  # optional: anonymous callers see the public part
    return doc
