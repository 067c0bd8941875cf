"""Create, list and delete regions from the command line (``tpa region …``)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import asyncpg
from pyproj import CRS
from pyproj.exceptions import CRSError

from app.errors import Conflict, InvalidParameter, NotFound

# World Bank International Poverty Line, June 2025: $3.00 per person per day at 2021 PPP
# (docs/methodology.md#poverty-lines).
IPL_PER_DAY_USD = Decimal("3.00")
IPL_NOTE = "World Bank International Poverty Line: $3.00 per person per day (2021 PPP) × 365"


@dataclass
class RegionSpec:
    region_id: str
    name: str
    country: str  # ISO 3166-1 alpha-2 or alpha-3
    crs: str
    poverty_line: str | None = None
    currency: str | None = None
    poverty_line_note: str | None = None
    code_system: str | None = None
    admin_levels: dict[int, str] | None = None
    default_year: int | None = None
    description: str | None = None
    attribution: str | None = None


def country_alpha2(value: str) -> tuple[str, str]:
    """(alpha-2, English name) of an ISO 3166-1 alpha-2 or alpha-3 code."""
    import pycountry

    v = value.strip().upper()
    found = pycountry.countries.get(alpha_3=v) if len(v) == 3 else pycountry.countries.get(alpha_2=v)
    if found is None:
        raise InvalidParameter(f"unknown country {value!r}: give an ISO 3166-1 alpha-3 (or alpha-2) code")
    return found.alpha_2, found.name


def metric_epsg(value: str) -> int:
    """The EPSG code of a projected CRS in metres (analyses measure distances and areas in it)."""
    try:
        crs = CRS.from_user_input(value.strip() if not value.strip().isdigit() else f"EPSG:{value.strip()}")
    except CRSError as exc:
        raise InvalidParameter(f"unknown CRS {value!r}: {exc}") from None
    epsg = crs.to_epsg()
    if epsg is None:
        raise InvalidParameter(f"{value!r} has no EPSG code")
    units = {a.unit_name for a in crs.axis_info}
    if not crs.is_projected or units - {"metre"}:
        raise InvalidParameter(f"EPSG:{epsg} ({crs.name}) is not a projected CRS in metres; analyses need one "
                               "(e.g. the region's UTM zone)")
    return epsg


def parse_admin_levels(text: str | None) -> dict[int, str] | None:
    if not text:
        return None
    out: dict[int, str] = {}
    for part in text.split(","):
        level, sep, name = part.partition("=")
        if not sep or not level.strip().isdigit() or not 0 <= int(level) <= 5 or not name.strip():
            raise InvalidParameter(f"admin levels look like '3=County,4=Township,5=Village', not {text!r}")
        out[int(level)] = name.strip()
    return out


REGION_ID = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")  # the region table's own check


def check_region_id(region_id: str) -> str:
    if not REGION_ID.fullmatch(region_id):
        raise InvalidParameter(f"region id {region_id!r} is not usable: give 2–63 lower-case letters, digits and "
                               "'-', starting with a letter or digit (e.g. georgia-us); the display name goes in "
                               "--name")
    return region_id


async def create_region(conn: asyncpg.Connection, spec: RegionSpec) -> dict[str, object]:
    check_region_id(spec.region_id)
    alpha2, country_name = country_alpha2(spec.country)
    epsg = metric_epsg(spec.crs)
    if spec.poverty_line is None:
        line, currency = IPL_PER_DAY_USD * 365, (spec.currency or "USD").upper()
        note = spec.poverty_line_note or IPL_NOTE
        if currency != "USD":
            raise InvalidParameter("the default poverty line is in USD; give --poverty-line in your currency")
    else:
        try:
            line = Decimal(spec.poverty_line)
        except InvalidOperation:
            raise InvalidParameter(f"--poverty-line {spec.poverty_line!r} is not a number") from None
        if not spec.currency:
            raise InvalidParameter("give --currency (ISO 4217, e.g. CNY) with --poverty-line")
        currency, note = spec.currency.upper(), spec.poverty_line_note
    if await conn.fetchval("SELECT count(*) FROM region WHERE region_id = $1", spec.region_id):
        raise Conflict(f"region {spec.region_id!r} exists (delete it first with `tpa region delete`)")
    metadata = {"country_name": country_name}
    if spec.admin_levels:
        metadata["admin_levels"] = {str(k): v for k, v in sorted(spec.admin_levels.items())}
    try:
        await conn.execute(
            "INSERT INTO region (region_id, name, country, code_system, analysis_crs, poverty_line, currency, "
            "poverty_line_note, default_year, description, attribution, metadata) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb)",
            spec.region_id, spec.name, alpha2, spec.code_system or "national codes", epsg, line, currency, note,
            spec.default_year, spec.description, spec.attribution, json.dumps(metadata, ensure_ascii=False))
    except asyncpg.CheckViolationError as exc:
        raise InvalidParameter(f"region refused: {exc.message}") from None
    return {"region_id": spec.region_id, "country": alpha2, "analysis_crs": epsg, "poverty_line": str(line),
            "currency": currency}


async def list_regions(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT r.region_id, r.name, r.country, r.analysis_crs, r.poverty_line, r.currency, "
        "(SELECT count(*) FROM admin_unit a WHERE a.region_id = r.region_id) AS units, "
        "(SELECT count(*) FROM village v WHERE v.region_id = r.region_id) AS villages, "
        "(SELECT count(*) FROM household h WHERE h.region_id = r.region_id) AS households "
        "FROM region r ORDER BY r.region_id")


async def delete_region(conn: asyncpg.Connection, region_id: str) -> None:
    status = await conn.execute("DELETE FROM region WHERE region_id = $1", region_id)
    if status.endswith(" 0"):
        raise NotFound(f"no region {region_id!r}")
