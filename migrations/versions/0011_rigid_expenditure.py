"""Rigid expenditure in the registry: medical and schooling costs and disaster losses of a household's year.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01

Monitoring against return to poverty (防止返贫动态监测) looks for households whose rigid expenditure on illness,
schooling or a disaster is large against their income. The registry records these per year:
``expense_medical`` (out of pocket, after insurance), ``expense_education`` and ``loss_disaster`` (CNY per year,
the year of the record's income). ``household_history`` gets the same columns in the same order, as revision 0005
requires.
"""

from __future__ import annotations

from alembic import op

from app.db import execute_sql_script

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

COLUMNS = ("expense_medical", "expense_education", "loss_disaster")


def upgrade() -> None:
    for table in ("household", "household_history"):
        adds = ", ".join(f"ADD COLUMN {c} numeric(12, 2) CHECK ({c} >= 0)" for c in COLUMNS)
        execute_sql_script(op.get_bind(), f"ALTER TABLE {table} {adds};")


def downgrade() -> None:
    for table in ("household_history", "household"):
        drops = ", ".join(f"DROP COLUMN IF EXISTS {c}" for c in COLUMNS)
        execute_sql_script(op.get_bind(), f"ALTER TABLE {table} {drops};")
