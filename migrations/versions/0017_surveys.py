"""Household surveys: the sample a small-area estimate is made from (restricted, like the registry).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07

``survey`` names a survey of a region (its year, design and source); ``survey_household`` holds its responding
households: the area (village) they live in, the stratum and primary sampling unit of the design, the design
weight, the household size, the income or consumption per person and any further covariates (``properties``).
Survey microdata are personal data: the ``survey-households`` collection is for analysts and administrators.
"""

from __future__ import annotations

from alembic import op

from app.db import execute_sql_script

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_script(
        op.get_bind(),
        """
        CREATE TABLE survey (
          survey_id    text PRIMARY KEY CHECK (survey_id ~ '^[a-z0-9][a-z0-9_-]{0,99}$'),
          region_id    text NOT NULL REFERENCES region (region_id) ON DELETE CASCADE,
          title        text NOT NULL,
          year         integer NOT NULL CHECK (year BETWEEN 1900 AND 2200),
          design       text,
          source       text NOT NULL,
          imported_at  timestamptz NOT NULL DEFAULT clock_timestamp()
        );

        CREATE TABLE survey_household (
          survey_id    text NOT NULL REFERENCES survey (survey_id) ON DELETE CASCADE,
          hh_id        text NOT NULL,
          area_code    text NOT NULL REFERENCES admin_unit (code) ON DELETE CASCADE,
          stratum      text,
          psu          text,
          weight       double precision NOT NULL CHECK (weight > 0),
          size         integer CHECK (size > 0),
          income_pc    double precision NOT NULL,
          properties   jsonb NOT NULL DEFAULT '{}'::jsonb,
          PRIMARY KEY (survey_id, hh_id)
        );
        CREATE INDEX survey_household_area ON survey_household (area_code);

        CREATE TRIGGER survey_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON survey
          FOR EACH STATEMENT EXECUTE FUNCTION tpa_bump_table_version();
        CREATE TRIGGER survey_household_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON survey_household
          FOR EACH STATEMENT EXECUTE FUNCTION tpa_bump_table_version();
        """,
    )


def downgrade() -> None:
    execute_sql_script(
        op.get_bind(),
        """
        DROP TABLE IF EXISTS survey_household;
        DROP TABLE IF EXISTS survey;
        """,
    )
