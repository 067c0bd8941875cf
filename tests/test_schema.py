"""The schema keeps bad data out: invalid geometry, unknown codes, orphans, wrong levels, raw ids.

Every rejection surfaces as a clear domain error (409 data rule / 400 invalid data) with the name
of the constraint, never as a driver exception.
"""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from app.db import translate_db_error
from app.errors import ConstraintViolation, InvalidData
from app.models import codes
from app.models.orm import Base


async def _region(session, region_id="t-region"):
    await session.execute(
        text(
            "INSERT INTO region (region_id, name, country, code_system, analysis_crs, poverty_line, currency) "
            "VALUES (:r, 'Test', 'CN', 'GB/T 2260', 32651, 4000, 'CNY')"
        ),
        {"r": region_id},
    )


async def _unit(session, code, level, parent, geom="MULTIPOLYGON(((0 0,1 0,1 1,0 1,0 0)))", region="t-region"):
    await session.execute(
        text(
            "INSERT INTO admin_unit (code, region_id, level, parent_code, name, geom, source) "
            "VALUES (:c, :r, :l, :p, :c, ST_GeomFromText(:g, 4326), 'test')"
        ),
        {"c": code, "r": region, "l": level, "p": parent, "g": geom},
    )


async def _hierarchy(session):
    await _region(session)
    await _unit(session, "X0", 0, None)
    await _unit(session, "X3", 3, "X0")
    await _unit(session, "X4", 4, "X3")
    await _unit(session, "X5", 5, "X4")


async def _rejected(session, sql, params=None):
    """Run sql inside a savepoint; return the translated domain error."""
    nested = await session.begin_nested()
    try:
        await session.execute(text(sql), params or {})
    except DBAPIError as exc:
        await nested.rollback()
        return translate_db_error(exc)
    await nested.rollback()
    pytest.fail("statement was accepted: " + sql)


HH = (
    "INSERT INTO household (hh_id, region_id, village_code, hh_type, main_cause, status, year_identified, size, "
    "net_income_pc, valid_from, source{extra_cols}) VALUES (:h, 't-region', :v, 'general', 'illness', 'poor', "
    "2015, 2, 3000, '2020-01-01', 'test'{extra_vals})"
)
PSEUDO = "a" * 64


def hh_sql(**extra: str) -> str:
    cols = "".join(", " + k for k in extra)
    vals = "".join(", " + v for v in extra.values())
    return HH.format(extra_cols=cols, extra_vals=vals)


async def test_valid_rows_are_accepted(session):
    await _hierarchy(session)
    await session.execute(text(hh_sql()), {"h": PSEUDO, "v": "X5"})
    n = await session.scalar(text("SELECT count(*) FROM household WHERE hh_id = :h"), {"h": PSEUDO})
    assert n == 1


async def test_invalid_geometry_rejected(session):
    await _region(session)
    err = await _rejected(
        session,
        "INSERT INTO admin_unit (code, region_id, level, name, geom, source) VALUES ('BOW', 't-region', 0, 'b', "
        "ST_GeomFromText('MULTIPOLYGON(((0 0,1 1,1 0,0 1,0 0)))', 4326), 't')",
    )
    assert isinstance(err, ConstraintViolation) and err.status == 409
    assert err.extra["constraint"] == "admin_unit_geom_check"


async def test_wrong_srid_rejected(session):
    await _region(session)
    err = await _rejected(
        session,
        "INSERT INTO admin_unit (code, region_id, level, name, geom, source) VALUES ('S', 't-region', 0, 's', "
        "ST_GeomFromText('MULTIPOLYGON(((0 0,1 0,1 1,0 1,0 0)))', 3857), 't')",
    )
    assert isinstance(err, InvalidData) and err.status == 400


async def test_unknown_code_rejected(session):
    await _hierarchy(session)
    err = await _rejected(session, hh_sql().replace("'illness'", "'bad_luck'"), {"h": PSEUDO, "v": "X5"})
    assert isinstance(err, InvalidData)
    assert "bad_luck" in err.detail and "cause" in err.detail


async def test_orphan_rows_rejected(session):
    await _hierarchy(session)
    err = await _rejected(session, hh_sql(), {"h": PSEUDO, "v": "NO-SUCH-VILLAGE"})
    assert isinstance(err, ConstraintViolation)
    assert err.extra["constraint"] == "household_village_code_fkey"
    err = await _rejected(
        session,
        "INSERT INTO person (person_id, hh_id, region_id, relation, sex, birth_year, labour, med_insured, "
        "pension_insured, valid_from, source) VALUES (:p, :h, 't-region', 'head', 'male', 1960, 'ordinary', "
        "true, true, '2020-01-01', 't')",
        {"p": "b" * 64, "h": "c" * 64},
    )
    assert err.extra["constraint"] == "person_hh_id_fkey"
    err = await _rejected(
        session,
        "INSERT INTO admin_unit (code, region_id, level, parent_code, name, source) "
        "VALUES ('Y', 't-region', 4, 'NOPE', 'y', 't')",
    )
    assert err.extra["constraint"] == "admin_unit_parent_code_fkey"
    err = await _rejected(
        session,
        "INSERT INTO admin_unit (code, region_id, level, name, source) VALUES ('Z', 'no-region', 0, 'z', 't')",
    )
    assert err.extra["constraint"] == "admin_unit_region_id_fkey"


async def test_levels_enforced(session):
    await _hierarchy(session)
    # a household must live in a village (level 5), not a township
    err = await _rejected(session, hh_sql(), {"h": PSEUDO, "v": "X4"})
    assert err.extra["constraint"] == "household_village_code_level"
    assert "expected level 5" in err.detail
    # a parent must sit above its child
    err = await _rejected(
        session,
        "INSERT INTO admin_unit (code, region_id, level, parent_code, name, source) "
        "VALUES ('X6', 't-region', 3, 'X5', 'x', 't')",
    )
    assert err.extra["constraint"] == "admin_unit_parent_level"
    err = await _rejected(
        session,
        "INSERT INTO admin_unit (code, region_id, level, parent_code, name, source) "
        "VALUES ('X7', 't-region', 0, 'X0', 'x', 't')",
    )
    # the level trigger fires before the row check; either names the rule broken
    assert err.extra["constraint"] in {"admin_unit_parent_level", "admin_unit_country_is_root"}


async def test_household_rules(session):
    await _hierarchy(session)
    # a raw 18-digit national id is not a pseudonym
    err = await _rejected(session, hh_sql(), {"h": "210102196001011234", "v": "X5"})
    assert err.extra["constraint"] == "household_hh_id_check"
    err = await _rejected(session, hh_sql(other_causes="'{illness}'"), {"h": PSEUDO, "v": "X5"})
    assert err.extra["constraint"] == "household_main_not_other"
    err = await _rejected(
        session, hh_sql(other_causes="'{disability,schooling,disaster}'"), {"h": PSEUDO, "v": "X5"}
    )
    assert err.extra["constraint"] == "household_other_causes_check"
    err = await _rejected(session, hh_sql().replace("'poor'", "'exited'"), {"h": PSEUDO, "v": "X5"})
    assert err.extra["constraint"] == "household_exit_year"
    err = await _rejected(session, hh_sql(irrigated_mu="5", arable_mu="2"), {"h": PSEUDO, "v": "X5"})
    assert err.extra["constraint"] == "household_irrigated_within_arable"


async def test_telecom_small_counts_cannot_be_published(session):
    await _region(session)
    base = (
        "INSERT INTO telecom_agg (region_id, unit_type, unit_id, period, indicator, value, n_subscribers, "
        "suppressed, valid_from, source) VALUES ('t-region', 'admin', 'X', '[2020-01-01,2020-02-01)', "
        "'resident_population', {v}, {n}, {s}, '2020-01-01', 't')"
    )
    err = await _rejected(session, base.format(v="12", n="12", s="false"))
    assert err.extra["constraint"] == "telecom_agg_min_count"
    err = await _rejected(session, base.format(v="12", n="12", s="true"))  # suppressed rows carry no value
    assert err.extra["constraint"] == "telecom_agg_min_count"
    await session.execute(text(base.format(v="NULL", n="12", s="true")))
    await session.execute(text(base.replace("'X'", "'Y'").format(v="40", n="40", s="false")))
    err = await _rejected(
        session,
        "INSERT INTO telecom_od (region_id, unit_type, origin_unit, dest_unit, period, count, suppressed, "
        "valid_from, source) VALUES ('t-region', 'admin', 'A', 'B', '[2020-01-01,2020-02-01)', 15, false, "
        "'2020-01-01', 't')",
    )
    assert err.extra["constraint"] == "telecom_od_min_count"


async def test_region_crs_must_be_known(session):
    err = await _rejected(
        session,
        "INSERT INTO region (region_id, name, country, code_system, analysis_crs, poverty_line, currency) "
        "VALUES ('bad-crs', 'x', 'CN', 'x', 999999, 1, 'CNY')",
    )
    assert err.extra["constraint"] == "region_analysis_crs_known"


async def test_orm_matches_migrated_tables(engine):
    async with engine.connect() as conn:
        db_cols = await conn.run_sync(
            lambda c: {t: {col["name"] for col in inspect(c).get_columns(t)} for t in Base.metadata.tables}
        )
    for name, table in Base.metadata.tables.items():
        assert {c.name for c in table.columns} == db_cols[name], name


async def test_python_code_lists_match_database_enums(session):
    rows = await session.execute(
        text(
            "SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_type t "
            "JOIN pg_enum e ON e.enumtypid = t.oid GROUP BY t.typname"
        )
    )
    # procrastinate_* types belong to the job library's own schema (migration 0007)
    db = {name: list(labels) for name, labels in rows if not name.startswith("procrastinate_")}
    assert set(db) == set(codes.PG_ENUMS)
    for name, enum in codes.PG_ENUMS.items():
        assert db[name] == [m.value for m in enum], name


async def test_default_cause_map_seeded(session):
    rows = (await session.execute(text(
        "SELECT cause::text, need::text, project_type::text FROM cause_need_project WHERE region_id IS NULL"
    ))).all()
    illness = {(n, p) for c, n, p in rows if c == "illness"}
    assert illness == {("L_HEALTH", None), ("P_JOB", None), ("P_CAPITAL", None), (None, "health"),
                       (None, "social_security"), (None, "asset_income")}
    assert {c for c, _, _ in rows} == {c.value for c in codes.Cause} - {"other"}
    # "infrastructure_*" for disasters expands to the three infrastructure types
    disaster_types = {p for c, n, p in rows if c == "disaster" and p}
    assert {"infrastructure_road", "infrastructure_water", "infrastructure_power_broadband"} <= disaster_types
    assert len(rows) == 67
