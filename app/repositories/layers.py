"""SQL for publishing extra tables as collections (``published_layer``)."""

from __future__ import annotations

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
        await session.execute(
            text(
                "INSERT INTO published_layer (layer_id, schema_name, table_name, title, description, id_column, "
                "geometry_column, datetime_column, required_role) VALUES (:id, :schema, :table, :title, :desc, "
                ":pk, :geom, :dt, CAST(:role AS api_role)) ON CONFLICT (layer_id) DO UPDATE SET "
                "schema_name = EXCLUDED.schema_name, table_name = EXCLUDED.table_name, title = EXCLUDED.title, "
                "description = EXCLUDED.description, id_column = EXCLUDED.id_column, "
                "geometry_column = EXCLUDED.geometry_column, datetime_column = EXCLUDED.datetime_column, "
                "required_role = EXCLUDED.required_role"
            ),
            {"id": layer_id, "schema": schema, "table": table, "title": title, "desc": description, "pk": pk[0],
             "geom": geoms[0] if geoms else None, "dt": datetime_column, "role": role},
        )
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
