"""Early warning of return to poverty (docs/methodology.md#return-risk): the records a model learns from, read from
the database, and a trained model stored with its predictions.

The records are those of the ``household-records`` collection (the same query, so the model reads what a rule or a
filter reads), up to a year, each with the number of the region's monitoring rules that fire on it (the rules of
``app.services.monitoring``, translated once), its members counted by labour and health, and its county. The
model itself is fitted by ``app.analysis.risk`` in the job's analysis child (``return-risk``) or in the command.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
import pandas as pd
from sqlalchemy import Double, Integer, and_, cast, false, func, or_, select, text, true, union_all
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import InvalidParameter, NotFound
from app.layers.catalog import ABLE_TO_WORK, PERSON_HISTORY, member_of_on
from app.models.orm import Person
from app.services.monitoring import compile_rules, records_layer, region_rules
from app.settings import SecuritySettings

log = logging.getLogger(__name__)

RECORD_COLUMNS = ("hh_id", "year", "region", "village_code", "status", "hh_type", "main_cause", "year_exited",
                  "size", "income_wage", "income_business", "income_property", "income_transfer", "net_income_pc",
                  "income_change", "expense_medical", "expense_education", "loss_disaster", "rigid_expense_share",
                  "poverty_line", "house_safety_grade", "water_safe", "water_difficulty", "arable_mu",
                  "irrigated_mu", "coop_member", "microcredit", "food_insecure", "family_doctor")
_UNITS = text("SELECT code, level, parent_code FROM admin_unit WHERE region_id = :r")


async def load_records(engine: AsyncEngine, security: SecuritySettings, region: str,
                       until: int | None = None) -> pd.DataFrame:
    """The region's registry records of every year up to ``until`` (all years when None), as a frame with the
    columns of ``RECORD_COLUMNS``, ``rules_fired``, ``labour``, ``ill``, ``disabled`` and ``county``. Records of
    later years are not read at all."""
    layer = records_layer(security)
    props = {p.name: p.expr for p in layer.props}
    where = [props["region"] == region]
    if until is not None:  # by valid_from, which indexes can use (the year is an expression)
        where.append(props["valid_from"] < dt.date(until + 1, 1, 1))
    async with engine.connect() as conn:
        if await conn.scalar(text("SELECT 1 FROM region WHERE region_id = :r"), {"r": region}) is None:
            raise NotFound(f"There is no region '{region}'.")
        compiled = compile_rules(await region_rules(conn, region), layer)
        fired = sum((cast(func.coalesce(c.predicate, false()), Integer) for c in compiled), start=0)
        numbers = {p.name for p in layer.props if p.schema.get("type") == "number"}  # numeric → float8, not Decimal
        members = _members_on(props["hh_id"], props["valid_from"])
        stmt = select(*((cast(props[c], Double) if c in numbers else props[c]).label(c) for c in RECORD_COLUMNS),
                      fired.label("rules_fired"), members.c.labour, members.c.ill, members.c.disabled).select_from(
            layer.source.join(members, true())).where(and_(*where))
        # a region's whole history is one long read: the job's time limit governs it (cancelling the task cancels
        # the statement), not the API's per-statement limit
        await conn.execute(text("SET LOCAL work_mem = '64MB'"))
        await conn.execute(text("SET LOCAL statement_timeout = 0"))
        rows = (await conn.execute(stmt)).all()
        units = (await conn.execute(_UNITS, {"r": region})).all()
    # in a fixed order: the same records give the same model (the database returns them in any order)
    df = pd.DataFrame(rows, columns=[*RECORD_COLUMNS, "rules_fired", "labour", "ill", "disabled"]).sort_values(
        ["year", "hh_id"], kind="stable", ignore_index=True)
    df["county"] = df["village_code"].map(counties(units))
    return df


def _members_on(hh_id: Any, at: Any) -> Any:
    """The household's members as registered on day ``at`` (current and historical member rows valid then): able to
    work, ill, disabled — so a record of year t never reads what its members became later."""
    p = Person.__table__
    cols = ("hh_id", "labour", "health", "disability_grade", "valid_from", "valid_to")
    m = union_all(select(*(p.c[c] for c in cols)), select(*(PERSON_HISTORY.c[c] for c in cols))).subquery("m")
    return select(
        func.count().filter(m.c.labour.in_(ABLE_TO_WORK)).label("labour"),
        func.count().filter(m.c.health.in_(("chronic", "major_illness"))).label("ill"),
        func.count().filter(or_(m.c.health == "disabled", m.c.disability_grade.is_not(None))).label("disabled"),
    ).where(*member_of_on(m, hh_id, at)).lateral("members")


def counties(units: Sequence[Any]) -> dict[str, str]:
    """Each unit's county (its ancestor at level 3; the unit's own parent where the region has no counties)."""
    parent = {u[0]: u[2] for u in units}
    level = {u[0]: u[1] for u in units}
    out = {}
    for code in parent:
        c, seen = code, 0
        while c is not None and level.get(c, 0) > 3 and seen < 10:
            c, seen = parent.get(c), seen + 1
        out[code] = c if c is not None and level.get(c) == 3 else (parent.get(code) or code)
    return out


def years_of(records: pd.DataFrame) -> list[int]:
    return sorted(int(y) for y in records["year"].unique())


def check_years(records: pd.DataFrame, region: str, until: int, validate_years: int) -> list[int]:
    """The outcome years validated on: the last ``validate_years`` years up to ``until`` that have a year before
    them to learn from (two at least)."""
    years = years_of(records)
    if until not in years:
        raise InvalidParameter(f"The registry of '{region}' has no records in {until}"
                               + (f"; it has {', '.join(map(str, years))}." if years else "."))
    outcome_years = [y for y in years if y - 1 in years and y <= until]
    if len(outcome_years) < 2:
        raise InvalidParameter(f"The registry of '{region}' has too few years up to {until} to learn from and "
                               "validate on (at least three consecutive years are needed).")
    return outcome_years[1:][-validate_years:]


async def store(engine: AsyncEngine, *, region: str, model: dict[str, Any], predictions: pd.DataFrame,
                villages: list[dict[str, Any]], owner: str | None, run_id: uuid.UUID | None) -> str:
    """One transaction: the model row, its household predictions (with the household's village and point of the
    scored year) and the region's village figures (replacing those of its previous model). Returns the model id."""
    from app.db import translated_errors

    model_id = f"{region}-{model['scored_year']}-{uuid.uuid4().hex[:8]}"
    year = int(model["scored_year"])
    async with translated_errors(), engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO risk_model (model_id, region_id, trained_from, trained_until, scored_year, owner, run_id, "
            "features, params, metrics, libraries, threshold, model) VALUES (:id, :r, :f, :u, :y, :o, :run, "
            "CAST(:feat AS jsonb), CAST(:params AS jsonb), CAST(:metrics AS jsonb), CAST(:libs AS jsonb), :t, :model)"),
            {"id": model_id, "r": region, "f": model["trained_from"], "u": model["trained_until"], "y": year,
             "o": owner, "run": run_id, "feat": _json(model["features"]), "params": _json(model["params"]),
             "metrics": _json(model["metrics"]), "libs": _json(model["libraries"]), "t": model["threshold"],
             "model": model["model"]})
        # the household's village and point as of the scored year: its record valid in that year
        await conn.execute(_PREDICTIONS_OF_YEAR, {
            "m": model_id, "r": region, "y": year, "t": model["threshold"],
            "from_": dt.date(year, 1, 1), "to": dt.date(year + 1, 1, 1),
            "hhs": predictions["hh_id"].tolist(), "ps": predictions["probability"].astype(float).tolist(),
            "rules": predictions["rules_fired"].astype(int).tolist(),
            "factors": [_json(f) for f in predictions["factors"]]})
        await conn.execute(text("DELETE FROM village_risk WHERE region_id = :r"), {"r": region})
        if villages:
            await conn.execute(text(
                "INSERT INTO village_risk (region_id, village_code, model_id, year, high_risk, mean_probability, "
                "suppressed) SELECT :r, x.v, :m, :y, x.h, x.p, x.s FROM unnest(CAST(:vs AS text[]), "
                "CAST(:hs AS int[]), CAST(:ps AS float8[]), CAST(:ss AS bool[])) AS x(v, h, p, s)"),
                {"r": region, "m": model_id, "y": year, "vs": [v["village_code"] for v in villages],
                 "hs": [v["high_risk"] for v in villages], "ps": [v["mean_probability"] for v in villages],
                 "ss": [v["suppressed"] for v in villages]})
    return model_id


_PREDICTIONS_OF_YEAR = text("""
INSERT INTO risk_prediction (model_id, hh_id, region_id, year, village_code, geom, probability, high_risk,
                             rules_fired, factors)
SELECT :m, x.hh_id, :r, :y, h.village_code, h.geom, x.p, x.p >= :t, x.rules, x.factors
FROM unnest(CAST(:hhs AS text[]), CAST(:ps AS float8[]), CAST(:rules AS int[]), CAST(:factors AS jsonb[]))
  AS x(hh_id, p, rules, factors)
JOIN (SELECT hh_id, village_code, geom, valid_from FROM household
      UNION ALL SELECT hh_id, village_code, geom, valid_from FROM household_history) h
  ON h.hh_id = x.hh_id AND h.valid_from >= :from_ AND h.valid_from < :to
""")


def _json(v: Any) -> str:
    return orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY).decode()
