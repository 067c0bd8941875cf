"""Results of executions: listed in the catalogue only when published, styled, with their context; expiry.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

* ``published_layer.listed``: whether the layer appears in ``/collections`` (and so in QGIS's and GDAL's layer
  lists). Tables published with ``tpa layers publish`` are listed; the results of executions are not, unless an
  analyst or administrator publishes them. Unlisted results stay readable by their URL.
* ``published_layer.style``: how the layer is drawn (the class colours of a result), offered as MapLibre style
  JSON and QGIS QML; ``published_layer.context``: what a listed result is (process, job, inputs, owner).
* ``analysis_run.expires``: when a job's results are deleted (null: kept, e.g. published); ``pruned``: when they
  were. Existing results: anonymous ones expire a day after they were made, the others after 30 days.
"""

from __future__ import annotations

from alembic import op

from app.db import execute_sql_script

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_script(
        op.get_bind(),
        """
        ALTER TABLE published_layer
          ADD COLUMN listed  boolean NOT NULL DEFAULT true,
          ADD COLUMN style   jsonb,
          ADD COLUMN context jsonb;
        UPDATE published_layer SET listed = false WHERE run_id IS NOT NULL;
        CREATE INDEX published_layer_listed_idx ON published_layer (layer_id) WHERE listed;
        ALTER TABLE analysis_run
          ADD COLUMN expires timestamptz,
          ADD COLUMN pruned  timestamptz;
        UPDATE analysis_run SET expires = created + CASE WHEN owner IS NULL THEN interval '1 day'
                                                         ELSE interval '30 days' END
          WHERE kind LIKE 'process:%';
        CREATE INDEX analysis_run_expires_idx ON analysis_run (expires) WHERE pruned IS NULL AND expires IS NOT NULL;
        """,
    )


def downgrade() -> None:
    execute_sql_script(
        op.get_bind(),
        """
        DROP INDEX IF EXISTS analysis_run_expires_idx;
        ALTER TABLE analysis_run DROP COLUMN IF EXISTS expires, DROP COLUMN IF EXISTS pruned;
        DROP INDEX IF EXISTS published_layer_listed_idx;
        ALTER TABLE published_layer DROP COLUMN IF EXISTS listed, DROP COLUMN IF EXISTS style,
          DROP COLUMN IF EXISTS context;
        """,
    )
