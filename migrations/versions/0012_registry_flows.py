"""Yearly flows of the registry in the public figures, and the region's monitoring line.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01

``admin_stat`` gains, per administrative unit and registry year, the households that entered the registry, exited
poverty and returned to it since the previous year's snapshot, and the quartiles of the registered households'
net income per person relative to the region's poverty line (app/repositories/stats.py decides what is published;
docs/methodology.md#admin-totals). ``region.monitoring_line_factor`` is the multiple of the poverty line below
which an exited household's income makes it a candidate for monitoring (by default 1.5, the national practice
since 2021).
"""

from __future__ import annotations

from alembic import op

from app.db import execute_sql_script

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_script(
        op.get_bind(),
        """
        ALTER TABLE admin_stat
          ADD COLUMN entered_households  integer,
          ADD COLUMN exits               integer,
          ADD COLUMN returns             integer,
          ADD COLUMN income_p25          double precision,
          ADD COLUMN income_median       double precision,
          ADD COLUMN income_p75          double precision;
        ALTER TABLE region ADD COLUMN monitoring_line_factor numeric(4, 2) NOT NULL DEFAULT 1.5
          CHECK (monitoring_line_factor >= 1);
        DELETE FROM admin_stat_state;
        """,
    )


def downgrade() -> None:
    execute_sql_script(
        op.get_bind(),
        """
        ALTER TABLE region DROP COLUMN IF EXISTS monitoring_line_factor;
        ALTER TABLE admin_stat DROP COLUMN IF EXISTS entered_households, DROP COLUMN IF EXISTS exits,
          DROP COLUMN IF EXISTS returns, DROP COLUMN IF EXISTS income_p25, DROP COLUMN IF EXISTS income_median,
          DROP COLUMN IF EXISTS income_p75;
        DELETE FROM admin_stat_state;
        """,
    )
