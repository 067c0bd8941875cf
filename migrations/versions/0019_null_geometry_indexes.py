"""National scale: features without a geometry found by a partial index, not by walking the spatial index; the
registry's history found by village.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-08

A bbox (and every tile) also selects the features that have no geometry (OGC API - Features, /req/core/fc-bbox-
response), so its SQL is ``geom && box OR geom IS NULL``. PostgreSQL answers ``geom IS NULL`` from the GiST index by
visiting all of it: 150 ms for 5 million households, on every bbox page, count and tile, where the box itself took
0.1 ms. A partial index of the rows without a geometry (none, or a few) answers it at once.

``household_history (village_code)``: a registry reference of one unit (``admin_code``) reads the unit's
households through its villages, in the current rows and the history. Without this index each village scanned the
whole history: 78 s for the 1,200 villages of a prefecture of the 5-million-household scale set.
"""

from __future__ import annotations

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

TABLES = {"admin_unit": "code", "alert": "alert_id", "household": "hh_id", "household_history": "hh_id",
          "risk_prediction": "hh_id"}


def upgrade() -> None:
    for table, key in TABLES.items():
        op.execute(f"CREATE INDEX {table}_no_geom_idx ON {table} ({key}) WHERE geom IS NULL")
    op.execute("CREATE INDEX household_history_village_idx ON household_history (village_code)")


def downgrade() -> None:
    op.execute("DROP INDEX household_history_village_idx")
    for table in TABLES:
        op.execute(f"DROP INDEX {table}_no_geom_idx")
