"""Public figures of the registry per administrative unit and year, with secondary suppression.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

* ``admin_stat``: per unit (levels 0–5, villages included) and registry year: registered, poor, exited and
  monitored households, poor persons, households and persons reached by projects, population (village forms) and
  the poverty rate; figures withheld (NULL, ``suppressed``) where they would reveal fewer than 5 households,
  directly or by subtracting published figures (app/analysis/disclosure.py). Derived data, rebuilt by the service
  when the registry changes (``admin_stat_state`` holds the table versions it was built from).
* ``household_history`` writes bump ``table_version`` like the other registry tables.
"""

from __future__ import annotations

from alembic import op

from app.db import execute_sql_script

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_script(
        op.get_bind(),
        """
        CREATE TABLE admin_stat (
          region_id             text NOT NULL REFERENCES region ON DELETE CASCADE,
          admin_code            text NOT NULL,
          year                  integer NOT NULL,
          snapshot              date NOT NULL,
          level                 smallint NOT NULL,
          villages              integer NOT NULL,
          population            bigint,
          registered_households integer,
          poor_households       integer,
          poor_persons          integer,
          exited_households     integer,
          monitored_households  integer,
          reached_households    integer,
          reached_persons       integer,
          poverty_rate          double precision,
          suppressed            boolean NOT NULL,
          PRIMARY KEY (admin_code, year)
        );
        CREATE INDEX admin_stat_region_idx ON admin_stat (region_id, level, year);
        CREATE TABLE admin_stat_state (
          id        boolean PRIMARY KEY DEFAULT true CHECK (id),
          versions  jsonb NOT NULL,
          built     timestamptz NOT NULL DEFAULT now()
        );
        CREATE TRIGGER admin_stat_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON admin_stat
          FOR EACH STATEMENT EXECUTE FUNCTION tpa_bump_table_version();
        CREATE TRIGGER household_history_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON household_history
          FOR EACH STATEMENT EXECUTE FUNCTION tpa_bump_table_version();
        """,
    )


def downgrade() -> None:
    execute_sql_script(
        op.get_bind(),
        """
        DROP TRIGGER IF EXISTS household_history_version ON household_history;
        DROP TABLE IF EXISTS admin_stat_state;
        DROP TABLE IF EXISTS admin_stat;
        """,
    )
