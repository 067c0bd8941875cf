"""The demo region: deterministic by seed, faithful to the county facts, loadable all-or-nothing."""

from __future__ import annotations

from collections import defaultdict

import pytest
import shapely
from sqlalchemy import text

from app.demo.generate import REGION_ID, generate, load_facts
from app.errors import ConstraintViolation
from app.repositories import regions
from app.services.demo import combine, load_data, load_demo

SMALL = {"n_villages": 80, "n_households": 900, "n_projects": 20, "n_facilities": 300}


@pytest.fixture(scope="module")
def small_a():
    return generate(7, **SMALL)


def test_same_seed_same_checksum(small_a):
    assert generate(7, **SMALL).checksum() == small_a.checksum()


def test_other_seed_other_checksum(small_a):
    assert generate(8, **SMALL).checksum() != small_a.checksum()


def test_real_facts_are_kept(small_a):
    counties, towns = load_facts()
    assert len(counties) == 7 and len(towns) == 106
    admin = small_a.tables["admin_unit"]
    by_level = defaultdict(list)
    for row in admin.rows:
        by_level[row[2]].append(row)
    names = {r[0]: r[4] for r in by_level[3]}
    assert names == {
        "211202": "银州区", "211204": "清河区", "211221": "铁岭县", "211223": "西丰县", "211224": "昌图县",
        "211281": "调兵山市", "211282": "开原市",
    }
    assert all("approximate" in r[7]["geometry_quality"] for r in by_level[3])
    assert {r[0] for r in by_level[4]} == {t.code for t in towns}
    # every township's parent is its real county
    county_of = {t.code: t.county for t in towns}
    assert all(r[3] == county_of[r[0]] for r in by_level[4])
    # the census figures travel with the county
    changtu = next(r for r in by_level[3] if r[0] == "211224")
    assert changtu[7]["census2020"]["POPU"] == 711818.0


def test_township_cells_tile_their_county(small_a):
    admin = small_a.tables["admin_unit"]
    geoms = {r[0]: r[6] for r in admin.rows}
    for county in ("211224", "211223"):
        towns = [r[6] for r in admin.rows if r[2] == 4 and r[3] == county]
        union = shapely.union_all(towns)
        assert union.symmetric_difference(geoms[county]).area / geoms[county].area < 1e-6


@pytest.fixture(scope="module")
def full():
    return generate(42)


def test_full_size(full):
    counts = full.counts()
    assert counts["village"] == 1200
    assert counts["household"] == 25_000
    assert counts["project"] == 300
    assert counts["facility"] == 2000
    assert 2.0 < counts["person"] / counts["household"] < 3.0
    # the registry of 2025 (after 2020 nobody is "poor": exited households, some of them monitored) and its
    # history from 2016, with every status
    assert {r[8] for r in full.tables["household"].rows} == {"exited", "monitored"}
    assert {r[8] for r in full.tables["household_history"].rows} == {"poor", "exited", "monitored", "returned"}
    vf = full.tables["household_history"].columns.index("valid_from")
    assert {r[vf].year for r in full.tables["household_history"].rows} == set(range(2016, 2025))
    types = {r[3] for r in full.tables["project"].rows}
    assert len(types) == 18  # every DOMAIN §2.3 type
    classes = {r[2] for r in full.tables["facility"].rows}
    assert {"school_primary", "school_junior", "clinic", "hospital", "market", "township_government"} <= classes


def test_needs_follow_county_indicators(full):
    """Less piped water → more water needs; more agriculture → more income (industry/job) needs (in 2016, before
    most households' water was made safe)."""
    counties, _ = load_facts()
    ind = {c.adcode: c.indicators for c in counties}
    cols = full.tables["household"].columns
    vi, ni, yi = cols.index("village_code"), cols.index("reported_needs"), cols.index("valid_from")
    tally = defaultdict(lambda: [0, 0, 0])
    for r in (r for r in full.tables["household_history"].rows if r[yi].year == 2016):
        t = tally[r[vi][:6]]
        t[0] += 1
        t[1] += "L_WATER" in r[ni]
        t[2] += "P_INDUSTRY" in r[ni] or "P_JOB" in r[ni]
    rural = [c for c in tally if tally[c][0] >= 800]  # counties with enough households to compare
    water = {c: tally[c][1] / tally[c][0] for c in rural}
    low_piped = min(rural, key=lambda c: ind[c]["HOUS_SAMP_WATR"])  # Changtu, 57 % piped
    high_piped = max(rural, key=lambda c: ind[c]["HOUS_SAMP_WATR"])  # Tieling County, 81 %
    assert water[low_piped] > water[high_piped] + 0.05
    # households concentrate where agriculture dominates: Changtu (74 % in agriculture) has the most
    assert max(tally, key=lambda c: tally[c][0]) == "211224"


async def test_load_is_deterministic_and_complete(sessionmaker):
    r1 = await load_demo(sessionmaker, 5, **SMALL)
    r2 = await load_demo(sessionmaker, 5, **SMALL)
    assert r1.database_checksum == r2.database_checksum
    assert r1.generator_checksum == r2.generator_checksum
    r3 = await load_demo(sessionmaker, 6, **SMALL)
    assert r3.database_checksum != r1.database_checksum
    async with sessionmaker() as s:
        fp = await regions.region_fingerprint(s, REGION_ID)
    assert {k: v[0] for k, v in fp.items()} == r3.counts


async def test_failed_load_leaves_previous_data(sessionmaker):
    good = await load_demo(sessionmaker, 11, **SMALL)
    bad = generate(12, **SMALL)
    # an orphan household (unknown village) makes the load fail half way through
    hh = bad.tables["household"]
    row = list(hh.rows[-1])
    row[hh.columns.index("village_code")] = "999999999999"
    hh.rows[-1] = tuple(row)
    with pytest.raises(ConstraintViolation) as info:
        async with sessionmaker() as session, session.begin():
            await load_data(session, bad)
    assert info.value.extra["constraint"] == "household_village_code_fkey"
    async with sessionmaker() as s:
        assert combine(await regions.region_fingerprint(s, REGION_ID)) == good.database_checksum


async def test_full_demo_in_database(sessionmaker, full):
    async with sessionmaker() as session, session.begin():
        await load_data(session, full)
    async with sessionmaker() as s:
        counts = dict((await s.execute(text(
            "SELECT 'hh', count(*) FROM household WHERE region_id = :r UNION ALL "
            "SELECT 'poor', count(*) FROM household_history WHERE region_id = :r AND status = 'poor' "
            "  AND valid_from = '2020-01-01' UNION ALL "
            "SELECT 'villages', count(*) FROM admin_unit WHERE region_id = :r AND level = 5 UNION ALL "
            "SELECT 'outside', count(*) FROM household h JOIN admin_unit v ON v.code = h.village_code "
            "  WHERE NOT ST_Intersects(h.geom, v.geom) UNION ALL "
            "SELECT 'village_pt_outside', count(*) FROM village p JOIN admin_unit a ON a.code = p.code "
            "  WHERE NOT ST_Intersects(p.geom_point, a.geom)"
        ), {"r": REGION_ID})).all())
    assert counts["hh"] == 25_000 and counts["villages"] == 1200
    assert 0.05 < counts["poor"] / counts["hh"] < 0.2  # the last to exit, in 2020
    assert counts["outside"] == 0  # every household point lies in its own village
    assert counts["village_pt_outside"] == 0
