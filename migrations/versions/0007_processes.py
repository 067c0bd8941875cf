"""OGC API - Processes: jobs (analysis_run) executed through procrastinate, results as published tables.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28

* procrastinate's own schema (tables ``procrastinate_*``): the job queue, with worker heartbeats so that a
  job interrupted by a stopped service is found and failed. The SQL comes from the installed package
  (pinned in pyproject.toml), as procrastinate documents.
* ``analysis_run`` (the jobs of DOMAIN §1) gains the owner (API key id, role), the time limit, the
  execution mode, the queue job id and the update time.
* schema ``results``: one table per spatial output of a job, registered in ``published_layer`` with the
  job's run id (so dismissing the job removes its collections) and served as OGC collections.
* ``published_layer`` changes bump ``table_version`` so every service instance sees new collections.
"""

from __future__ import annotations

from alembic import op

from app.db import execute_sql_script

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from procrastinate.schema import SchemaManager

    bind = op.get_bind()
    execute_sql_script(bind, SchemaManager.get_schema())
    execute_sql_script(
        bind,
        """
        ALTER TABLE analysis_run
          ADD COLUMN owner        text,
          ADD COLUMN owner_role   api_role,
          ADD COLUMN mode         text NOT NULL DEFAULT 'async' CHECK (mode IN ('sync', 'async')),
          ADD COLUMN time_limit_s integer CHECK (time_limit_s > 0),
          ADD COLUMN queue_job_id bigint,
          ADD COLUMN updated      timestamptz NOT NULL DEFAULT now();
        CREATE INDEX analysis_run_owner_idx ON analysis_run (owner, created DESC);
        CREATE INDEX analysis_run_status_idx ON analysis_run (status) WHERE status IN ('accepted', 'running');

        CREATE SCHEMA results;
        ALTER TABLE published_layer
          ADD COLUMN run_id uuid REFERENCES analysis_run (run_id) ON DELETE CASCADE,
          ADD COLUMN keywords text[] NOT NULL DEFAULT '{}';
        CREATE INDEX published_layer_run_idx ON published_layer (run_id);
        CREATE TRIGGER published_layer_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON published_layer
          FOR EACH STATEMENT EXECUTE FUNCTION tpa_bump_table_version();
        """,
    )


def downgrade() -> None:
    execute_sql_script(
        op.get_bind(),
        """
        DROP TRIGGER IF EXISTS published_layer_version ON published_layer;
        DELETE FROM published_layer WHERE run_id IS NOT NULL;
        ALTER TABLE published_layer DROP COLUMN IF EXISTS run_id, DROP COLUMN IF EXISTS keywords;
        DROP SCHEMA IF EXISTS results CASCADE;
        DROP INDEX IF EXISTS analysis_run_owner_idx;
        DROP INDEX IF EXISTS analysis_run_status_idx;
        ALTER TABLE analysis_run DROP COLUMN IF EXISTS owner, DROP COLUMN IF EXISTS owner_role,
          DROP COLUMN IF EXISTS mode, DROP COLUMN IF EXISTS time_limit_s, DROP COLUMN IF EXISTS queue_job_id,
          DROP COLUMN IF EXISTS updated;
        DROP TABLE IF EXISTS procrastinate_events, procrastinate_periodic_defers, procrastinate_jobs,
          procrastinate_workers CASCADE;
        DO $$ DECLARE f record; BEGIN
          FOR f IN SELECT p.oid::regprocedure AS sig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                   WHERE n.nspname = 'public' AND p.proname LIKE 'procrastinate\\_%' LOOP
            EXECUTE 'DROP FUNCTION ' || f.sig || ' CASCADE';
          END LOOP;
        END $$;
        DROP TYPE IF EXISTS procrastinate_job_status, procrastinate_job_event_type, procrastinate_job_to_defer_v1
          CASCADE;
        """,
    )
