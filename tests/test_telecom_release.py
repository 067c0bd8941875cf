"""A telecom release end to end: synthetic events → `tpa telecom aggregate` → PostGIS → OGC collections."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h3
import pytest
import shapely
from tpa_testing import ThrowawayDatabase, client_for, fetch, settings_for, tpa_cli

from app.telecom.privacy import parent_int

ROOT = Path(__file__).resolve().parent.parent
K = 15


tpa = tpa_cli


@pytest.fixture(scope="module")
def released(tmp_path_factory, demo_template):
    tmp = tmp_path_factory.mktemp("telecom")
    with ThrowawayDatabase("telecom", template=demo_template) as db:
        tables_before = {r[0]: r[1] for r in fetch(db.name, "SELECT relname, n_live_tup FROM pg_stat_user_tables")}
        state = tmp / "state"
        for month, seed in (("2024-02", 1), ("2024-03", 2)):
            events = tmp / f"events-{month}.parquet"
            tpa(db, "telecom", "synthetic", str(events), "--period", month, "--devices", "4000", "--seed", str(seed))
            out = tpa(db, "telecom", "aggregate", str(events), "--region", "tieling-demo", "--period", month,
                      "--state-dir", str(state))
        yield db, tmp, out, tables_before


def test_only_aggregates_of_more_than_k_devices_are_published(released):
    db, _tmp, out, _before = released
    assert "released tieling-demo 2024-03" in out.stderr and "events/s" in out.stderr
    small = fetch(db.name, "SELECT count(*) FROM telecom_agg WHERE NOT suppressed AND n_subscribers <= $1", K)
    assert small[0][0] == 0
    assert fetch(db.name, "SELECT count(*) FROM telecom_od WHERE count <= $1", K)[0][0] == 0
    counts = dict(fetch(db.name, "SELECT indicator, count(*) FROM telecom_agg GROUP BY indicator"))
    assert counts["presence"] > 0 and counts["residents"] > 0 and counts["median_radius_of_gyration"] > 0
    assert counts["out_migration"] > 0  # the second month found the first month's homes in the state dir
    assert counts["service_share_clinic"] > 0
    # suppressed cells were rolled up: some published rows sit at coarser resolutions
    assert fetch(db.name, "SELECT count(*) FROM telecom_agg WHERE indicator = 'residents' AND h3_res < 8")[0][0] > 0


def test_nothing_device_level_reaches_the_database(released):
    db, tmp, _out, before = released
    cols = {r[0] for r in fetch(db.name, "SELECT DISTINCT column_name FROM information_schema.columns "
                                         "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')")}
    assert not cols & {"dev", "device_id", "device", "msisdn", "imsi"}
    after = {r[0] for r in fetch(db.name, "SELECT relname FROM pg_stat_user_tables")}
    assert after == set(before)  # no new tables: only rows in the aggregate tables
    # the device-level homes stay on the operator side, for the next period's out-migration
    assert (tmp / "state" / "tieling-demo" / "homes" / "duckdb" / "2024-03" / "home.parquet").exists()


def test_admin_units_cannot_be_differenced_against_published_cells(released):
    db, *_ = released
    units = {r["code"]: shapely.from_wkb(bytes(r["wkb"])) for r in fetch(
        db.name, "SELECT code, ST_AsBinary(geom) AS wkb FROM admin_unit WHERE region_id = 'tieling-demo' "
                 "AND level = 4 AND geom IS NOT NULL")}
    owner = {}
    for code, geom in units.items():
        for c in h3.geo_to_cells(geom, 8):
            owner.setdefault(h3.str_to_int(c), code)
    cells = fetch(db.name, "SELECT unit_id, h3_res, n_subscribers FROM telecom_agg WHERE indicator = 'residents' "
                           "AND unit_type = 'h3' AND period @> DATE '2024-03-01'")
    # what an attacker can subtract: published cells whose base cells all lie in one unit
    inside: dict[str, int] = {}
    for unit_id, res, n in cells:
        children = h3.cell_to_children(unit_id, 8) if res < 8 else [unit_id]
        admins = {owner[h3.str_to_int(c)] for c in children if h3.str_to_int(c) in owner}
        if len(admins) == 1:
            (a,) = admins
            inside[a] = inside.get(a, 0) + n
    rows = fetch(db.name, "SELECT unit_id, n_subscribers, suppressed FROM telecom_agg WHERE indicator = 'residents' "
                          "AND unit_type = 'admin' AND period @> DATE '2024-03-01'")
    assert rows and any(r["suppressed"] for r in rows) and any(not r["suppressed"] for r in rows)
    for code, n, suppressed in rows:
        if suppressed:
            assert n is None
            continue
        residual = n - inside.get(code, 0)
        assert residual == 0 or residual > K, (code, n, residual)
    assert parent_int(h3.str_to_int(cells[0][0]), 0) == h3.str_to_int(h3.cell_to_parent(cells[0][0], 0))


async def test_collections_serve_the_release(released):
    db, *_ = released
    async with client_for(settings_for(db.url)) as api:
        res = (await api.get("/collections/telecom-residents/items",
                             params={"limit": 2000, "datetime": "2024-03-15"})).json()
        assert res["numberMatched"] > 0
        for f in res["features"]:
            assert f["properties"]["n_devices"] > K and f["properties"]["period"] == "2024-03"
            assert f["geometry"]["type"] == "Polygon" and len(f["geometry"]["coordinates"][0]) == 7
        pres = (await api.get("/collections/telecom-presence/items", params={"filter": "hour = 22", "limit": 5}))
        assert pres.status_code == 200 and all(f["properties"]["hour"] == 22 for f in pres.json()["features"])
        od = (await api.get("/collections/telecom-od/items", params={"limit": 5})).json()
        assert od["numberMatched"] > 0 and od["features"][0]["geometry"]["type"] == "LineString"
        adm = (await api.get("/collections/telecom-admin-indicators/items",
                             params={"filter": "suppressed = true", "limit": 5})).json()
        assert adm["numberMatched"] > 0 and all(f["properties"]["n_devices"] is None for f in adm["features"])
        # the commuting flows between administrative units, with the units' names
        pairs = fetch(db.name, "SELECT count(*) FROM telecom_od WHERE unit_type = 'admin' AND NOT suppressed "
                               "AND period @> DATE '2024-03-01'")[0][0]
        aod = (await api.get("/collections/telecom-admin-od/items",
                             params={"datetime": "2024-03-15", "limit": 1000})).json()
        assert aod["numberMatched"] == pairs > 0
        for f in aod["features"]:
            p = f["properties"]
            assert p["n_devices"] > K and p["origin_name"] and p["dest_name"] and p["period"] == "2024-03"
            assert f["geometry"]["type"] == "LineString"


def test_release_summary_says_what_stayed_withheld(released):
    """Devices with a home are either counted in a published residents cell (at some resolution) or left in a group
    of k or fewer at the floor resolution: the summary's withheld count is the rest."""
    import re

    db, _tmp, out, _before = released
    text = " ".join(out.stderr.split())
    homes = int(re.search(r"([\d,]+) with a home", text).group(1).replace(",", ""))
    groups, devices = (int(x.replace(",", "")) for x in re.search(
        r"residents ([\d,]+) groups \(([\d,]+) devices\)", text).groups())
    published = fetch(db.name, "SELECT sum(n_subscribers) FROM telecom_agg WHERE indicator = 'residents' "
                               "AND unit_type = 'h3' AND period @> DATE '2024-03-01'")[0][0]
    assert devices == homes - published > 0 and 0 < groups <= devices
    assert "at H3 resolution 5" in text


def test_release_options_that_cannot_work_are_refused(released, tmp_path):
    db, tmp, *_ = released
    before = fetch(db.name, "SELECT count(*) FROM telecom_release")[0][0]
    many = tpa(db, "telecom", "aggregate", str(tmp / "events-2024-03.parquet"), "--region", "tieling-demo",
               "--period", "2024-03", "--min-nights", "40", check=False)
    text = " ".join(many.stderr.split())
    assert many.returncode == 2 and "no device has a home" in text and "lower --min-nights" in text
    most = int(text.split("(at most ")[1].split()[0])
    assert 25 <= most < 40  # the nights of March (a night counts to the day it starts on)
    assert fetch(db.name, "SELECT count(*) FROM telecom_release")[0][0] == before  # nothing written
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(tmp / "events-2024-03.parquet", mixed / "a.parquet")
    (mixed / "b.csv").write_text("device_id,ts,lon,lat\n")
    refused = tpa(db, "telecom", "aggregate", str(mixed), "--region", "tieling-demo", "--period", "2024-03",
                  check=False)
    assert refused.returncode == 2 and "not a mixture (CSV, Parquet)" in " ".join(refused.stderr.split())


async def test_a_directory_of_parquet_files_and_a_running_service_that_follows(released, tmp_path):
    """Events exported as a directory of Parquet files (one per day, as operators partition them) are read as one
    release; a service already running offers the new period in its collections' extents without a restart."""
    import asyncio

    import pyarrow.parquet as pq

    db, *_ = released
    whole = tmp_path / "april.parquet"
    tpa(db, "telecom", "synthetic", str(whole), "--period", "2024-04", "--devices", "3000", "--seed", "4")
    table = pq.read_table(whole)
    days = tmp_path / "events"
    half = table.num_rows // 2
    for name, part in (("day=a", table.slice(0, half)), ("day=b", table.slice(half))):
        (days / name).mkdir(parents=True)
        pq.write_table(part, days / name / "part-0.parquet")
    def events_read(out: subprocess.CompletedProcess) -> str:
        return " ".join(out.stderr.split()).split("released tieling-demo 2024-04: ")[1].split(" events")[0]

    async with client_for(settings_for(db.url)) as api:
        before = (await api.get("/collections/telecom-residents")).json()["extent"]["temporal"]["interval"][0]
        assert before[1] < "2024-05-01"
        out = tpa(db, "telecom", "aggregate", str(days), "--region", "tieling-demo", "--period", "2024-04")
        residents = fetch(db.name, "SELECT unit_id, n_subscribers FROM telecom_agg WHERE indicator = 'residents' "
                                   "AND period @> DATE '2024-04-01' ORDER BY 1")
        single = tpa(db, "telecom", "aggregate", str(whole), "--region", "tieling-demo", "--period", "2024-04")
        assert events_read(out) == events_read(single)  # the same events, the same release
        assert residents == fetch(db.name, "SELECT unit_id, n_subscribers FROM telecom_agg WHERE indicator = "
                                           "'residents' AND period @> DATE '2024-04-01' ORDER BY 1")
        await asyncio.sleep(1.2)  # a process checks the table versions at most once a second
        after = (await api.get("/collections/telecom-residents")).json()["extent"]["temporal"]["interval"][0]
        assert after[1] == "2024-05-01T00:00:00Z"


def test_daily_partials_are_read_once_and_survive_a_crash(released):
    db, tmp, *_ = released
    root = next((tmp / "state" / "tieling-demo" / "partials").glob("duckdb-res8-*"))
    days = sorted(p.name for p in root.glob("day=*"))
    assert len(days) >= 59  # February and March (and the mornings after their last nights)
    before = fetch(db.name, "SELECT indicator, unit_id, coalesce(hour, -1), value FROM telecom_agg "
                            "WHERE period @> DATE '2024-03-01' ORDER BY 1, 2, 3")
    # a crashed ingestion left an unlisted batch behind: it is discarded, not counted
    stray = root / "_incoming" / "deadbeef" / days[40]
    stray.mkdir(parents=True)
    shutil.copy(next((root / days[40]).glob("*.parquet")), stray / "copy.parquet")
    out = tpa(db, "telecom", "aggregate", str(tmp / "events-2024-03.parquet"), "--region", "tieling-demo",
              "--period", "2024-03", "--state-dir", str(tmp / "state"))
    assert "0 file(s) read, 1 already ingested" in out.stderr
    assert not (root / "_incoming" / "deadbeef").exists()
    after = fetch(db.name, "SELECT indicator, unit_id, coalesce(hour, -1), value FROM telecom_agg "
                           "WHERE period @> DATE '2024-03-01' ORDER BY 1, 2, 3")
    assert [tuple(r)[:3] for r in after] == [tuple(r)[:3] for r in before]
    # parallel float sums may differ in the last bits between runs
    assert all((a[3] is None and b[3] is None) or abs(a[3] - b[3]) <= 1e-9 * max(1.0, abs(b[3]))
               for a, b in zip(after, before, strict=True))


def test_release_replaces_the_period_and_records_epsilon(released):
    db, tmp, *_ = released
    before = fetch(db.name, "SELECT count(*) FROM telecom_agg WHERE period @> DATE '2024-02-01'")[0][0]
    out = tpa(db, "telecom", "aggregate", str(tmp / "events-2024-02.parquet"), "--region", "tieling-demo",
              "--period", "2024-02", "--epsilon", "0.5")
    assert "ε spent 1.5; total for 2024-02: 1.5" in out.stderr
    again = tpa(db, "telecom", "aggregate", str(tmp / "events-2024-02.parquet"), "--region", "tieling-demo",
                "--period", "2024-02", "--epsilon", "1")
    assert "total for 2024-02: 4.5" in again.stderr
    after = fetch(db.name, "SELECT count(*) FROM telecom_agg WHERE period @> DATE '2024-02-01'")[0][0]
    assert 0 < after <= before * 1.1  # replaced, not appended
    assert fetch(db.name, "SELECT count(*) FROM telecom_release WHERE period @> DATE '2024-02-01'")[0][0] == 3


def test_bad_parameters_are_refused(released):
    db, tmp, *_ = released
    ev = str(tmp / "events-2024-02.parquet")
    low = tpa(db, "telecom", "aggregate", ev, "--region", "tieling-demo", "--period", "2024-02", "--k", "5",
              check=False)
    assert low.returncode == 2 and "at least 15" in low.stderr
    dst = tpa(db, "telecom", "aggregate", ev, "--region", "tieling-demo", "--period", "2024-03", "--tz",
              "Europe/Berlin", check=False)
    assert dst.returncode == 2 and "daylight saving" in dst.stderr


@pytest.mark.long  # 85 s: Spark's start and a whole month twice; the Spark SQL itself is in test_telecom_spark
def test_spark_engine_releases_the_same_aggregates(released):
    """The whole release on Spark equals the DuckDB release (floating statistics to 1e-9)."""
    pytest.importorskip("pyspark")
    db, tmp, *_ = released
    query = ("SELECT unit_type, unit_id, coalesce(hour, -1) AS hour, indicator, value, n_subscribers, suppressed "
             "FROM telecom_agg WHERE period @> DATE '2024-03-01' AND indicator <> 'out_migration'")
    od_query = "SELECT unit_type, origin_unit, dest_unit, count FROM telecom_od WHERE period @> DATE '2024-03-01'"

    def snapshot():
        rows = {(r[0], r[1], r[2], r[3]): (r[4], r[5], r[6]) for r in fetch(db.name, query)}
        return rows, sorted(tuple(r) for r in fetch(db.name, od_query))

    duck, duck_od = snapshot()
    events = str(tmp / "events-2024-03.parquet")
    # both months' files: the February file's last night ends on 1 March, and the DuckDB partials hold it too
    tpa(db, "telecom", "aggregate", str(tmp / "events-2024-02.parquet"), events, "--region", "tieling-demo",
        "--period", "2024-03", "--engine", "spark", "--memory-limit", "2GB", "--state-dir", str(tmp / "spark-state"))
    spark, spark_od = snapshot()
    try:
        assert spark.keys() == duck.keys() and spark_od == duck_od
        for key, (v, n, s) in duck.items():
            v2, n2, s2 = spark[key]
            assert (n2, s2) == (n, s), key
            assert (v is None and v2 is None) or abs(v2 - v) <= 1e-9 * max(1.0, abs(v)), key
    finally:  # put the DuckDB release (with out-migration) back for the other tests
        tpa(db, "telecom", "aggregate", events, "--region", "tieling-demo", "--period", "2024-03", "--state-dir",
            str(tmp / "state"))


def test_killed_release_leaves_the_previous_one_whole(released):
    """A release killed half-way — old rows deleted, new ones copied, not yet committed — leaves the published
    release exactly as it was: the write is one transaction. A trigger holds the release inside its write (on
    its last statement) long enough to kill it there."""
    import signal
    import time

    db, tmp, *_ = released
    snapshot = ("SELECT count(*), coalesce(sum(coalesce(value, 0)), 0) FROM telecom_agg "
                "WHERE period @> DATE '2024-03-01'")
    before = tuple(fetch(db.name, snapshot)[0])
    releases = fetch(db.name, "SELECT count(*) FROM telecom_release")[0][0]
    assert before[0] > 0
    fetch(db.name, "CREATE FUNCTION test_hold() RETURNS trigger LANGUAGE plpgsql AS "
                   "$$ BEGIN PERFORM pg_sleep(8); RETURN NEW; END $$")
    fetch(db.name, "CREATE TRIGGER test_hold BEFORE INSERT ON telecom_release FOR EACH ROW EXECUTE FUNCTION "
                   "test_hold()")
    try:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "telecom", "aggregate",
                                 str(tmp / "events-2024-03.parquet"), "--region", "tieling-demo", "--period",
                                 "2024-03"], env={**os.environ, "DATABASE_URL": db.url}, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while not fetch(db.name, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND "
                                     "wait_event = 'PgSleep' AND query LIKE 'INSERT INTO telecom_release%'",
                            db.name)[0][0]:
                assert proc.poll() is None and time.monotonic() < deadline, "the release did not get there"
                time.sleep(0.1)
            proc.send_signal(signal.SIGKILL)  # half-way: its new rows are written in its open transaction
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
        deadline = time.monotonic() + 60  # the server notices the dead client and rolls back
        while fetch(db.name, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE "
                             "'INSERT INTO telecom_release%' AND state <> 'idle'", db.name)[0][0]:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        fetch(db.name, "DROP TRIGGER test_hold ON telecom_release")
        fetch(db.name, "DROP FUNCTION test_hold()")
    assert tuple(fetch(db.name, snapshot)[0]) == before
    assert fetch(db.name, "SELECT count(*) FROM telecom_release")[0][0] == releases
