"""A province-sized (or national) synthetic region from the demo: ``tpa demo load --scale N --households H``.

The demo generator draws one prefecture (Tieling: 7 counties, 106 townships, 1,200 villages, 25,000 registered
households) household by household in Python, about 1 ms a household with its members and ten-year history; five
million households drawn that way would take hours and hold gigabytes. Here the generated prefecture is the
*template*, and the database multiplies it (set-based ``INSERT … SELECT``, nothing held in Python):

* ``N`` prefectures: the template's counties, townships and villages copied ``N - 1`` times onto a grid next to the
  original, each copy under new codes (``2112…`` becomes ``21kk…``, prefecture codes 2120–2199 of Liaoning, then
  synthetic provinces 90, 91, … that no real code uses), so codes stay unique and the hierarchy stays whole;
* ``H`` households: each template household appears ``m = round(H / (N × 25,000))`` times in its village of each
  copy, the copies displaced up to ~250 m around it and with new pseudonymous ids (SHA-256 of the template's id,
  the copy and the replica), with the template's members (new ids) and attributes;
* the copies' projects and facilities (one per template row and prefecture).

What repeats is the template's distribution: every copy of a village holds the same mix of households, so analyses
give the demo's shares at N times the rows. The registry's ten-year history (``household_history``) is the
template's only, so the region's default year becomes the current registry's: the scale set is for measuring the
current registry's paths (features, tiles, counts, imports, needs and MPI per county and province), not the panel.
Rows are inserted copy by copy, village by village, as a registry loaded per county would be; each copy is one
statement with a progress step, all in the caller's transaction (all or nothing).

Measured (``bench/results-scale.md``): ``--scale 17 --households 5000000`` makes a database of 11.1 GB (about
2.2 GB per million households with their members and indexes) in about 31 minutes on two cores. The national size
(≈ 29.5 million households in ≈ 128,000 villages: ``--scale 107 --households 29500000``) needs about 65 GB of disk
and some three hours.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

TEMPLATE_PREFIX = "2112"  # the demo prefecture's code prefix (Tieling 211200)
TEMPLATE_PROVINCE = "210000"
MAX_COPIES = 1 + 80 + 10 * 80  # Liaoning's free prefecture codes 2120-2199, then ten synthetic provinces 90-99


@dataclass(frozen=True)
class Copy:
    k: int  # 0 is the template itself
    prefix: str  # four digits: province and prefecture
    province: str  # the level-1 code the copy's prefecture hangs from
    dx: float
    dy: float


def copies(prefectures: int, width: float, height: float) -> list[Copy]:
    """The template (k = 0) and its copies on a grid of about square shape, a little apart."""
    if not 1 <= prefectures <= MAX_COPIES:
        raise ValueError(f"--scale must be between 1 and {MAX_COPIES} prefectures")
    cols = math.ceil(math.sqrt(prefectures))
    out = []
    for k in range(prefectures):
        if k == 0:
            prefix, province = TEMPLATE_PREFIX, TEMPLATE_PROVINCE
        elif k < 81:
            prefix, province = f"21{19 + k:02d}", TEMPLATE_PROVINCE
        else:
            j, i = divmod(k - 81, 80)
            prefix, province = f"{90 + j}{20 + i:02d}", f"{90 + j}0000"
        row, col = divmod(k, cols)
        out.append(Copy(k, prefix, province, col * width * 1.03, row * height * 1.03))
    return out


def replicas(households: int, prefectures: int, template_households: int) -> int:
    """How many times each template household appears in each prefecture (at least once)."""
    return max(1, round(households / (prefectures * template_households)))


def _new_id(expr: str, k: str, r: str) -> str:
    """A new 64-hex id from a template id, the copy and the replica (the template keeps its ids)."""
    return (f"CASE WHEN {k} = 0 AND {r} = 0 THEN {expr} ELSE "
            f"encode(sha256(convert_to({expr} || ':' || {k} || ':' || {r}, 'UTF8')), 'hex') END")


def _code(expr: str) -> str:
    """The copy's code ($1 is its four-digit prefix) of a template code."""
    return f"CASE WHEN {expr} LIKE '{TEMPLATE_PREFIX}%' THEN $1::text || substr({expr}, 5) ELSE {expr} END"


def _cols(prefix: str, names: str) -> str:
    return ", ".join(f"{prefix}.{c.strip()}" for c in names.split(","))


T = f"'{TEMPLATE_PREFIX}%'"  # codes of the template prefecture

# $1 prefix, $2 province, $3 region, $4 copy, $5 dx, $6 dy, $7 level
_ADMIN = f"""
INSERT INTO admin_unit (code, region_id, level, parent_code, name, name_en, geom, properties, valid_from, valid_to,
                        source)
SELECT {_code('a.code')}, a.region_id, a.level,
       CASE WHEN a.level = 2 THEN $2::text ELSE {_code('a.parent_code')} END,
       CASE WHEN a.level = 2 THEN '示例地级市 ' || $4::int ELSE a.name END,
       CASE WHEN a.level = 2 THEN 'Synthetic prefecture ' || $4::int ELSE a.name_en END,
       ST_Translate(a.geom, $5::float8, $6::float8), a.properties || jsonb_build_object('synthetic_copy_of', a.code),
       a.valid_from, a.valid_to, a.source
FROM admin_unit a WHERE a.region_id = $3::text AND a.level = $7::int AND a.code LIKE {T} ORDER BY a.code
"""

_VILLAGE_COLS = ("is_poverty_village, households, population, labour_force, migrant_workers, arable_mu, "
                 "km_to_township, paved_road, bus_service, grid_power, broadband, clinic, licensed_doctors, "
                 "collective_income, unsafe_water_households")
# $1 prefix, $2 region, $3 dx, $4 dy
_VILLAGE = f"""
INSERT INTO village (code, region_id, geom_point, valid_from, valid_to, source, {_VILLAGE_COLS})
SELECT {_code('v.code')}, v.region_id, ST_Translate(v.geom_point, $3::float8, $4::float8), v.valid_from,
       v.valid_to, v.source, {_cols('v', _VILLAGE_COLS)}
FROM village v WHERE v.region_id = $2::text AND v.code LIKE {T} ORDER BY v.code
"""

_HH_COLS = ("id_standard, hh_type, main_cause, other_causes, status, year_identified, year_exited, size, income_wage, "
            "income_business, income_property, income_transfer, expense_production, net_income_pc, house_area_m2, "
            "house_structure, house_safety_grade, water_safe, water_difficulty, toilet, cooking_fuel, electricity, "
            "access_road, km_to_main_road, arable_mu, irrigated_mu, forest_mu, coop_member, microcredit, "
            "food_insecure, clothing_insecure, family_doctor, reported_needs, valid_from, valid_to, source, "
            "expense_medical, expense_education, loss_disaster")
# $1 prefix, $2 region, $3 copy, $4 dx, $5 dy, $6 replicas. Replica r > 0 sits up to ±0.003° (≈ 250 m) from its
# template household, by bytes of its own id (deterministic).
_HOUSEHOLD = f"""
INSERT INTO household (hh_id, region_id, village_code, geom, {_HH_COLS})
SELECT n.id, h.region_id, {_code('h.village_code')},
       ST_Translate(h.geom, $4::float8 + CASE WHEN r = 0 THEN 0 ELSE (get_byte(n.d, 0) / 255.0 - 0.5) * 0.006 END,
                            $5::float8 + CASE WHEN r = 0 THEN 0 ELSE (get_byte(n.d, 1) / 255.0 - 0.5) * 0.006 END),
       {_cols('h', _HH_COLS)}
FROM household h CROSS JOIN generate_series(0, $6::int - 1) r
CROSS JOIN LATERAL (SELECT {_new_id('h.hh_id', '$3::int', 'r')} AS id,
                           sha256(convert_to(h.hh_id || ':' || $3::int || ':' || r, 'UTF8')) AS d) n
WHERE h.region_id = $2::text AND NOT ($3::int = 0 AND r = 0) AND h.village_code LIKE {T}
ORDER BY h.village_code, h.hh_id, r
"""

_PERSON_COLS = ("relation, sex, birth_year, ethnicity, education, in_school, health, labour, migrant_months, "
                "med_insured, pension_insured, disability_grade, valid_from, valid_to, source")
# $1 region, $2 copy, $3 replicas
_PERSON = f"""
INSERT INTO person (person_id, hh_id, region_id, {_PERSON_COLS})
SELECT {_new_id('p.person_id', '$2::int', 'r')}, {_new_id('p.hh_id', '$2::int', 'r')}, p.region_id,
       {_cols('p', _PERSON_COLS)}
FROM person p JOIN household h ON h.hh_id = p.hh_id CROSS JOIN generate_series(0, $3::int - 1) r
WHERE p.region_id = $1::text AND NOT ($2::int = 0 AND r = 0) AND h.village_code LIKE {T}
ORDER BY h.village_code, p.hh_id, r
"""

# $1 prefix, $2 region, $3 dx, $4 dy. Template ids have no '.'; a copy's id is the template's + '.' + its prefix.
_FACILITY = f"""
INSERT INTO facility (fac_id, region_id, class, name, capacity, admin_code, geom, valid_from, valid_to, source)
SELECT f.fac_id || '.' || $1::text, f.region_id, f.class, f.name, f.capacity, {_code('f.admin_code')},
       ST_Translate(f.geom, $3::float8, $4::float8), f.valid_from, f.valid_to, f.source
FROM facility f WHERE f.region_id = $2::text AND f.fac_id NOT LIKE '%.%'
"""

_PROJECT_COLS = ("name, type, subtype, start_date, end_date, status, budget_total, budget_by_level, capacity, "
                 "service_radius_km, addresses_needs, valid_from, valid_to, source")
_PROJECT = f"""
INSERT INTO project (project_id, region_id, geom, admin_code, {_PROJECT_COLS})
SELECT p.project_id || '.' || $1::text, p.region_id, ST_Translate(p.geom, $3::float8, $4::float8),
       {_code('p.admin_code')}, {_cols('p', _PROJECT_COLS)}
FROM project p WHERE p.region_id = $2::text AND p.project_id NOT LIKE '%.%'
"""


@dataclass(frozen=True)
class ScaleReport:
    prefectures: int
    replicas: int
    counts: dict[str, int]


async def scale_region(
    conn: asyncpg.Connection, region_id: str, prefectures: int, households: int,
    progress: Callable[[str, int, int], None] | None = None,
) -> ScaleReport:
    """Multiply the loaded template region in place (inside the caller's transaction). ``progress(step, done,
    total)`` is called after each statement."""
    report = progress or (lambda step, done, total: None)
    await conn.execute("SET LOCAL statement_timeout = 0")  # one statement copies a prefecture: minutes at scale
    template = await conn.fetchval("SELECT count(*) FROM household WHERE region_id = $1 AND village_code LIKE $2",
                                   region_id, TEMPLATE_PREFIX + "%")
    if not template:
        raise ValueError(f"region {region_id} has no households of the template prefecture {TEMPLATE_PREFIX}00")
    box = await conn.fetchrow("SELECT ST_XMax(e) - ST_XMin(e) AS w, ST_YMax(e) - ST_YMin(e) AS h FROM "
                              "(SELECT ST_Extent(geom) AS e FROM admin_unit WHERE code = $1) s",
                              TEMPLATE_PREFIX + "00")
    plan = copies(prefectures, float(box["w"]), float(box["h"]))
    m = replicas(households, prefectures, int(template))
    for prov in sorted({c.province for c in plan} - {TEMPLATE_PROVINCE}):
        await conn.execute(
            "INSERT INTO admin_unit (code, region_id, level, parent_code, name, name_en, geom, properties, "
            "valid_from, valid_to, source) SELECT $1, region_id, 1, parent_code, '示例省 ' || left($1, 2), "
            "'Synthetic province ' || left($1, 2), NULL, '{\"synthetic\": true}'::jsonb, valid_from, valid_to, "
            "'synthetic (tpa demo load --scale)' FROM admin_unit WHERE code = $2", prov, TEMPLATE_PROVINCE)
    steps = len(plan) * 9
    done = 0

    def step(c: Copy, name: str) -> None:
        nonlocal done
        done += 1
        report(f"prefecture {c.k + 1}/{len(plan)}: {name}", done, steps)

    for c in plan[1:] + plan[:1]:  # the template's own replicas last: the copies read the template's rows only
        if c.k > 0:
            for level in (2, 3, 4, 5):
                await conn.execute(_ADMIN, c.prefix, c.province, region_id, c.k, c.dx, c.dy, level)
                step(c, f"admin level {level}")
            await conn.execute(_VILLAGE, c.prefix, region_id, c.dx, c.dy)
            step(c, "villages")
            await conn.execute(_FACILITY, c.prefix, region_id, c.dx, c.dy)
            step(c, "facilities")
            await conn.execute(_PROJECT, c.prefix, region_id, c.dx, c.dy)
            step(c, "projects")
        else:
            done += 7
        if c.k > 0 or m > 1:
            await conn.execute(_HOUSEHOLD, c.prefix, region_id, c.k, c.dx, c.dy, m)
            step(c, "households")
            await conn.execute(_PERSON, region_id, c.k, m)
            step(c, "members")
    # the copies have the current registry only (not the template's history): analyses read its year by default
    await conn.execute("UPDATE region SET default_year = (SELECT extract(year FROM max(valid_from))::int "
                       "FROM household WHERE region_id = $1) WHERE region_id = $1", region_id)
    await conn.execute(
        "UPDATE region SET name = $2, metadata = metadata || jsonb_build_object('scale', jsonb_build_object("
        "'prefectures', $3::int, 'replicas', $4::int, 'template', 'the demo prefecture')) WHERE region_id = $1",
        region_id, f"Tieling (demo) ×{prefectures} prefectures, {m}× households" if prefectures > 1 or m > 1
        else "Tieling (demo)", prefectures, m)
    counts = {}
    for table in ("admin_unit", "village", "household", "person", "facility", "project"):
        counts[table] = int(await conn.fetchval(f"SELECT count(*) FROM {table} WHERE region_id = $1", region_id))
    return ScaleReport(prefectures, m, counts)
