"""SQL for publishing extra tables as collections (``published_layer``)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import translated_errors
from app.errors import InvalidData


def reserved_ids() -> frozenset[str]:
    """The ids of the built-in collections (app/layers/catalog.py), which a published table may not take."""
    from pydantic import SecretStr

    from app.layers.catalog import builtin_layers
    from app.settings import SecuritySettings

    return frozenset(lyr.id for lyr in builtin_layers(SecuritySettings(jitter_key=SecretStr("ids only"))))

_PK = text(
    """
    SELECT a.attname FROM pg_index i
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
    WHERE i.indrelid = to_regclass(:qualified) AND i.indisprimary
    """
)
_GEOM = text(
    "SELECT f_geometry_column FROM geometry_columns WHERE f_table_schema = :schema AND f_table_name = :table"
)


async def register_layer(
    conn: Any, layer_id: str, schema: str, table: str, title: str, description: str | None, id_column: str,
    geometry_column: str | None, *, datetime_column: str | None = None, role: str | None = None,
    run_id: uuid.UUID | None = None, keywords: list[str] | None = None, listed: bool = True,
    style: Mapping[str, Any] | None = None, context: Mapping[str, Any] | None = None, replace: bool = False,
) -> None:
    """One row of ``published_layer``: a table served as a collection. The one place both ``tpa layers publish``
    and the results of executions (``run_id``, not ``listed`` unless published) register their tables."""
    sql = (
        "INSERT INTO published_layer (layer_id, schema_name, table_name, title, description, id_column, "
        "geometry_column, datetime_column, required_role, run_id, keywords, listed, style, context) VALUES (:id, "
        ":schema, :table, :title, :desc, :pk, :geom, :dt, CAST(:role AS api_role), :run, :kw, :listed, "
        "CAST(:style AS jsonb), CAST(:context AS jsonb))"
    )
    if replace:
        sql += (" ON CONFLICT (layer_id) DO UPDATE SET schema_name = EXCLUDED.schema_name, table_name = "
                "EXCLUDED.table_name, title = EXCLUDED.title, description = EXCLUDED.description, id_column = "
                "EXCLUDED.id_column, geometry_column = EXCLUDED.geometry_column, datetime_column = "
                "EXCLUDED.datetime_column, required_role = EXCLUDED.required_role")
    await conn.execute(text(sql), {
        "id": layer_id, "schema": schema, "table": table, "title": title, "desc": description, "pk": id_column,
        "geom": geometry_column, "dt": datetime_column, "role": role, "run": run_id, "kw": list(keywords or []),
        "listed": listed, "style": orjson.dumps(style).decode() if style else None,
        "context": orjson.dumps(context).decode() if context else None})


async def publish_table(
    session: AsyncSession, schema: str, table: str, layer_id: str, title: str, description: str | None,
    datetime_column: str | None, role: str | None,
) -> str:
    """Register the table and install the statement trigger that versions it (for exact cached counts)."""
    if layer_id in reserved_ids():
        raise InvalidData(f"'{layer_id}' is a built-in collection; choose another id (--id).")
    async with translated_errors():
        exists = await session.scalar(text("SELECT to_regclass(:q) IS NOT NULL"), {"q": f"{schema}.{table}"})
        if not exists:
            raise InvalidData(f"There is no table {schema}.{table}.")
        pk = (await session.execute(_PK, {"qualified": f"{schema}.{table}"})).scalars().all()
        if len(pk) != 1:
            raise InvalidData(f"{schema}.{table} needs a single-column primary key to be published.")
        geoms = (await session.execute(_GEOM, {"schema": schema, "table": table})).scalars().all()
        await register_layer(session, layer_id, schema, table, title, description, pk[0],
                             geoms[0] if geoms else None, datetime_column=datetime_column, role=role, replace=True)
        # Identifiers cannot be bound parameters; they are quoted with quote_ident by the server.
        trigger_sql = await session.scalar(
            text(
                "SELECT format('CREATE OR REPLACE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %I.%I "
                "FOR EACH STATEMENT EXECUTE FUNCTION tpa_bump_table_version()', "
                "CAST(:trg AS text), CAST(:schema AS text), CAST(:table AS text))"
            ),
            {"trg": f"{table}_tpa_version", "schema": schema, "table": table},
        )
        await (await session.connection()).exec_driver_sql(trigger_sql)
    return layer_id
