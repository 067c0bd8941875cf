"""Audit trail of feature edits.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

Every create, replace, update and delete made through OGC API - Features Part 4 is recorded in the
same transaction as the change: who (the API key's public id), when, what (collection, feature id,
action) and the feature before and after, as the administrator sees it. Rows are never updated.
"""

from __future__ import annotations

from alembic import op

from app.db import execute_sql_script

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_script(
        op.get_bind(),
        """
        CREATE TABLE audit_log (
          audit_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          at         timestamptz NOT NULL DEFAULT clock_timestamp(),
          actor      text NOT NULL,
          role       api_role NOT NULL,
          action     text NOT NULL CHECK (action IN ('create', 'replace', 'update', 'delete')),
          collection text NOT NULL,
          feature_id text NOT NULL,
          before     jsonb,
          after      jsonb,
          CHECK ((action = 'create') = (before IS NULL)),
          CHECK ((action = 'delete') = (after IS NULL))
        );
        CREATE INDEX audit_log_feature_idx ON audit_log (collection, feature_id);
        CREATE FUNCTION tpa_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION 'the audit trail is append-only'
            USING ERRCODE = 'check_violation', HINT = 'tpa-gis data rule', CONSTRAINT = 'audit_log_append_only';
        END $$;
        CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
          FOR EACH ROW EXECUTE FUNCTION tpa_audit_append_only();
        CREATE TRIGGER audit_log_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON audit_log
          FOR EACH STATEMENT EXECUTE FUNCTION tpa_bump_table_version();
        """,
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS audit_log")
    op.execute("DROP FUNCTION IF EXISTS tpa_audit_append_only()")
