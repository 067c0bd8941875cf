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

import numpy as np
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
# Flows since the previous year's snapshot, per village too. Exits and returns are decided as one group (a village's
# are withheld together when either is 1-4, then the totals), apart from the stocks: with the stocks of both years
# published and new households entering as poor, exits − returns is the change of the poor less the entries, so one
# of the two published would give the other back. Entries are the change of registered households (the registry
# drops no one): published where both years' registered figures are (tests/test_portal_figures.py's attacker
# checks the lot across years).
FLOW_MEASURES = ("exits", "returns")
MIN_QUANTILE_GROUP = 20  # income quartiles only over at least 20 households

_VERSIONS = text("SELECT table_name, version FROM table_version WHERE table_name = ANY(:names)")
_STATE = text("SELECT versions FROM admin_stat_state")

# The registry as of each year's last snapshot (the newest valid_from in that year), per village. The latest
# year's figures are those of the village-poverty layer (the registry as of the region's newest valid_from).
_VILLAGE_FIGURES = text("""
WITH reg AS (
  SELECT hh_id, region_id, village_code, status::text AS status, size, net_income_pc, valid_from, valid_to
  FROM household
  UNION ALL
  SELECT hh_id, region_id, village_code, status::text, size, net_income_pc, valid_from, valid_to
  FROM household_history
), snap AS (
  SELECT region_id, extract(year FROM valid_from)::int AS year, max(valid_from) AS at FROM reg GROUP BY 1, 2
), rows AS (
  SELECT s.region_id, s.year, s.at, r.hh_id, r.village_code, r.status, r.size, r.net_income_pc
  FROM snap s JOIN reg r ON r.region_id = s.region_id AND r.valid_from <= s.at
   AND (r.valid_to IS NULL OR r.valid_to > s.at)
), rows2 AS (  -- each record beside the household's record at the previous year's snapshot (if any)
  SELECT r.*, CASE WHEN lag(r.year) OVER w = r.year - 1 THEN lag(r.status) OVER w END AS prev_status,
    lag(r.year) OVER w = r.year - 1 AS had_previous
  FROM rows r WINDOW w AS (PARTITION BY r.hh_id ORDER BY r.year)
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
  coalesce(sum(r.size) FILTER (WHERE x.hh_id IS NOT NULL), 0) AS reached_persons,
  count(*) FILTER (WHERE r.had_previous IS NOT TRUE) AS entered_households,
  count(*) FILTER (WHERE r.prev_status IN ('poor', 'returned') AND r.status IN ('exited', 'monitored')) AS exits,
  count(*) FILTER (WHERE r.prev_status IN ('exited', 'monitored') AND r.status IN ('poor', 'returned')) AS returns,
  array_agg(r.net_income_pc::float8 / g.poverty_line::float8) FILTER (WHERE r.net_income_pc IS NOT NULL)
    AS income_ratios
FROM rows2 r LEFT JOIN reached x ON x.year = r.year AND x.hh_id = r.hh_id
JOIN region g ON g.region_id = r.region_id
GROUP BY 1, 2, 3, 4
""")
_UNITS = text("""
SELECT a.region_id, a.code, a.parent_code, a.level, v.population
FROM admin_unit a LEFT JOIN village v ON v.code = a.code
""")
_INSERT = text("""
INSERT INTO admin_stat (region_id, admin_code, year, snapshot, level, villages, population, registered_households,
  poor_households, poor_persons, exited_households, monitored_households, reached_households, reached_persons,
  poverty_rate, suppressed, entered_households, exits, returns, income_p25, income_median, income_p75)
SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(region_id text, admin_code text, year int, snapshot date,
  level smallint, villages int, population bigint, registered_households int, poor_households int,
  poor_persons int, exited_households int, monitored_households int, reached_households int, reached_persons int,
  poverty_rate float8, suppressed boolean, entered_households int, exits int, returns int, income_p25 float8,
  income_median float8, income_p75 float8)
""")


def _village_withheld(fig: dict[str, int]) -> dict[str, bool]:
    """The village-poverty layer's rule: registered households withheld when 1–4 or when those not poor
    (registered − poor) are 1–4, poor households and persons (and the rate) when the poor households are 1–4."""
    small_poor = primary(fig.get("poor_households", 0), MIN_HOUSEHOLDS)
    registered = fig.get("registered_households", 0)
    return {"registered_households": primary(registered, MIN_HOUSEHOLDS)
            or primary(registered - fig.get("poor_households", 0), MIN_HOUSEHOLDS),
            "poor_households": small_poor, "poor_persons": small_poor}


def _sum_up(tree: Hierarchy, order: list[str], leaf: dict[str, dict[str, int]], measures: tuple[str, ...]
            ) -> dict[str, dict[str, int]]:
    """Every unit's figures as the sums of its villages' (``order``: deepest first)."""
    values: dict[str, dict[str, int]] = {m: defaultdict(int) for m in measures}
    for c in order:
        for m in measures:
            if tree.level[c] == VILLAGE_LEVEL:
                values[m][c] = leaf.get(c, {}).get(m, 0)
            up = tree.parent[c]
            if up is not None:
                values[m][up] += values[m][c]
    return values


def _quartiles(ratios: list[float]) -> tuple[float | None, float | None, float | None]:
    """Quartiles of net income per person over the poverty line, rounded to 0.01, for groups of at least
    MIN_QUANTILE_GROUP households (a quartile of a small group is one household's income)."""
    if len(ratios) < MIN_QUANTILE_GROUP:
        return None, None, None
    q = np.quantile(np.asarray(ratios, dtype=float), [0.25, 0.5, 0.75])
    return tuple(round(float(x), 2) for x in q)  # type: ignore[return-value]


def build_rows(units: list[dict[str, Any]], figures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of ``admin_stat``: every unit of every region, for every registry year of its region.

    Stocks (the registry as of the year's snapshot) and flows (since the previous year's snapshot) are decided
    separately, each by the village rule and the secondary suppression of totals; see FLOW_MEASURES for why the
    flows are safe across years."""
    by_region: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for u in units:
        by_region[u["region_id"]].append(u)
    years: dict[str, dict[int, str]] = defaultdict(dict)
    per_year: dict[tuple[str, int], dict[str, dict[str, int]]] = defaultdict(dict)
    ratios: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(dict)
    for f in figures:
        years[f["region_id"]][f["year"]] = str(f["at"])
        per_year[(f["region_id"], f["year"])][f["village_code"]] = {
            m: int(f.get(m) or 0) for m in MEASURES + FLOW_MEASURES + ("entered_households",)}
        ratios[(f["region_id"], f["year"])][f["village_code"]] = list(f.get("income_ratios") or ())
    out: list[dict[str, Any]] = []
    finest = {**{m: VILLAGE_LEVEL for m in VILLAGE_MEASURES}, **{m: VILLAGE_LEVEL - 1 for m in ADMIN_MEASURES}}
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
        below = {c: [v for v in _descend(tree, c) if tree.level[v] == VILLAGE_LEVEL] for c in tree.parent}
        registered_before: dict[str, int | None] | None = None  # published registered households, last year
        stock_hidden_before: set[str] = set()  # units whose registered or poor households were withheld last year
        for year, snapshot in sorted(years[region].items()):
            leaf = per_year[(region, year)]
            values = _sum_up(tree, order, leaf, MEASURES + FLOW_MEASURES + ("entered_households",))
            village_rule = {c: _village_withheld({m: values[m][c] for m in VILLAGE_MEASURES})
                            for c in tree.parent if tree.level[c] == VILLAGE_LEVEL}
            withheld_leaves = {m: {c for c, w in village_rule.items() if w[m]} for m in VILLAGE_MEASURES}
            withheld = withhold_totals(tree, {m: values[m] for m in MEASURES}, finest, withheld_leaves,
                                       VILLAGE_LEVEL, MIN_HOUSEHOLDS)
            # flows: exits and returns of a village withheld together when either is 1-4, then the totals
            has_previous = year - 1 in years[region]
            # ... and wherever the registered or the poor households are withheld in the year or the year before:
            # the poor of a year are the year before's plus entries and returns minus exits, and the registered
            # the year before's plus entries, so published flows would give them back
            stock_hidden = withheld_leaves["poor_households"] | withheld_leaves["registered_households"] | withheld
            flow_leaves = {c for c in tree.parent if tree.level[c] == VILLAGE_LEVEL
                           and (any(primary(values[m][c], MIN_HOUSEHOLDS) for m in FLOW_MEASURES)
                                or c in stock_hidden or c in stock_hidden_before)}
            flows_withheld = withhold_totals(
                tree, {m: values[m] for m in FLOW_MEASURES}, dict.fromkeys(FLOW_MEASURES, VILLAGE_LEVEL),
                dict.fromkeys(FLOW_MEASURES, flow_leaves), VILLAGE_LEVEL, MIN_HOUSEHOLDS,
                forced=(stock_hidden | stock_hidden_before) - flow_leaves)
            rows: dict[str, dict[str, Any]] = {}
            for c in tree.parent:
                lv = tree.level[c]
                if lv == VILLAGE_LEVEL:
                    hidden = {m: village_rule[c].get(m, True) for m in MEASURES}  # admin-only measures: not here
                    flows_hidden = c in flow_leaves
                else:
                    hidden = dict.fromkeys(MEASURES, c in withheld)
                    flows_hidden = c in flows_withheld
                row = {m: None if hidden[m] else values[m][c] for m in MEASURES}
                pop = population[c]
                poor_pp = row["poor_persons"]
                entered = None
                if has_previous and registered_before is not None:
                    before, now = registered_before.get(c), row["registered_households"]
                    x = values["entered_households"][c]
                    # published where it is the change of two published figures (the registry drops no one):
                    # anyone can subtract them, so withholding it would protect nothing; where households also
                    # left the registry it is not derivable, and published only when not small
                    if before is not None and now is not None and (now - before == x
                                                                   or not primary(x, MIN_HOUSEHOLDS)):
                        entered = x
                pool = [x for v in below[c] for x in ratios[(region, year)].get(v, ())]
                quart = _quartiles(pool) if row["registered_households"] is not None else (None, None, None)
                rows[c] = {
                    "region_id": region, "admin_code": c, "year": year, "snapshot": snapshot, "level": lv,
                    "villages": villages[c], "population": pop, **row,
                    "poverty_rate": poor_pp / pop if poor_pp is not None and pop else None,
                    # the stocks' flag (as in village-poverty); withheld flows are null
                    "suppressed": any(hidden[m] for m in (VILLAGE_MEASURES if lv == VILLAGE_LEVEL else MEASURES)),
                    "entered_households": entered,
                    **{m: None if (flows_hidden or not has_previous) else values[m][c] for m in FLOW_MEASURES},
                    "income_p25": quart[0], "income_median": quart[1], "income_p75": quart[2],
                }
            out.extend(rows.values())
            registered_before = {c: r["registered_households"] for c, r in rows.items()}
            stock_hidden_before = stock_hidden
    return out


def _descend(tree: Hierarchy, code: str) -> list[str]:
    out, stack = [], [code]
    while stack:
        c = stack.pop()
        out.append(c)
        stack.extend(tree.children.get(c, ()))
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
        # a rebuild reads the whole registry (about 30 s for 5 million households): no request waits for it
        # (LiveCatalog._derived), so the per-statement limit of requests does not apply
        await conn.execute(text("SET LOCAL statement_timeout = 0"))
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
