"""Writes for OGC API - Features Part 4: one transaction per request, with the row locked, the ETag
checked, the change made and the audit row written; any failure rolls all of it back."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Table, delete, func, insert, literal_column, null, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.db import translated_errors
from app.errors import Conflict, ConstraintViolation, DomainError, InvalidData, NotFound, PreconditionFailed
from app.layers.catalog import Layer
from app.models.codes import Role
from app.models.orm import AuditLog
from app.repositories.features import feature_text

DEFAULT = literal_column("DEFAULT")


@dataclass(frozen=True)
class Change:
    """Column values for the main table and, for villages, the linked admin unit."""

    main: dict[str, Any]
    linked: dict[str, Any]
    geometry: Any = None  # SQL expression of the new geometry (in storage CRS), or None to leave it
    geometry_given: bool = False


@dataclass(frozen=True)
class Written:
    feature: str | None  # GeoJSON text after the change (None after a delete)
    etag: str | None
    fid: Any = None  # the feature's id (assigned by the server when a create gave none)


_NEXT_IN_SEQUENCE = """
SELECT p, max(d::numeric) AS n, max(length(d)) AS w FROM (
  SELECT substring(x FROM '^(.*?)[0-9]+$') AS p, substring(x FROM '([0-9]+)$') AS d
  FROM (SELECT CAST({id} AS text) AS x FROM {table} WHERE {scope}) ids) s
WHERE d IS NOT NULL {only} GROUP BY p ORDER BY p DESC LIMIT 1
"""


async def assign_id(conn: AsyncConnection, layer: Layer, change: Change) -> str:
    """An id for a feature created without one, in the collection's scheme (``Editable.id_scheme``); taken under
    a transaction lock, so concurrent creates get different ids."""
    edit = layer.editable
    assert edit is not None
    if edit.id_scheme == "hex64":
        return secrets.token_hex(32)
    ident = f'"{edit.id_column}"'
    if edit.id_scheme == "child":
        parent = change.linked.get("parent_code")
        if not isinstance(parent, str) or not parent:
            raise InvalidData(f"Give the new feature's id, or its parent unit's code in 'parent_code' ({layer.id} "
                              "codes continue their parent's code).")
        scope, only, key = f"left(CAST({ident} AS text), length(:scope)) = :scope", "AND p = :scope", parent
    else:
        region = change.main.get("region_id")
        if not isinstance(region, str) or not region:
            raise InvalidData("Give the new feature's 'region' (its id is the next one of the region's).")
        scope, only, key = "region_id = :scope", "", region
    await conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:lock, 0))"),
                       {"lock": f"tpa-new-id:{layer.id}:{key}"})
    row = (await conn.execute(text(_NEXT_IN_SEQUENCE.format(id=ident, table=f'"{edit.table.name}"', scope=scope,
                                                            only=only)), {"scope": key})).first()
    if row is None:  # the first of its kind: the parent's code and 001, or the region's id and 00001
        prefix, n, width = (key, 0, 3) if edit.id_scheme == "child" else (f"{key.upper()}-", 0, 5)
    else:
        prefix, n, width = row.p, int(row.n), int(row.w)
    for step in range(1, 1000):
        candidate = f"{prefix}{str(n + step).zfill(width)}"
        taken = await conn.scalar(select(func.count()).select_from(edit.table)
                                  .where(edit.table.c[edit.id_column] == candidate))
        if not taken:
            return candidate
    raise Conflict(f"No free id after {prefix}{n}; give the new feature's id.")


async def required_columns(conn: AsyncConnection, table: Table) -> set[str]:
    """Columns that are NOT NULL and have no default (a create or replace must give them)."""
    rows = await conn.execute(text(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = :t "
        "AND is_nullable = 'NO' AND column_default IS NULL AND is_identity = 'NO'"), {"t": table.name})
    return {r[0] for r in rows}


def _current(layer: Layer) -> Any:
    text_ = feature_text(layer, Role.admin)
    return select(text_.label("f"), func.md5(text_).label("etag")).select_from(layer.source)


async def _locked(conn: AsyncConnection, layer: Layer, fid: Any) -> tuple[str, str] | None:
    # only the edited table's row: the layer's outer joins (parent names) cannot be locked
    of = layer.editable.table if layer.editable is not None else None
    row = (await conn.execute(_current(layer).where(layer.id_expr == fid).with_for_update(of=of))).first()
    return (row.f, row.etag) if row else None


async def _read(conn: AsyncConnection, layer: Layer, fid: Any) -> tuple[str, str]:
    row = (await conn.execute(_current(layer).where(layer.id_expr == fid))).one()
    return row.f, row.etag


def _check_etag(if_match: str | None, etag: str) -> None:
    if if_match is None:
        return
    tags = [t.strip() for t in if_match.split(",")]
    if "*" in tags or f'"{etag}"' in tags:
        return
    raise PreconditionFailed(
        "The feature has changed since you read it (If-Match does not match its current ETag). "
        "Read it again, re-apply your change and retry."
    )


async def _audit(conn: AsyncConnection, actor: str, role: Role, action: str, layer: Layer, fid: Any,
                 before: str | None, after: str | None) -> None:
    await conn.execute(insert(AuditLog.__table__).values(
        actor=actor, role=role.value, action=action, collection=layer.id, feature_id=str(fid),
        # SQL NULL, not JSON null, for the missing side
        before=orjson.loads(before) if before else null(), after=orjson.loads(after) if after else null()))


def _as_input_error(exc: ConstraintViolation) -> DomainError:
    """A check, not-null or foreign-key violation caused by the submitted values is the client's 400;
    a duplicate id stays a 409 conflict."""
    if exc.extra.get("sqlstate") == "23505":
        return exc
    return InvalidData(exc.detail, constraint=exc.extra.get("constraint"))


class Writer:
    def __init__(self, engine: AsyncEngine, layer: Layer, actor: str, role: Role) -> None:
        assert layer.editable is not None
        self.engine = engine
        self.layer = layer
        self.edit = layer.editable
        self.actor = actor
        self.role = role

    def _values(self, change: Change) -> dict[str, Any]:
        values = dict(change.main)
        if change.geometry_given:
            values[self.edit.geom_column] = change.geometry
        return values

    async def _run(self, body: Callable[[AsyncConnection], Awaitable[Written]]) -> Written:
        try:
            async with translated_errors():
                async with self.engine.begin() as conn:
                    return await body(conn)
        except ConstraintViolation as exc:
            raise _as_input_error(exc) from exc

    async def create(self, fid: Any, change: Change) -> Written:
        """Insert the feature; ``fid`` None: the server assigns one (:func:`assign_id`)."""
        async def body(conn: AsyncConnection) -> Written:
            nonlocal fid
            if fid is None:
                fid = await assign_id(conn, self.layer, change)
            elif await _locked(conn, self.layer, fid) is not None:
                raise ConstraintViolation(f"A feature '{fid}' already exists in '{self.layer.id}'.",
                                          sqlstate="23505")
            if self.edit.linked is not None:
                linked = {**dict(self.edit.linked_fixed), **change.linked, self.edit.linked_id: fid}
                for dst, src in self.edit.linked_copy:
                    linked.setdefault(dst, change.main.get(src))
                await conn.execute(insert(self.edit.linked).values(linked))
            await conn.execute(insert(self.edit.table).values({**self._values(change), self.edit.id_column: fid}))
            after, etag = await _read(conn, self.layer, fid)
            await _audit(conn, self.actor, self.role, "create", self.layer, fid, None, after)
            return Written(after, etag, fid)

        return await self._run(body)

    async def _current_matching(self, conn: AsyncConnection, fid: Any, if_match: str | None) -> str:
        """The feature as it is now, locked; 404 if absent, 412 if If-Match is stale."""
        found = await _locked(conn, self.layer, fid)
        if found is None:
            raise NotFound(f"There is no feature '{fid}' in '{self.layer.id}'.")
        before, etag = found
        _check_etag(if_match, etag)
        return before

    async def modify(self, action: str, fid: Any, change: Change, if_match: str | None) -> Written:
        async def body(conn: AsyncConnection) -> Written:
            before = await self._current_matching(conn, fid, if_match)
            values = self._values(change)
            if values:
                await conn.execute(update(self.edit.table).where(self.edit.table.c[self.edit.id_column] == fid)
                                   .values(values))
            linked = dict(change.linked)
            for dst, src in self.edit.linked_copy:
                if src in change.main:
                    linked[dst] = change.main[src]
            if self.edit.linked is not None and linked:
                await conn.execute(update(self.edit.linked)
                                   .where(self.edit.linked.c[self.edit.linked_id] == fid).values(linked))
            after, new_etag = await _read(conn, self.layer, fid)
            await _audit(conn, self.actor, self.role, action, self.layer, fid, before, after)
            return Written(after, new_etag)

        return await self._run(body)

    async def delete(self, fid: Any, if_match: str | None) -> Written:
        async def body(conn: AsyncConnection) -> Written:
            before = await self._current_matching(conn, fid, if_match)
            for table, column, what in self.edit.delete_guards:
                n = await conn.scalar(select(func.count()).select_from(table).where(table.c[column] == fid))
                if n:
                    raise Conflict(f"'{fid}' is still referenced by {n} {what}; move or delete them first.")
            await conn.execute(delete(self.edit.table).where(self.edit.table.c[self.edit.id_column] == fid))
            if self.edit.linked is not None:
                await conn.execute(delete(self.edit.linked).where(self.edit.linked.c[self.edit.linked_id] == fid))
            await _audit(conn, self.actor, self.role, "delete", self.layer, fid, before, None)
            return Written(None, None)

        return await self._run(body)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch."""
    if not isinstance(patch, Mapping):
        return patch
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out
