"""Published layers and table versions.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

* ``table_version``: a counter per table, bumped by a statement-level trigger on every write, so the API
  can cache exact ``numberMatched`` counts and invalidate them the moment the data changes.
* ``published_layer``: extra PostGIS tables published as OGC collections beside the built-in layers
  (``tpa layers publish``), e.g. a region's own tables or a benchmark dataset.
"""

from __future__ import annotations

from alembic import op

from app.db import execute_sql_script

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

VERSIONED = (
    "region", "admin_unit", "village", "household", "person", "project", "project_beneficiary", "facility",
    "telecom_agg", "telecom_od", "h3_cell", "analysis_run",
)


def upgrade() -> None:
    execute_sql_script(
        op.get_bind(),
        """
        CREATE TABLE table_version (
          table_name text PRIMARY KEY,
          version    bigint NOT NULL DEFAULT 0
        );
        CREATE FUNCTION tpa_bump_table_version() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          INSERT INTO table_version AS t (table_name, version)
          VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, 1)
          ON CONFLICT (table_name) DO UPDATE SET version = t.version + 1;
          RETURN NULL;
        END $$;
        CREATE TABLE published_layer (
          layer_id        text PRIMARY KEY CHECK (layer_id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
          schema_name     text NOT NULL,
          table_name      text NOT NULL,
          title           text NOT NULL,
          description     text,
          id_column       text NOT NULL,
          geometry_column text,
          datetime_column text,
          required_role   api_role,
          created         timestamptz NOT NULL DEFAULT now(),
          UNIQUE (schema_name, table_name)
        );
        """
    )
    for table in VERSIONED:
        op.execute(
            f"CREATE TRIGGER {table}_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION tpa_bump_table_version()"
        )


def downgrade() -> None:
    for table in VERSIONED:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_version ON {table}")
    op.execute("DROP TABLE IF EXISTS published_layer")
    op.execute("DROP FUNCTION IF EXISTS tpa_bump_table_version() CASCADE")
    op.execute("DROP TABLE IF EXISTS table_version")
