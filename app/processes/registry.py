"""The household registry as a process input (Stage 2 needs, the MPI): households with their members'
counts, distances to services, villages with released telecom indicators, and the region's cause table.

Restricted like the ``households`` collection: analysts and administrators only; analysts get each household's
point displaced exactly as the collection shows it (distances are measured from the true point).
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import shapely
from pydantic import BaseModel, ConfigDict, Field, Strict
from sqlalchemy import text

from app.analysis.gaps import nearest_km
from app.analysis.spatial import AnalysisError
from app.models.codes import HouseholdStatus, Role
from app.processes.data import Units

REGISTRY_ROLE = Role.analyst
SCHOOL_YEARS = {"illiterate": 0, "primary": 6, "junior": 9, "senior": 12, "tertiary": 16}
TELECOM_SKIP = ("presence",)  # hourly presence is not a village indicator


class RegistryRef(BaseModel):
    """The poor-household registry of a region held by this service (restricted: analysts and administrators).

    Households of one year's snapshot (by default the region's default year, else its latest), optionally within
    one administrative unit."""

    model_config = ConfigDict(extra="forbid", title="RegistryReference", strict=True)
    region: str = Field(min_length=1, max_length=100, examples=["tieling-demo"])
    admin_code: str | None = Field(None, max_length=50, description="Only households of this village, township, "
                                   "county or prefecture")
    # code lists arrive as their JSON strings: the strict models would otherwise want enum instances
    year: int | None = Field(None, ge=1900, le=2200, description="The registry as of this year (its last "
                             "snapshot in that year, from the registry's history); default: the region's default "
                             "year when the registry has it, else the latest snapshot")
    statuses: list[Annotated[HouseholdStatus, Strict(False)]] | None = Field(
        None, min_length=1, description="Registry statuses to include (poor, exited, returned, monitored); "
        "default all")


# The registry as of a snapshot date: the current rows and those the registry's history keeps (same columns).
_REGISTRY = "(SELECT * FROM household UNION ALL SELECT * FROM household_history)"
_HOUSEHOLDS = """
SELECT h.hh_id AS id, h.village_code, a4.code AS township_code, a3.code AS county_code, h.status::text AS status,
  h.main_cause::text AS main_cause, h.size, h.net_income_pc::float8 AS net_income_pc, h.food_insecure,
  h.clothing_insecure, h.house_safety_grade::text AS house_safety_grade, h.water_safe, h.water_difficulty,
  h.toilet::text AS toilet, h.cooking_fuel::text AS cooking_fuel, h.electricity,
  h.access_road::text AS access_road, h.arable_mu::float8 AS arable_mu, h.irrigated_mu::float8 AS irrigated_mu,
  h.coop_member, h.microcredit, h.family_doctor, ST_X(h.geom) AS lon, ST_Y(h.geom) AS lat, ST_AsBinary({shown}) AS shown
FROM {registry} h
JOIN admin_unit a5 ON a5.code = h.village_code
LEFT JOIN admin_unit a4 ON a4.code = a5.parent_code
LEFT JOIN admin_unit a3 ON a3.code = a4.parent_code
WHERE h.region_id = :region AND h.valid_from <= :at AND (h.valid_to IS NULL OR h.valid_to > :at)
  AND (CAST(:statuses AS text[]) IS NULL OR h.status::text = ANY(CAST(:statuses AS text[])))
  {within}
"""
# One unit's households, found through its villages (the index on village_code), not by testing every household of
# the region against the unit's code: a county of a province-sized registry (5 million households) is read in a
# fraction of the time.
_WITHIN = """AND h.village_code IN (
    WITH RECURSIVE under(code, level) AS (
      SELECT code, level FROM admin_unit WHERE code = :code AND region_id = :region
      UNION ALL SELECT a.code, a.level FROM admin_unit a JOIN under u ON a.parent_code = u.code)
    SELECT code FROM under WHERE level = 5)"""
# Members of the same snapshot, counted per household (ages at the snapshot's year).
_MEMBERS = """
SELECT p.hh_id,
  count(*) FILTER (WHERE p.health IN ('chronic', 'major_illness')) AS ill_members,
  count(*) FILTER (WHERE NOT p.med_insured) AS uninsured_members,
  count(*) FILTER (WHERE :year - p.birth_year BETWEEN 6 AND 15 AND p.in_school = 'none'
                   AND p.health = 'healthy') AS dropout_children,
  count(*) FILTER (WHERE :year - p.birth_year BETWEEN 6 AND 15 AND p.in_school = 'none') AS out_of_school_children,
  count(*) FILTER (WHERE p.labour = 'ordinary') AS ordinary_labour,
  count(*) FILTER (WHERE p.labour = 'skilled') AS skilled_labour,
  max(CASE p.education WHEN 'illiterate' THEN 0 WHEN 'primary' THEN 6 WHEN 'junior' THEN 9 WHEN 'senior' THEN 12
      WHEN 'tertiary' THEN 16 END) FILTER (WHERE :year - p.birth_year >= 10) AS max_school_years
FROM person p
WHERE p.region_id = :region AND p.valid_from <= :at AND (p.valid_to IS NULL OR p.valid_to > :at) {of}
GROUP BY p.hh_id
"""
_OF_HOUSEHOLDS = "AND p.hh_id = ANY(CAST(:ids AS text[]))"  # the members of one unit's households only


def households_sql(shown: str, within: bool = False) -> str:
    """The registry's households at ``:at`` (SQL for ``text()``), the point a role sees as ``shown``; ``within``:
    only those of the admin unit ``:code``."""
    return _HOUSEHOLDS.format(shown=shown, registry=_REGISTRY, within=_WITHIN if within else "")


def members_sql(of_households: bool = False) -> str:
    """Member counts per household at ``:at``; ``of_households``: only of the households ``:ids``."""
    return _MEMBERS.format(of=_OF_HOUSEHOLDS if of_households else "")


MEMBER_COUNTS = ("ill_members", "uninsured_members", "dropout_children", "out_of_school_children",
                 "ordinary_labour", "skilled_labour")


async def snapshot_at(conn: Any, region: str, year: int | None) -> Any:
    """The date of the registry snapshot to read: the last one in ``year``; without a year, the last one in the
    region's default year when the registry has it, else the latest."""
    sql = text(f"SELECT max(valid_from) FROM {_REGISTRY} r WHERE region_id = :r "
               "AND (CAST(:y AS int) IS NULL OR extract(year FROM valid_from) = :y)")
    if year is not None:
        at = await conn.scalar(sql, {"r": region, "y": year})
        if at is None:
            years = (await conn.execute(text(
                f"SELECT DISTINCT extract(year FROM valid_from)::int FROM {_REGISTRY} r WHERE region_id = :r "
                "ORDER BY 1"), {"r": region})).scalars().all()
            raise AnalysisError(f"The registry of '{region}' has no snapshot in {year}"
                                + (f"; it has {', '.join(map(str, years))}." if years else "."))
        return at
    default = await conn.scalar(text("SELECT default_year FROM region WHERE region_id = :r"), {"r": region})
    at = await conn.scalar(sql, {"r": region, "y": default}) if default is not None else None
    return at if at is not None else await conn.scalar(sql, {"r": region, "y": None})


def _shown_point(role: Role | None, secret: str) -> tuple[str, dict[str, Any]]:
    """SQL (and its parameters) of the household point a role sees: the ``households`` collection's own
    expression (``catalog.displaced_point``), rendered with named parameters for ``text()``."""
    from sqlalchemy import literal_column

    from app.layers.catalog import displaced_point

    if role == Role.admin:
        return "h.geom", {}
    compiled = displaced_point(literal_column("h.geom"), literal_column("h.hh_id"), secret).compile()
    return str(compiled), dict(compiled.params)


async def cause_table(conn: Any, region: str | None) -> Units:
    """The cause → need → project table of a region: its own rows replace the default rows for the causes they
    cover; without a region, the default table."""
    causes = (await conn.execute(text(
        "SELECT cause::text AS cause, need::text AS need, project_type::text AS project_type, region_id "
        "FROM cause_need_project WHERE region_id = :r OR region_id IS NULL ORDER BY id"),
        {"r": region})).mappings().all()
    own = {r["cause"] for r in causes if r["region_id"] is not None}
    rows = [{"id": str(i), "cause": r["cause"], "need": r["need"], "project_type": r["project_type"]}
            for i, r in enumerate(causes) if r["region_id"] is not None or r["cause"] not in own]
    return Units("cause_table", [r["id"] for r in rows], None, rows, "cause_need_project")


async def load_registry(app: Any, ref: RegistryRef, role: Role | None) -> dict[str, Units]:
    """Units ``households``, ``groups`` (villages, townships, counties with geometry and telecom indicators),
    ``cause_table`` and ``region`` of one region's registry."""
    from app.models.codes import allowed

    if not allowed(role, REGISTRY_ROLE):
        raise AnalysisError("The registry is not available to this role.")
    shown, shown_params = _shown_point(role, app.state.settings.security.jitter_key.get_secret_value())
    async with app.state.engine.connect() as conn:
        await conn.execute(text("SET LOCAL work_mem = '64MB'"))  # the grouping of the members stays in memory
        reg = (await conn.execute(text(
            "SELECT region_id, poverty_line::float8 AS poverty_line, currency FROM region WHERE region_id = :r"),
            {"r": ref.region})).mappings().first()
        if reg is None:
            raise AnalysisError(f"There is no region '{ref.region}'.")
        at = await snapshot_at(conn, ref.region, ref.year)
        within = ref.admin_code is not None
        cap = app.state.settings.processes.max_registry_households
        result = await conn.execute(text(households_sql(shown, within) + " LIMIT :cap"), {
            **shown_params, "region": ref.region, "at": at, **({"code": ref.admin_code} if within else {}),
            "statuses": [s.value for s in ref.statuses] if ref.statuses else None, "cap": cap + 1})
        keys = list(result.keys())
        rows = result.all()
        if len(rows) > cap:
            raise AnalysisError(
                f"The registry of '{ref.region}'{f' in {ref.admin_code!r}' if within else ''} holds more than "
                f"{cap:,} households, the most one analysis reads (TPA_PROCESSES_MAX_REGISTRY_HOUSEHOLDS). Analyse "
                "it per prefecture or county: households.admin_code.")
        of = {"ids": [r[0] for r in rows]} if within else {}
        members = {r[0]: r[1:] for r in (await conn.execute(text(members_sql(within)), {
            "region": ref.region, "at": at, "year": at.year if at else 0, **of})).all()}
        facilities = (await conn.execute(text(
            "SELECT class::text AS class, ST_X(geom) AS lon, ST_Y(geom) AS lat FROM facility "
            "WHERE region_id = :r AND class IN ('clinic', 'hospital', 'market') AND valid_to IS NULL"),
            {"r": ref.region})).all()
        admin = (await conn.execute(text(
            "SELECT a.code, a.level, a.name, ST_AsBinary(coalesce(v.geom_point, ST_PointOnSurface(a.geom))) AS pt, "
            "ST_AsBinary(coalesce(a.geom, v.geom_point)) AS shape FROM admin_unit a "
            "LEFT JOIN village v ON v.code = a.code WHERE a.region_id = :r AND a.level >= 3"),
            {"r": ref.region})).mappings().all()
        cause_units = await cause_table(conn, ref.region)
        telecom = (await conn.execute(text(
            "SELECT unit_type::text AS unit_type, unit_id, h3_res, indicator, value FROM telecom_agg "
            "WHERE region_id = :r AND NOT suppressed AND value IS NOT NULL AND hour IS NULL "
            "AND indicator <> ALL(:skip) AND lower(period) = (SELECT max(lower(period)) FROM telecom_agg "
            "WHERE region_id = :r)"), {"r": ref.region, "skip": list(TELECOM_SKIP)})).all()
    if not rows:
        raise AnalysisError(f"The registry of '{ref.region}' has no households"
                            + (f" in '{ref.admin_code}'." if ref.admin_code else "."))
    rows.sort(key=lambda r: r[0])
    props = [dict(zip(keys, r, strict=True)) for r in rows]
    none = (0,) * len(MEMBER_COUNTS) + (None,)
    for p in props:
        counts = members.get(p["id"], none)
        p.update(zip((*MEMBER_COUNTS, "max_school_years"), counts, strict=True))
        p["year"] = at.year
    true_ll = np.array([[p.pop("lon"), p.pop("lat")] for p in props], dtype=float)
    geoms = shapely.from_wkb([p.pop("shown") for p in props])
    for cls, key in ((("clinic", "hospital"), "clinic_km"), (("market",), "market_km")):
        pts = np.array([[lon, lat] for c, lon, lat in facilities if c in cls], dtype=float).reshape(-1, 2)
        if len(pts):
            d, _ = nearest_km(true_ll, pts)
            for p, v in zip(props, d, strict=True):
                p[key] = float(v)
    households = Units("households", [p["id"] for p in props], np.asarray(geoms, dtype=object), props,
                       f"registry:{ref.region}")
    groups = _groups(admin, telecom)
    region = Units("region", [reg["region_id"]], None, [{"poverty_line": reg["poverty_line"],
                                                         "currency": reg["currency"]}], "region")
    return {"households": households, "groups": groups,
            "cause_table": cause_units,
            "region": region}


def _groups(admin: list[Any], telecom: list[Any]) -> Units:
    """Administrative units with a point, a shape and, for villages, the released telecom indicators of the
    finest H3 cell holding the village point (or of the village itself when released per admin unit)."""
    import h3

    by_cell: dict[str, dict[str, float]] = {}
    by_admin: dict[str, dict[str, float]] = {}
    resolutions: set[int] = set()
    for unit_type, unit_id, res, ind, value in telecom:
        if unit_type == "h3":
            by_cell.setdefault(unit_id, {})[ind] = float(value)
            resolutions.add(int(res))
        else:
            by_admin.setdefault(unit_id, {})[ind] = float(value)
    ids, shapes, props = [], [], []
    for a in admin:
        pt = shapely.from_wkb(a["pt"]) if a["pt"] is not None else None
        p: dict[str, Any] = {"name": a["name"], "level": a["level"]}
        values = dict(by_admin.get(a["code"], {}))
        if a["level"] == 5 and pt is not None:
            for res in sorted(resolutions, reverse=True):
                cell = h3.latlng_to_cell(pt.y, pt.x, res)
                for k, v in by_cell.get(cell, {}).items():
                    values.setdefault(k, v)
        p.update({f"tc_{k}": v for k, v in values.items()})
        ids.append(a["code"])
        shapes.append(shapely.from_wkb(a["shape"]) if a["shape"] is not None else pt)
        props.append(p)
    return Units("groups", ids, np.asarray(shapes, dtype=object), props, "admin_unit")
