"""Dynamic monitoring against return to poverty (docs/methodology.md#monitoring).

A region's monitoring rules are CQL2 text expressions over the properties of the ``household-records`` collection
(one registry record per household and year, with the previous record's income, the rigid expenditure share and
the region's monitoring line beside each). Screening a year translates every rule with the service's own filter
engine (``app.layers.cql2``: the same translation, bound values and type checks as ``filter=`` on the collection)
and evaluates them all in one SQL statement over that year's records; each household for which any rule is true
becomes an alert with the categories and rules that fired and the values those rules read. Writing is one
transaction: alerts found again keep their status and note (a cadre's work is never reset by a later run) and
take the new values; alerts still ``new`` that no rule finds any more are removed; alerts under way stay.

A comparison with a missing value is not true (SQL's three-valued logic, as in CQL2): a household without a
previous record has no ``income_change`` and the income-loss rule does not fire for it.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import and_, false, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import InvalidParameter, NotFound
from app.layers.catalog import Layer, builtin_layers
from app.layers.cql2 import FilterError, parse_filter, to_sql
from app.models.codes import MonitoringCategory, Role
from app.settings import SecuritySettings

log = logging.getLogger(__name__)

RECORDS = "household-records"


@dataclass(frozen=True)
class Rule:
    rule_id: str
    category: str
    title: str
    expression: str
    report: tuple[str, ...] = ()
    source: str = ""
    title_zh: str | None = None
    region_id: str | None = None  # None: a default rule
    active: bool = True


class RuleError(InvalidParameter):
    """A monitoring rule that cannot be evaluated (its id and why)."""


_RULES = text(
    "SELECT rule_id, category, title, expression, report, source, title_zh, region_id, active FROM monitoring_rule "
    "WHERE region_id = :r OR region_id IS NULL ORDER BY region_id NULLS FIRST, id")


async def region_rules(conn: Any, region: str) -> list[Rule]:
    """The rules of a region: its own rows replace the default rows with the same id; inactive rules are left out."""
    by_id: dict[str, Rule] = {}
    for r in (await conn.execute(_RULES, {"r": region})).mappings():
        by_id[r["rule_id"]] = Rule(**{**r, "report": tuple(r["report"] or ())})
    return [r for r in by_id.values() if r.active]


def referenced(tree: Any) -> list[str]:
    """The properties a CQL2-JSON tree reads, in order of first use."""
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if set(node) == {"property"} and isinstance(node["property"], str):
                if node["property"] not in out:
                    out.append(node["property"])
                return
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(tree)
    return out


@dataclass(frozen=True)
class Compiled:
    rule: Rule
    predicate: Any  # SQL boolean expression
    reads: tuple[str, ...]  # properties reported when the rule fires: those it reads, then its ``report`` list


def compile_rules(rules: list[Rule], layer: Layer) -> list[Compiled]:
    """Each rule translated over the records layer (as an administrator sees it); a rule that does not parse, names
    an unknown property or compares values of the wrong type is refused with its id."""
    if not rules:
        raise RuleError("The region has no active monitoring rules.")
    known = {p.name for p in layer.props}
    out = []
    for rule in rules:
        if rule.category not in {c.value for c in MonitoringCategory}:
            raise RuleError(f"Rule '{rule.rule_id}': unknown category '{rule.category}'.")
        try:
            flt = parse_filter(rule.expression, "cql2-text")
            predicate = to_sql(flt, layer, Role.admin)
        except (FilterError, InvalidParameter) as exc:
            raise RuleError(f"Rule '{rule.rule_id}': {exc.detail}") from None
        reads = referenced(flt.tree())
        unknown = [p for p in rule.report if p not in known]
        if unknown:
            raise RuleError(f"Rule '{rule.rule_id}' reports unknown properties: {', '.join(unknown)}.")
        reads += [p for p in rule.report if p not in reads]
        out.append(Compiled(rule, predicate, tuple(p for p in reads if p in known)))
    return out


@dataclass
class Screening:
    region: str
    year: int
    records: int  # household records of the year
    alerts: list[dict[str, Any]]
    by_rule: dict[str, int]
    by_category: dict[str, int]
    written: dict[str, int] = field(default_factory=dict)  # created, updated, removed (when written)
    seconds: float = 0.0


def _value(v: Any) -> Any:
    if isinstance(v, Decimal):
        v = float(v)
    if isinstance(v, float):
        return round(v, 6)
    if isinstance(v, dt.date | dt.datetime):
        return v.isoformat()
    return v


def records_layer(security: SecuritySettings) -> Layer:
    return next(lyr for lyr in builtin_layers(security) if lyr.id == RECORDS)


async def screen(engine: AsyncEngine, security: SecuritySettings, region: str, year: int, *,
                 rules: list[Rule] | None = None, write: bool = True) -> Screening:
    """Evaluate the region's rules (or ``rules``) on its registry records of ``year``; write the alerts unless
    ``write`` is false."""
    started = time.perf_counter()
    layer = records_layer(security)
    props = {p.name: p.expr for p in layer.props}
    # the year as a range of valid_from as well, which indexes can use (the year itself is an expression)
    where = and_(props["region"] == region, props["year"] == year, props["valid_from"] >= dt.date(year, 1, 1),
                 props["valid_from"] < dt.date(year + 1, 1, 1))
    async with engine.connect() as conn:
        if await conn.scalar(text("SELECT 1 FROM region WHERE region_id = :r"), {"r": region}) is None:
            raise NotFound(f"There is no region '{region}'.")
        if rules is None:
            rules = await region_rules(conn, region)
        compiled = compile_rules(rules, layer)
        reads = sorted({p for c in compiled for p in c.reads})
        # each rule evaluated once per record, as a column; the records where any is true kept outside
        flags = select(props["hh_id"].label("hh_id"), props["village_code"].label("village_code"),
                       func.ST_AsEWKB(layer.geom).label("geom"),
                       *(func.coalesce(c.predicate, false()).label(f"r{i}") for i, c in enumerate(compiled)),
                       *(props[p].label(f"v_{p}") for p in reads)).select_from(layer.source).where(where).subquery()
        stmt = select(flags).where(or_(*(flags.c[f"r{i}"] for i in range(len(compiled)))))
        await conn.execute(text("SET LOCAL work_mem = '64MB'"))
        records = await conn.scalar(select(func.count()).select_from(layer.source).where(where))
        if not records:
            years = (await conn.execute(select(props["year"]).select_from(layer.source).where(
                props["region"] == region).distinct().order_by(props["year"]))).scalars().all()
            raise NotFound(f"The registry of '{region}' has no records in {year}"
                           + (f"; it has {', '.join(map(str, years))}." if years else "."))
        rows = (await conn.execute(stmt)).mappings().all()
    alerts, by_rule, by_cat = [], Counter(), Counter()
    for row in rows:
        hit = [c for i, c in enumerate(compiled) if row[f"r{i}"]]
        cats = [m.value for m in MonitoringCategory if any(c.rule.category == m.value for c in hit)]
        values = {p: _value(row[f"v_{p}"]) for c in hit for p in c.reads}
        by_rule.update(c.rule.rule_id for c in hit)
        by_cat.update(cats)
        alerts.append({"alert_id": f"{row['hh_id']}-{year}", "region_id": region, "hh_id": row["hh_id"],
                       "year": year, "village_code": row["village_code"], "geom": row["geom"],
                       "categories": cats, "rules": [c.rule.rule_id for c in hit], "trigger_values": values})
    result = Screening(region, year, records, alerts, dict(by_rule), dict(by_cat))
    if write:
        result.written = await write_alerts(engine, region, year, alerts)
    result.seconds = time.perf_counter() - started
    log.info("monitoring %s %s: %d records, %d alerts (%s) in %.1f s", region, year, records, len(alerts),
             ", ".join(f"{k} {v}" for k, v in sorted(by_cat.items())), result.seconds)
    return result


_UPSERT = text("""
INSERT INTO alert AS a (alert_id, region_id, hh_id, year, village_code, geom, categories, rules, trigger_values)
SELECT x.alert_id, x.region_id, x.hh_id, x.year, x.village_code, ST_GeomFromEWKB(x.geom),
       string_to_array(x.cats, ','), string_to_array(x.rule_list, ','), x.trigger_values
FROM unnest(CAST(:ids AS text[]), CAST(:regions AS text[]), CAST(:hhs AS text[]), CAST(:years AS int[]),
            CAST(:villages AS text[]), CAST(:geoms AS bytea[]), CAST(:cats AS text[]), CAST(:rules AS text[]),
            CAST(:vals AS jsonb[]))
  AS x(alert_id, region_id, hh_id, year, village_code, geom, cats, rule_list, trigger_values)
ON CONFLICT (hh_id, year) DO UPDATE SET categories = excluded.categories, rules = excluded.rules,
  trigger_values = excluded.trigger_values, village_code = excluded.village_code, geom = excluded.geom,
  screened_at = clock_timestamp()
RETURNING (xmax = 0) AS created
""")
_STALE = text("DELETE FROM alert WHERE region_id = :r AND year = :y AND status = 'new' "
              "AND NOT (hh_id = ANY(CAST(:hhs AS text[])))")


async def write_alerts(engine: AsyncEngine, region: str, year: int, alerts: list[dict[str, Any]]) -> dict[str, int]:
    """All or nothing: upsert the alerts found (status and note kept), remove the year's ``new`` alerts not found."""
    from app.db import translated_errors

    async with translated_errors(), engine.begin() as conn:
        created = [r[0] for r in (await conn.execute(_UPSERT, {
            "ids": [a["alert_id"] for a in alerts], "regions": [a["region_id"] for a in alerts],
            "hhs": [a["hh_id"] for a in alerts], "years": [a["year"] for a in alerts],
            "villages": [a["village_code"] for a in alerts], "geoms": [a["geom"] for a in alerts],
            "cats": [",".join(a["categories"]) for a in alerts], "rules": [",".join(a["rules"]) for a in alerts],
            "vals": [orjson.dumps(a["trigger_values"]).decode() for a in alerts]})).all()] if alerts else []
        removed = (await conn.execute(_STALE, {"r": region, "y": year,
                                               "hhs": [a["hh_id"] for a in alerts]})).rowcount
    return {"created": sum(created), "updated": len(created) - sum(created), "removed": removed}

