"""Villages without household and population counts.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

A census or gazetteer file often names villages and places them without counting their households or people;
such villages can now be imported (the counts stay null until a later file brings them). The checks that relate
the counts (population ≥ households, labour force ≤ population, unsafe-water households ≤ households) hold
whenever both sides are known.
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE village ALTER COLUMN households DROP NOT NULL, ALTER COLUMN population DROP NOT NULL")


def downgrade() -> None:
    op.execute("UPDATE village SET households = 0 WHERE households IS NULL")
    op.execute("UPDATE village SET population = households WHERE population IS NULL")
    op.execute("ALTER TABLE village ALTER COLUMN households SET NOT NULL, ALTER COLUMN population SET NOT NULL")
