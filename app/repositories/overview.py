"""The figures of one administrative unit for its overview: public registry figures (``admin_stat``, already
suppressed), its children's, and the projects and facilities inside it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from app.repositories.stats import FLOW_MEASURES, MEASURES

_STAT_COLUMNS = ("admin_code, level, year, snapshot, villages, population, poverty_rate, suppressed, "
                 + ", ".join(MEASURES))
_UNIT = text(f"""
SELECT a.code, a.name, a.name_en, a.level, a.parent_code, a.region_id, s.year, s.snapshot, s.villages, s.population,
  s.poverty_rate, s.suppressed, {", ".join("s." + m for m in MEASURES)}
FROM admin_unit a JOIN admin_stat s ON s.admin_code = a.code
WHERE a.region_id = :region AND a.code = coalesce(CAST(:unit AS text), (
  -- by default the region's own unit: from the top, down while a unit has a single child (country → province →
  -- the prefecture a region is)
  WITH RECURSIVE down AS (
    SELECT code, 0 AS depth FROM (SELECT code FROM admin_unit WHERE region_id = :region ORDER BY level, code LIMIT 1) t
    UNION ALL SELECT (SELECT c.code FROM admin_unit c WHERE c.parent_code = d.code), d.depth + 1 FROM down d
    WHERE (SELECT count(*) FROM admin_unit c WHERE c.parent_code = d.code) = 1 AND d.depth < 6
  ) SELECT code FROM down ORDER BY depth DESC LIMIT 1))
  AND s.year = coalesce(CAST(:year AS int), (
    SELECT coalesce(max(x.year) FILTER (WHERE x.year = r.default_year), max(x.year))
    FROM admin_stat x JOIN region r ON r.region_id = x.region_id WHERE x.region_id = :region))
""")
_YEARS = text("SELECT DISTINCT year FROM admin_stat WHERE region_id = :region ORDER BY year")
# The unit over every registry year: stocks, flows since the year before and income relative to the line, as
# admin_stat holds them (suppressed already; a withheld figure is null).
HISTORY_COLUMNS = ("year", "suppressed", "poverty_rate", *MEASURES, "entered_households", *FLOW_MEASURES,
                   "income_p25", "income_median", "income_p75")
_HISTORY = text(f"SELECT {', '.join(HISTORY_COLUMNS)} FROM admin_stat WHERE admin_code = :unit ORDER BY year")
_CHILDREN = text(f"""
SELECT a.code, a.name, a.name_en, {", ".join("s." + c for c in _STAT_COLUMNS.split(", ")[1:])}
FROM admin_unit a JOIN admin_stat s ON s.admin_code = a.code AND s.year = :year
WHERE a.parent_code = :unit ORDER BY a.code
""")
_ANCESTORS = text("""
WITH RECURSIVE up AS (
  SELECT code, name, name_en, level, parent_code, 0 AS depth FROM admin_unit WHERE code = :unit
  UNION ALL SELECT a.code, a.name, a.name_en, a.level, a.parent_code, up.depth + 1
  FROM admin_unit a JOIN up ON a.code = up.parent_code WHERE up.depth < 6
) SELECT code, name, name_en, level FROM up WHERE depth > 0 ORDER BY level
""")
_WITHIN = """
WITH RECURSIVE down AS (
  SELECT code FROM admin_unit WHERE code = :unit
  UNION ALL SELECT a.code FROM admin_unit a JOIN down d ON a.parent_code = d.code
)"""
_PROJECTS = text(_WITHIN + """
SELECT p.type::text AS type, p.status::text AS status, count(*) AS n,
  coalesce(sum(p.budget_total), 0)::float8 AS budget, coalesce(sum(p.capacity), 0) AS capacity
FROM project p JOIN down d ON d.code = p.admin_code
WHERE p.start_date IS NULL OR p.start_date < make_date(:year + 1, 1, 1)
GROUP BY 1, 2 ORDER BY 1, 2
""")
_FACILITIES = text(_WITHIN + """
SELECT f.class::text AS class, count(*) AS n FROM facility f JOIN down d ON d.code = f.admin_code
GROUP BY 1 ORDER BY 1
""")


async def unit_figures(conn: Any, region: str, unit: str | None, year: int | None) -> dict[str, Any] | None:
    row = (await conn.execute(_UNIT, {"region": region, "unit": unit, "year": year})).mappings().first()
    if row is None:
        return None
    out = dict(row)
    out["years"] = list((await conn.execute(_YEARS, {"region": region})).scalars())
    out["history"] = [dict(r) for r in (await conn.execute(_HISTORY, {"unit": out["code"]})).mappings()]
    out["ancestors"] = [dict(r) for r in (await conn.execute(_ANCESTORS, {"unit": out["code"]})).mappings()]
    out["children"] = [dict(r) for r in (await conn.execute(
        _CHILDREN, {"unit": out["code"], "year": out["year"]})).mappings()]
    out["projects"] = [dict(r) for r in (await conn.execute(
        _PROJECTS, {"unit": out["code"], "year": out["year"]})).mappings()]
    out["facilities"] = [dict(r) for r in (await conn.execute(_FACILITIES, {"unit": out["code"]})).mappings()]
    return out

