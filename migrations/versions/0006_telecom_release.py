"""Telecom releases: hourly presence rows, release ledger (k, ε spent), indicator definitions.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28

* ``telecom_agg.hour``: the local hour of day for hourly indicators (presence); NULL otherwise. The unique key
  now includes it (NULLS NOT DISTINCT).
* ``telecom_od.h3_res``: the resolution of a rolled-up pair (both ends share it); NULL for admin-unit pairs.
* ``telecom_release``: one row per (region, period) release: the parameters, k, the ε spent on Laplace noise
  (0 when none) and the counts published, so the cumulative privacy budget of a period is on record.
* indicator definitions of the released aggregates (DOMAIN §4).
"""

from __future__ import annotations

from alembic import op

from app.db import execute_sql_script

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SRC = "DOMAIN.md §4 (FlowKit definitions); issue 6"
CLASSES = ("school_primary", "school_junior", "clinic", "hospital", "market", "bank", "bus_stop", "water_plant",
           "township_government")
INDICATORS = [
    ("presence", "context", "+", "devices", "distinct devices per (cell, local hour of day) over the period",
     "Presence by hour"),
    ("residents", "context", "+", "devices", "devices whose home (modal night cell, >= min-nights) is in the unit",
     "Resident devices"),
    ("median_radius_of_gyration", "production", "+", "km",
     "median over resident devices of sqrt(mean_i d(r_i, r_mean)^2), great circle", "Median radius of gyration"),
    *[(f"service_share_{c}", "production", "+", "share",
       f"share of resident devices with >= 1 event in a cell holding a {c}", f"Visits to a {c}") for c in CLASSES],
    *[(f"service_km_{c}", "production", "-", "km",
       f"median distance from the home cell centre to the nearest cell holding a {c}", f"Distance to a {c}")
      for c in CLASSES],
]


def upgrade() -> None:
    execute_sql_script(
        op.get_bind(),
        """
        ALTER TABLE telecom_agg ADD COLUMN hour smallint CHECK (hour BETWEEN 0 AND 23);
        ALTER TABLE telecom_agg DROP CONSTRAINT telecom_agg_uniq;
        ALTER TABLE telecom_agg ADD CONSTRAINT telecom_agg_uniq
          UNIQUE NULLS NOT DISTINCT (region_id, unit_type, unit_id, period, indicator, hour);
        CREATE INDEX telecom_agg_region_indicator_idx ON telecom_agg (region_id, indicator, period);
        ALTER TABLE telecom_od ADD COLUMN h3_res smallint CHECK (h3_res BETWEEN 0 AND 15);
        CREATE TABLE telecom_release (
          release_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          region_id    text NOT NULL REFERENCES region ON DELETE CASCADE,
          period       daterange NOT NULL
                       CHECK (NOT isempty(period) AND NOT lower_inf(period) AND NOT upper_inf(period)),
          k            integer NOT NULL CHECK (k >= 1),
          epsilon      double precision NOT NULL DEFAULT 0 CHECK (epsilon >= 0),
          params       jsonb NOT NULL DEFAULT '{}'::jsonb,
          rows_published integer NOT NULL CHECK (rows_published >= 0),
          rows_suppressed integer NOT NULL CHECK (rows_suppressed >= 0),
          created      timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        CREATE INDEX telecom_release_region_period_idx ON telecom_release (region_id, period);
        """,
    )
    for code, system, direction, unit, formula, description in INDICATORS:
        op.execute(
            "INSERT INTO indicator_def (code, system, direction, unit, level, source, formula, description) VALUES ("
            + ", ".join("'" + str(v).replace("'", "''") + "'"
                        for v in (code, system, direction, unit, "unit", SRC, formula, description))
            + ") ON CONFLICT (code) DO NOTHING")


def downgrade() -> None:
    codes = ", ".join("'" + i[0] + "'" for i in INDICATORS)
    execute_sql_script(
        op.get_bind(),
        f"""
        DELETE FROM telecom_agg WHERE indicator IN ({codes});
        DELETE FROM indicator_def WHERE code IN ({codes});
        DROP TABLE IF EXISTS telecom_release;
        ALTER TABLE telecom_od DROP COLUMN IF EXISTS h3_res;
        DROP INDEX IF EXISTS telecom_agg_region_indicator_idx;
        DELETE FROM telecom_agg WHERE hour IS NOT NULL;
        ALTER TABLE telecom_agg DROP CONSTRAINT telecom_agg_uniq;
        ALTER TABLE telecom_agg ADD CONSTRAINT telecom_agg_uniq
          UNIQUE (region_id, unit_type, unit_id, period, indicator);
        ALTER TABLE telecom_agg DROP COLUMN hour;
        """,
    )
