"""Domain schema: regions, admin hierarchy, registry, projects, facilities, telecom aggregates, jobs, keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-28

The DDL lives in ``migrations/sql/0001_schema.sql`` (plain SQL is clearer than op.* calls for enum
types, triggers and check constraints). It is frozen: later changes go into new revisions.
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

from app.db import execute_sql_script

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SQL = Path(__file__).resolve().parent.parent / "sql" / "0001_schema.sql"

TABLES = (
    "api_key", "analysis_run", "telecom_od", "telecom_agg", "h3_cell", "cause_need_project",
    "indicator_def", "facility", "project_beneficiary", "project", "person", "household", "village",
    "admin_unit", "region",
)
TYPES = (
    "cause", "need_code", "project_type", "project_status", "facility_class", "id_standard",
    "household_type", "household_status", "safety_grade", "toilet_type", "cooking_fuel", "access_road",
    "relation", "sex", "education_level", "school_stage", "health_status", "labour_status",
    "indicator_system", "indicator_direction", "unit_type", "run_status", "api_role",
)
FUNCTIONS = ("tpa_check_region_crs", "tpa_check_admin_parent", "tpa_check_admin_level")


def upgrade() -> None:
    execute_sql_script(op.get_bind(), SQL.read_text(encoding="utf-8"))


def downgrade() -> None:
    for table in TABLES:
        op.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')
    for fn in FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {fn}() CASCADE")
    for typ in TYPES:
        op.execute(f'DROP TYPE IF EXISTS "{typ}" CASCADE')
