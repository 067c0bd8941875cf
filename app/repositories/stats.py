"""Public registry figures per administrative unit and year (table ``admin_stat``), kept in step with the registry.

The figures are derived data: built from the registry (current and earlier yearly versions), the village forms
and the project beneficiaries, then passed through the suppression rules (app/analysis/disclosure.py). They are
rebuilt whenever one of the tables they come from has changed (``table_version``, bumped by a trigger on every
write): the catalogue's version check calls :func:`ensure_current` before it reads, so an import, a demo load or
an edit of a household is reflected on the next request of any worker. Building takes an advisory lock, so two
workers never build at once; the second one finds the state current and returns.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.analysis.disclosure import Hierarchy, primary, withhold_totals

log = logging.getLogger(__name__)

MIN_HOUSEHOLDS = 5  # the village-poverty layer's rule (app/layers/catalog.py)
VILLAGE_LEVEL = 5
SOURCES = ("public.household", "public.household_history", "public.village", "public.admin_unit",
           "public.project_beneficiary", "public.region")
_LOCK = 7_310_020  # pg_advisory_xact_lock key of the build
# Measures published for villages too (the village-poverty layer); the others only down to townships.
VILLAGE_MEASURES = ("registered_households", "poor_households", "poor_persons")
ADMIN_MEASURES = ("exited_households", "monitored_households", "reached_households", "reached_persons")
MEASURES = VILLAGE_MEASURES + ADMIN_MEASURES

_VERSIONS = text("SELECT table_name, version FROM table_version WHERE table_name = ANY(:names)")
_STATE = text("SELECT versions FROM admin_stat_state")

# The registry as of each year's last snapshot (the newest valid_from in that year), per village. The latest
# year's figures are those of the village-poverty layer (the registry as of the region's newest valid_from).
_VILLAGE_FIGURES = text("""
WITH reg AS (
  SELECT hh_id, region_id, village_code, status::text AS status, size, valid_from, valid_to FROM household
  UNION ALL
  SELECT hh_id, region_id, village_code, status::text, size, valid_from, valid_to FROM household_history
), snap AS (
  SELECT region_id, extract(year FROM valid_from)::int AS year, max(valid_from) AS at FROM reg GROUP BY 1, 2
), rows AS (
  SELECT s.region_id, s.year, s.at, r.hh_id, r.village_code, r.status, r.size
  FROM snap s JOIN reg r ON r.region_id = s.region_id AND r.valid_from <= s.at
   AND (r.valid_to IS NULL OR r.valid_to > s.at)
), reached AS (
  SELECT DISTINCT r.year, r.hh_id FROM rows r JOIN project_beneficiary b ON b.hh_id = r.hh_id AND b.year <= r.year
)
SELECT r.region_id, r.year, r.at, r.village_code,
  count(*) AS registered_households,
  count(*) FILTER (WHERE r.status IN ('poor', 'returned')) AS poor_households,
  coalesce(sum(r.size) FILTER (WHERE r.status IN ('poor', 'returned')), 0) AS poor_persons,
  count(*) FILTER (WHERE r.status = 'exited') AS exited_households,
  count(*) FILTER (WHERE r.status = 'monitored') AS monitored_households,
  count(x.hh_id) AS reached_households,
  coalesce(sum(r.size) FILTER (WHERE x.hh_id IS NOT NULL), 0) AS reached_persons
FROM rows r LEFT JOIN reached x ON x.year = r.year AND x.hh_id = r.hh_id
GROUP BY 1, 2, 3, 4
""")
_UNITS = text("""
SELECT a.region_id, a.code, a.parent_code, a.level, v.population
FROM admin_unit a LEFT JOIN village v ON v.code = a.code
""")
_INSERT = text("""
INSERT INTO admin_stat (region_id, admin_code, year, snapshot, level, villages, population, registered_households,
  poor_households, poor_persons, exited_households, monitored_households, reached_households, reached_persons,
  poverty_rate, suppressed)
SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(region_id text, admin_code text, year int, snapshot date,
  level smallint, villages int, population bigint, registered_households int, poor_households int,
  poor_persons int, exited_households int, monitored_households int, reached_households int, reached_persons int,
  poverty_rate float8, suppressed boolean)
""")


def _village_withheld(fig: dict[str, int]) -> dict[str, bool]:
    """The village-poverty layer's rule: registered households withheld when 1–4, poor households and persons
    (and the rate) when the poor households are 1–4."""
    small_poor = primary(fig.get("poor_households", 0), MIN_HOUSEHOLDS)
    return {"registered_households": primary(fig.get("registered_households", 0), MIN_HOUSEHOLDS),
            "poor_households": small_poor, "poor_persons": small_poor}


def build_rows(units: list[dict[str, Any]], figures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of ``admin_stat``: every unit of every region, for every registry year of its region."""
    by_region: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for u in units:
        by_region[u["region_id"]].append(u)
    years: dict[str, dict[int, str]] = defaultdict(dict)
    per_year: dict[tuple[str, int], dict[str, dict[str, int]]] = defaultdict(dict)
    for f in figures:
        years[f["region_id"]][f["year"]] = str(f["at"])
        per_year[(f["region_id"], f["year"])][f["village_code"]] = {m: int(f[m]) for m in MEASURES}
    out: list[dict[str, Any]] = []
    for region, rus in by_region.items():
        tree = Hierarchy.of((u["code"], u["parent_code"], u["level"]) for u in rus)
        order = sorted(tree.parent, key=lambda c: -tree.level[c])
        villages = {c: 1 if tree.level[c] == VILLAGE_LEVEL else 0 for c in tree.parent}
        population = {u["code"]: u["population"] for u in rus}
        for c in order:  # sums up the tree, deepest first
            up = tree.parent[c]
            if up is not None:
                villages[up] += villages[c]
                if population[c] is not None:
                    population[up] = (population[up] or 0) + population[c]
        for year, snapshot in sorted(years[region].items()):
            leaf = per_year[(region, year)]
            values: dict[str, dict[str, int]] = {m: defaultdict(int) for m in MEASURES}
            for c in order:
                for m in MEASURES:
                    if tree.level[c] == VILLAGE_LEVEL:
                        values[m][c] = leaf.get(c, {}).get(m, 0)
                    up = tree.parent[c]
                    if up is not None:
                        values[m][up] += values[m][c]
            village_rule = {c: _village_withheld({m: values[m][c] for m in VILLAGE_MEASURES})
                            for c in tree.parent if tree.level[c] == VILLAGE_LEVEL}
            withheld_leaves = {m: {c for c, w in village_rule.items() if w[m]} for m in VILLAGE_MEASURES}
            finest = {**{m: VILLAGE_LEVEL for m in VILLAGE_MEASURES}, **{m: VILLAGE_LEVEL - 1 for m in ADMIN_MEASURES}}
            withheld = withhold_totals(tree, values, finest, withheld_leaves, VILLAGE_LEVEL, MIN_HOUSEHOLDS)
            for c in tree.parent:
                lv = tree.level[c]
                if lv == VILLAGE_LEVEL:
                    hidden = {m: village_rule[c].get(m, True) for m in MEASURES}  # admin-only measures: not here
                else:
                    hidden = dict.fromkeys(MEASURES, c in withheld)
                row = {m: None if hidden[m] else values[m][c] for m in MEASURES}
                pop = population[c]
                poor_pp = row["poor_persons"]
                out.append({
                    "region_id": region, "admin_code": c, "year": year, "snapshot": snapshot, "level": lv,
                    "villages": villages[c], "population": pop, **row,
                    "poverty_rate": poor_pp / pop if poor_pp is not None and pop else None,
                    "suppressed": any(hidden[m] for m in (VILLAGE_MEASURES if lv == VILLAGE_LEVEL else MEASURES)),
                })
    return out


async def _versions(conn: Any) -> dict[str, int]:
    return {k: int(v) for k, v in (await conn.execute(_VERSIONS, {"names": list(SOURCES)})).all()}


async def ensure_current(engine: AsyncEngine) -> bool:
    """Rebuild ``admin_stat`` if a table it is built from changed since it was built; True if it was rebuilt."""
    async with engine.connect() as conn:
        now = await _versions(conn)
        state = await conn.scalar(_STATE)
    if state is not None and (state if isinstance(state, dict) else json.loads(state)) == now:
        return False
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK})
        now = await _versions(conn)
        state = await conn.scalar(_STATE)
        if state is not None and (state if isinstance(state, dict) else json.loads(state)) == now:
            return False  # another worker built it while this one waited
        units = [dict(r) for r in (await conn.execute(_UNITS)).mappings()]
        figures = [dict(r) for r in (await conn.execute(_VILLAGE_FIGURES)).mappings()]
        rows = build_rows(units, figures)
        await conn.execute(text("DELETE FROM admin_stat"))
        for i in range(0, len(rows), 20_000):
            await conn.execute(_INSERT, {"rows": json.dumps(rows[i:i + 20_000])})
        # the versions it was built from (its own writes bump admin_stat's version, not these)
        await conn.execute(text("INSERT INTO admin_stat_state (id, versions, built) VALUES (true, CAST(:v AS jsonb), "
                                "now()) ON CONFLICT (id) DO UPDATE SET versions = excluded.versions, built = now()"),
                           {"v": json.dumps(now)})
    log.info("public figures per administrative unit rebuilt: %d rows", len(rows))
    return True
