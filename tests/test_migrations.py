"""Alembic: upgrade → downgrade → upgrade on an empty database leaves the same schema."""

from __future__ import annotations

from tpa_testing import fetch

from app.db import migration_heads

SCHEMA_SQL = """
SELECT table_name || '.' || column_name || ':' || udt_name || ':' || is_nullable
FROM information_schema.columns WHERE table_schema = 'public' AND table_name <> 'spatial_ref_sys'
UNION ALL SELECT 'constraint ' || conname FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
  WHERE n.nspname = 'public'
UNION ALL SELECT 'index ' || indexname FROM pg_indexes WHERE schemaname = 'public' AND tablename <> 'spatial_ref_sys'
UNION ALL SELECT 'type ' || typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
  WHERE n.nspname = 'public' AND t.typtype = 'e'
UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger WHERE NOT tgisinternal
ORDER BY 1
"""


def _schema(name: str) -> list[str]:
    return [r[0] for r in fetch(name, SCHEMA_SQL)]


def test_upgrade_downgrade_upgrade(throwaway_db):
    empty = _schema(throwaway_db.name)
    assert all(not s.startswith("constraint ") or "spatial_ref_sys" in s for s in empty)
    throwaway_db.upgrade("head")
    first = _schema(throwaway_db.name)
    assert any(s.startswith("household.hh_id:text") for s in first)
    assert "trigger village_level" in first
    throwaway_db.downgrade("base")
    after_down = _schema(throwaway_db.name)
    # only Alembic's bookkeeping table is left
    assert [s for s in after_down if s not in empty] == [
        s for s in after_down if s.startswith("alembic_version") or "alembic_version" in s
    ]
    throwaway_db.upgrade("head")
    assert _schema(throwaway_db.name) == first


def test_single_head():
    assert migration_heads() == {"0019"}
