"""Telecom indicator definitions on hand-checkable cases (DuckDB engine, portable SQL)."""

from __future__ import annotations

import datetime as dt
import math

import h3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.errors import InvalidParameter
from app.telecom import engine

SH = dt.timedelta(hours=8)  # Asia/Shanghai, no daylight saving time
A = (42.2900, 123.8400)
B = (42.3500, 123.9500)
C = (42.3100, 123.7000)
RES = 8


def cell(p: tuple[float, float]) -> int:
    return h3.str_to_int(h3.latlng_to_cell(p[0], p[1], RES))


def local(y, m, d, hh, mm=0) -> dt.datetime:
    """A UTC timestamp for the given Shanghai local time."""
    return dt.datetime(y, m, d, hh, mm) - SH


def run(tmp_path, events, *, min_nights=10, period="2024-03", tz="Asia/Shanghai"):
    t = pa.table({"device_id": [e[0] for e in events], "ts": [e[1] for e in events],
                  "lat": [e[2][0] for e in events], "lon": [e[2][1] for e in events]})
    path = tmp_path / "events.parquet"
    pq.write_table(t, path)
    p = engine.Period.month(period)
    con = engine.connect(memory_limit="1GB")
    engine.load_events(con, [path], res=RES, offset_s=engine.fixed_offset_seconds(tz, p), period=p)
    out = engine.run_definitions(con, min_nights=min_nights)
    home = dict(con.execute("SELECT dev, home_cell FROM home").fetchall())
    day = dict(con.execute("SELECT dev, day_cell FROM day").fetchall())
    return out, home, day, con


def dev_id(con, name: str) -> int:
    return con.execute("SELECT CAST(hash(CAST(? AS VARCHAR)) >> 1 AS BIGINT)", [name]).fetchall()[0][0]


def nights(device, place, n, start_day=1, hour=23):
    return [(device, local(2024, 3, start_day + i, hour), place) for i in range(n)]


def test_home_needs_min_nights_and_counts_the_night_that_starts_at_21(tmp_path):
    # checks the method: methodology#telecom-indicators
    ev = nights("ten", A, 10) + nights("nine", A, 9)
    # 23:00 on day 20 and 01:00 on day 21 belong to the same night: still 9 nights for "nine+"
    ev += nights("nine+", A, 8) + [("nine+", local(2024, 3, 20, 23), A), ("nine+", local(2024, 3, 21, 1), A)]
    out, home, _day, con = run(tmp_path, ev)
    assert home == {dev_id(con, "ten"): cell(A)}
    assert out["residents"].to_pylist() == [{"cell": cell(A), "n_devices": 1}]


def test_night_window_edges(tmp_path):
    # 20:59 and 07:00 are not night; 21:00 and 06:59 are, and 06:59 counts to the night before
    ev = nights("d", A, 10, hour=21)  # 21:00 on days 1..10 at A
    ev += [("d", local(2024, 3, d, 20, 59), B) for d in range(1, 25)]  # many 20:59 events at B (not night)
    ev += [("d", local(2024, 3, d, 7, 0), B) for d in range(1, 25)]  # 07:00 at B (not night)
    ev += [("d", local(2024, 3, 2, 6, 59), C)]  # night of 1 March, at C
    _out, home, _day, con = run(tmp_path, ev)
    assert home == {dev_id(con, "d"): cell(A)}
    nights_seen = con.execute(
        "SELECT count(DISTINCT CAST(FLOOR((t - 75600) / 86400) AS BIGINT)) FROM ev "
        "WHERE CAST(FLOOR((t % 86400) / 3600) AS INTEGER) >= 21 OR CAST(FLOOR((t % 86400) / 3600) AS INTEGER) < 7"
    ).fetchall()[0][0]
    assert nights_seen == 10  # the 06:59 event joined the night that started on 1 March


def test_ties_go_to_the_smallest_h3_cell(tmp_path):
    ev = nights("t", A, 5) + nights("t", B, 5, start_day=10)
    _out, home, _day, con = run(tmp_path, ev)
    assert home[dev_id(con, "t")] == min(cell(A), cell(B))


def test_day_cell_is_modal_over_weekday_working_hours(tmp_path):
    ev = nights("w", A, 10)
    # March 2024: the 4th is a Monday, the 9th a Saturday
    ev += [("w", local(2024, 3, 4 + i, 9, 0), B) for i in range(5)]  # Mon–Fri 09:00 at B
    ev += [("w", local(2024, 3, 4, 16, 59), B)]  # 16:59 still working hours
    ev += [("w", local(2024, 3, 9, 12), C), ("w", local(2024, 3, 10, 12), C)] * 5  # weekend: ignored
    ev += [("w", local(2024, 3, 5, 17, 0), C)] * 5 + [("w", local(2024, 3, 5, 8, 59), C)] * 5  # outside hours
    out, _home, day, con = run(tmp_path, ev)
    assert day == {dev_id(con, "w"): cell(B)}
    assert out["od"].to_pylist() == [{"origin_cell": cell(A), "dest_cell": cell(B), "n_devices": 1}]


def test_od_keeps_equal_cells_and_presence_counts_distinct_devices_per_hour(tmp_path):
    ev = []
    for dvc in ("p", "q"):
        ev += nights(dvc, A, 10)
        ev += [(dvc, local(2024, 3, 4 + i, 10), A) for i in range(5)]  # works at home
    out, _home, _day, _con = run(tmp_path, ev)
    assert out["od"].to_pylist() == [{"origin_cell": cell(A), "dest_cell": cell(A), "n_devices": 2}]
    presence = {(r["cell"], r["hour"]): r["n_devices"] for r in out["presence"].to_pylist()}
    assert presence == {(cell(A), 23): 2, (cell(A), 10): 2}


def test_utc_is_shifted_to_local_time(tmp_path):
    # 13:00 UTC is 21:00 in Shanghai: night there
    ev = [("u", dt.datetime(2024, 3, d, 13, 0), A) for d in range(1, 11)]
    _out, home, _day, con = run(tmp_path, ev)
    assert home == {dev_id(con, "u"): cell(A)}
    # the same events read as UTC+0 fall at 13:00: no night, no home
    _out, home, _day, _con = run(tmp_path, ev, tz="UTC")
    assert home == {}


def test_radius_of_gyration_two_points_on_the_equator(tmp_path):
    # checks the method: methodology#telecom-indicators
    west, east = (0.0, 0.0), (0.0, 1.0)
    ev = nights("g", west, 10) + nights("g", east, 9, start_day=12, hour=12)
    out, _home, _day, con = run(tmp_path, ev)
    rg = con.execute("SELECT rg_km FROM gyr").fetchall()[0][0]
    # mean position (0, 9/19 °E); distances 9/19 ° and 10/19 ° of a great circle
    r = 6371.0088 * math.pi / 180
    expected = math.sqrt((10 * (r * 9 / 19) ** 2 + 9 * (r * 10 / 19) ** 2) / 19)
    assert rg == pytest.approx(expected, rel=1e-9)
    assert out["gyration_by_home"].to_pylist()[0]["median_rg_km"] == pytest.approx(expected, rel=1e-9)


def test_events_outside_the_period_are_dropped_and_dst_zones_refused(tmp_path):
    ev = nights("o", A, 10) + [("o", local(2024, 4, 1, 0, 30), B), ("o", local(2024, 2, 29, 23), B)]
    _out, _home, _day, con = run(tmp_path, ev)
    assert con.execute("SELECT count(*) FROM ev").fetchall()[0][0] == 10
    with pytest.raises(InvalidParameter, match="daylight saving"):
        engine.fixed_offset_seconds("Europe/Berlin", engine.Period.month("2024-03"))
    assert engine.fixed_offset_seconds("Europe/Berlin", engine.Period.month("2024-01")) == 3600
    with pytest.raises(InvalidParameter):
        engine.Period.month("2024-13")


def test_duckdb_sql_equals_an_independent_polars_implementation(tmp_path):
    """Random commuters over a month: every table of the SQL definitions equals the Polars rewrite."""
    # checks the method: methodology#telecom-indicators
    import random

    import polars as pl

    from app.telecom.polars_ref import definitions

    rng = random.Random(7)
    places = [(42.0 + rng.random() * 0.5, 123.5 + rng.random() * 0.6) for _ in range(40)]
    events = []
    for d in range(300):
        home, work = rng.choice(places[:20]), rng.choice(places)
        for day in range(1, 32):
            for _ in range(rng.randint(0, 6)):
                hour = rng.randint(0, 23)
                where = home if hour >= 20 or hour < 8 else (work if rng.random() < 0.7 else rng.choice(places))
                events.append((f"dev{d}", local(2024, 3, day, hour, rng.randint(0, 59)), where))
    out, _home, _day, con = run(tmp_path, events, min_nights=10)
    ev = pl.from_arrow(con.sql("SELECT * FROM ev").to_arrow_table())
    ref = definitions(ev, min_nights=10)

    def same(table, keys):
        a = pl.from_arrow(out[table]).sort(keys)
        b = ref[table].select(a.columns).cast(dict(a.schema)).sort(keys)
        assert a.height > 0 and a.equals(b), table

    same("presence", ["cell", "hour"])
    same("residents", ["cell"])
    same("od", ["origin_cell", "dest_cell"])
    a = pl.from_arrow(out["gyration_by_home"]).sort("cell")
    b = ref["gyration_by_home"].select(a.columns).sort("cell")
    assert a["cell"].to_list() == b["cell"].to_list() and a["n_devices"].to_list() == b["n_devices"].to_list()
    assert max(abs(x - y) for x, y in zip(a["median_rg_km"], b["median_rg_km"], strict=True)) < 1e-9
    homes = dict(con.execute("SELECT dev, home_cell FROM home").fetchall())
    assert homes == dict(zip(ref["home"]["dev"], ref["home"]["home_cell"], strict=True))


def test_admin_od_out_migration_and_service_access(tmp_path):
    """The admin-unit, out-migration and service-access definitions on a hand-made month."""
    # checks the method: methodology#telecom-indicators
    from app.telecom import sql

    ev = []
    for dvc, home, work in (("h1", A, B), ("h2", A, A), ("h3", C, B)):
        ev += nights(dvc, home, 10)
        ev += [(dvc, local(2024, 3, 4 + i, 10), work) for i in range(5)]
    _out, _home, _day, con = run(tmp_path, ev)
    con.execute("CREATE TABLE cell_admin (cell BIGINT, admin_code VARCHAR)")
    con.executemany("INSERT INTO cell_admin VALUES (?, ?)", [(cell(A), "X"), (cell(B), "Y"), (cell(C), "Y")])
    assert sorted(con.execute(sql.residents_by_admin()).fetchall()) == [("X", 2), ("Y", 1)]
    assert sorted(con.execute(sql.od_by_admin()).fetchall()) == [("X", "X", 1), ("X", "Y", 1), ("Y", "Y", 1)]
    # previous period: h1 lived in Y (cell C), h2 in X, h3 in Y → from Y, 1 of 2 moved (h1 → X)
    con.execute("CREATE TABLE prev_home (dev BIGINT, home_cell BIGINT)")
    con.executemany("INSERT INTO prev_home VALUES (?, ?)", [(dev_id(con, "h1"), cell(C)), (dev_id(con, "h2"), cell(A)),
                                                             (dev_id(con, "h3"), cell(C))])
    assert sorted(con.execute(sql.out_migration()).fetchall()) == [("X", 1, 0.0), ("Y", 2, 0.5)]
    # a clinic in cell B: h1 and h3 have events there, h2 does not
    bl = h3.cell_to_latlng(h3.int_to_str(cell(B)))
    con.execute("CREATE TABLE fac_cell AS SELECT CAST(? AS BIGINT) AS cell, 'clinic' AS class, "
                "CAST(? AS DOUBLE) AS lat, CAST(? AS DOUBLE) AS lon", [cell(B), bl[0], bl[1]])
    centres = [(cell(p), *h3.cell_to_latlng(h3.int_to_str(cell(p)))) for p in (A, C)]
    con.execute("CREATE TABLE cell_centre (cell BIGINT, lat DOUBLE, lon DOUBLE)")
    con.executemany("INSERT INTO cell_centre VALUES (?, ?, ?)", centres)
    rows = {r[0]: r[1:] for r in con.execute(sql.service_access(sql.DUCKDB)).fetchall()}
    r = 6371.0088
    a_lat, a_lon = h3.cell_to_latlng(h3.int_to_str(cell(A)))
    dlat, dlon = math.radians(bl[0] - a_lat), math.radians(bl[1] - a_lon)
    cos_product = math.cos(math.radians(a_lat)) * math.cos(math.radians(bl[0]))
    hav = math.sin(dlat / 2) ** 2 + cos_product * math.sin(dlon / 2) ** 2
    expected_km = 2 * r * math.asin(math.sqrt(hav))
    cls, n, share, km = rows[cell(A)]
    assert (cls, n, share) == ("clinic", 2, 0.5) and km == pytest.approx(expected_km, rel=1e-9)
    assert rows[cell(C)][:3] == ("clinic", 1, 1.0)


def test_cell_ids_with_a_tower_file_and_csv_input(tmp_path, caplog):
    """Events that carry a cell_id instead of a position, read from CSV, give the same homes as positions."""
    import csv

    towers = tmp_path / "towers.csv"
    with towers.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["cell_id", "lon", "lat"])
        w.writerow(["T-A", A[1], A[0]])
        w.writerow(["T-B", B[1], B[0]])
    events = tmp_path / "events.csv"
    with events.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["device_id", "ts", "cell_id"])
        for d in range(1, 12):
            w.writerow(["x", local(2024, 3, d, 23).isoformat(sep=" "), "T-A"])
            w.writerow(["x", local(2024, 3, d, 12).isoformat(sep=" "), "T-B"])
        w.writerow(["x", local(2024, 3, 5, 23).isoformat(sep=" "), "T-UNKNOWN"])  # no such tower: dropped
    p = engine.Period.month("2024-03")
    con = engine.connect(memory_limit="1GB")
    n = engine.load_events(con, [events], res=RES, offset_s=engine.fixed_offset_seconds("Asia/Shanghai", p),
                           period=p, towers=towers)
    assert n == 22
    assert "1 event(s) name a cell_id that is not in the tower file" in caplog.text
    engine.run_definitions(con, min_nights=10)
    assert con.execute("SELECT home_cell FROM home").fetchall() == [(cell(A),)]
    with pytest.raises(InvalidParameter, match="tower file"):
        engine.load_events(con, [events], res=RES, offset_s=0, period=p)
