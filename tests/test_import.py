"""Government data import and replication: real files in, OGC features and standard files out.

A second, non-Chinese region is stood up from libpysal's bundled Georgia counties (real 1990 census data in a
PyPI package, no download) with the documented mapping, published next to the demo region and checked
against the source file. The registry importer is checked for GBK CSV, XLSX, GCJ-02 coordinates, all-or-
nothing rejection, idempotent re-import, yearly versioning, dry runs and a process killed mid-import.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pyogrio
import pytest
import shapely
import yaml
from pyproj import Transformer
from tpa_testing import ThrowawayDatabase, client_for, fetch, free_port, run_async, settings_for

from app.demo.registry_export import COLUMNS, registry_rows, write_registry_csv
from app.errors import InvalidParameter
from app.ingest.coords import wgs84_to_gcj02
from app.ingest.pipeline import ImportOptions, run_import

ROOT = Path(__file__).resolve().parent.parent
MAPPINGS = ROOT / "examples" / "mappings"
KEY = b"test-pseudonym-key-0123456789"
TPA = [sys.executable, "-m", "app.cli"]


def georgia_shp() -> Path:
    import libpysal

    return Path(libpysal.examples.get_path("G_utm.shp"))


@pytest.fixture(scope="module")
def db(demo_template: str):
    """A private demo database: the demo region (villages for the registry) plus whatever the tests import."""
    with ThrowawayDatabase("import", template=demo_template) as d:
        yield d


@pytest.fixture(scope="module")
def villages(db) -> list[str]:
    return [r[0] for r in fetch(db.name, "SELECT code FROM village WHERE region_id = 'tieling-demo' ORDER BY code")]


def cli(db, *args: str, key: bytes | None = KEY, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": db.url, "COLUMNS": "200"}
    env.pop("TPA_PSEUDONYM_KEY", None)
    if key:
        env["TPA_PSEUDONYM_KEY"] = key.decode()
    proc = subprocess.run([*TPA, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def imp(db, entity: str, path: Path, region: str = "tieling-demo", **kw) -> object:
    mapping = kw.pop("mapping", None)
    opts = ImportOptions(entity, Path(path), region, Path(mapping) if mapping else None, **kw)
    return run_async(run_import(db.url, opts, KEY))


def count(db, sql: str, *args) -> int:
    return int(fetch(db.name, sql, *args)[0][0])


def utm16_to_wgs84(wkb) -> np.ndarray:  # noqa: ANN001
    """Geometries of the Georgia file (EPSG:26916) reprojected independently of the importer, with pyproj."""
    t = Transformer.from_crs(26916, 4326, always_xy=True)
    return shapely.transform(shapely.from_wkb(np.asarray(wkb, dtype=object)),
                             lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))


def pseudonym(value: str) -> str:
    return hmac.new(KEY, value.strip().upper().encode(), hashlib.sha256).hexdigest()


# ------------------------------------------------------------------------------------------ a second region
@pytest.fixture(scope="module")
def georgia(db):
    cli(db, "region", "create", "georgia-us", "--country", "USA", "--crs", "EPSG:26916", "--name",
        "Georgia (USA) counties, 1990", "--admin-levels", "1=State,3=County")
    out = cli(db, "import", "boundaries", str(georgia_shp()), "--region", "georgia-us", "--mapping",
              str(MAPPINGS / "georgia-counties.yaml"), "--source-crs", "EPSG:26916")
    assert "159 new" in out.stderr and "rows/s" in out.stderr
    return "georgia-us"


async def test_georgia_counties_round_trip_through_ogc_api(db, georgia):
    meta, _fids, wkb, fields = pyogrio.raw.read(georgia_shp())
    src = dict(zip(meta["fields"], fields, strict=True))
    geoms = utm16_to_wgs84(wkb)
    expected = {f"US{key}": (geoms[i], float(src["PctPov"][i]), int(src["TotPop90"][i]))
                for i, key in enumerate(src["AreaKey"])}

    async with client_for(settings_for(db.url)) as api:
        coll = (await api.get("/collections/admin-units")).json()
        assert "http://www.opengis.net/def/crs/EPSG/0/26916" in coll["crs"]  # the new region's metric CRS
        r = await api.get("/collections/admin-units/items", params={"filter": "region = 'georgia-us'", "limit": 500})
        assert r.status_code == 200
        body = r.json()
        demo = (await api.get("/collections/admin-units/items",
                              params={"filter": "region = 'tieling-demo'", "limit": 1})).json()
    assert body["numberMatched"] == 159 and len(body["features"]) == 159
    assert demo["numberMatched"] > 0  # published next to the demo region, in the same collection
    for f in body["features"]:
        geom, pct_pov, pop = expected[f["id"]]
        p = f["properties"]
        assert p["level"] == 3 and p["region"] == "georgia-us" and p["name"] == f"County FIPS {f['id'][2:]}"
        assert p["pct_poverty"] == pct_pov and p["total_population_1990"] == pop  # mapped attributes, flat
        assert p["valid_from"] == "1990-01-01"
        got = shapely.geometry.shape(f["geometry"])
        assert got.geom_type == "MultiPolygon"
        a, b = shapely.get_coordinates(got), shapely.get_coordinates(geom)
        assert a.shape == b.shape and np.max(np.abs(a - b)) < 1e-6
    levels = fetch(db.name, "SELECT metadata->'admin_levels' FROM region WHERE region_id = 'georgia-us'")[0][0]
    assert json.loads(levels) == {"1": "State", "3": "County"}


async def test_mapped_attributes_are_queryables_and_process_variables_in_the_regions_crs(db, georgia):
    """Attributes a mapping puts under ``properties:`` are properties of their own: queryable, sortable, and usable
    by processes by reference; the analysis measures in the CRS the region declares (EPSG:26916, UTM 16N), not in
    the UTM zone of the data's centre (17N)."""
    _meta, _fids, _wkb, fields = pyogrio.raw.read(georgia_shp(), columns=["PctPov"])
    async with client_for(settings_for(db.url)) as api:
        q = (await api.get("/collections/admin-units/queryables")).json()["properties"]
        assert q["pct_poverty"]["type"] == "number" and q["total_population_1990"]["type"] == "number"
        r = await api.get("/collections/admin-units/items", params={
            "filter": "region = 'georgia-us' AND pct_poverty >= 25", "sortby": "-pct_poverty", "limit": 200})
        got = [f["properties"]["pct_poverty"] for f in r.json()["features"]]
        assert got == sorted((float(v) for v in fields[0] if v >= 25), reverse=True)
        r = await api.post("/processes/spatial-autocorrelation/execution", json={"inputs": {
            "features": {"href": "/collections/admin-units/items?filter=region = 'georgia-us'"},
            "variable": "pct_poverty", "weights": {"type": "queen"}, "permutations": 0}})
        assert r.status_code == 200, r.text
        assert r.json()["weights"]["analysis_crs"] == "EPSG:26916" and r.json()["global"]["n"] == 159
        named = await api.post("/processes/spatial-autocorrelation/execution", json={"inputs": {
            "features": {"href": "/collections/admin-units/items?filter=region = 'georgia-us'"},
            "variable": "pct_poverty", "permutations": 0, "analysis_crs": 32617}})
        assert named.json()["weights"]["analysis_crs"] == "EPSG:32617"  # a request that names one keeps it


@pytest.mark.parametrize(("shapefile", "region", "crs", "source_crs", "code_of"), [
    ("G_utm.shp", "georgia-sm", "EPSG:26916", "EPSG:26916", lambda r: f"US{r['AreaKey']}"),
    ("sids2.shp", "carolina-sm", "EPSG:32617", "EPSG:4267", lambda r: f"US{r['FIPS']}"),
])
def test_suggested_mapping_imports_bundled_boundaries_unedited(throwaway_db, tmp_path, shapefile, region, crs,
                                                               source_crs, code_of):
    import libpysal

    db = throwaway_db  # an empty database of its own: unit codes are unique across regions
    db.upgrade()
    path = Path(libpysal.examples.get_path(shapefile))
    cli(db, "region", "create", region, "--country", "USA", "--crs", crs, "--admin-levels", "1=State,3=County")
    suggested = cli(db, "import", "boundaries", str(path), "--suggest-mapping", "--region", region).stdout
    mapping = tmp_path / f"{region}.yaml"
    mapping.write_text(suggested)
    fields = yaml.safe_load(suggested)["fields"]
    assert fields["level"] == {"value": 3} and "template" in fields["code"]
    out = cli(db, "import", "boundaries", str(path), "--region", region, "--mapping", str(mapping), "--source-crs",
              source_crs)
    meta, _fids, _wkb, values = pyogrio.raw.read(path)
    rows = [dict(zip(meta["fields"], row, strict=True)) for row in zip(*values, strict=True)]
    assert f"{len(rows)} new" in out.stderr
    stored = {r[0]: r[1] for r in fetch(db.name, "SELECT code, properties FROM admin_unit WHERE region_id = $1",
                                        region)}
    assert set(stored) == {code_of(r) for r in rows}
    first = json.loads(stored[code_of(rows[0])])
    assert len(first) == len(meta["fields"]) - 1 - ("NAME" in meta["fields"])  # every other column kept


def test_import_messages_a_person_can_act_on(db, tmp_path):
    bad_id = cli(db, "region", "create", "Mexico City", "--country", "MEX", "--crs", "EPSG:32614", check=False)
    assert bad_id.returncode == 2 and "lower-case letters, digits and '-'" in bad_id.stderr
    assert "violates check constraint" not in bad_id.stderr
    cli(db, "region", "create", "mx-test", "--country", "MEX", "--crs", "EPSG:32614")
    listed = cli(db, "region", "list").stdout
    assert "\\t" not in listed and "mx-test" in listed and "EPSG:32614" in listed
    units = tmp_path / "units.csv"
    units.write_text("code,name\n" + "".join(f"MX09{i:03d},Unidad {i}\n" for i in range(32)))
    no_level = cli(db, "import", "boundaries", str(units), "--region", "mx-test", check=False)
    assert no_level.returncode != 0
    assert no_level.stderr.count("level") <= 3 and "level: {value: 3}" in no_level.stderr  # said once, with the fix
    units.write_text("code,name,level\nMX09,Ciudad de México,4\n")
    cli(db, "import", "boundaries", str(units), "--region", "mx-test")
    # villages with a parent (the 'p.level' error) and villages without counts
    (tmp_path / "v.yaml").write_text('entity: villages\ngeometry: {x: lon, y: lat, crs: "EPSG:4326"}\n')
    (tmp_path / "v.csv").write_text("code,name,parent_code,households,population,lon,lat\n"
                                    "MXV-T1,Prueba,MX09,10,40,-99.1,19.4\n")
    dry = cli(db, "import", "villages", str(tmp_path / "v.csv"), "--region", "mx-test", "--mapping",
              str(tmp_path / "v.yaml"), "--dry-run")
    assert "1 new" in dry.stderr
    (tmp_path / "v.csv").write_text("code,name,parent_code,lon,lat\nMXV-T2,Sin conteo,MX09,-99.2,19.3\n")
    cli(db, "import", "villages", str(tmp_path / "v.csv"), "--region", "mx-test", "--mapping", str(tmp_path / "v.yaml"))
    assert fetch(db.name, "SELECT households, population FROM village WHERE code = 'MXV-T2'")[0] == (None, None)
    (tmp_path / "v.csv").write_text("code,name,parent_code,lon,lat\nMXV-T3,Mal,MXV-T2,-99.2,19.3\n")
    wrong = imp(db, "villages", tmp_path / "v.csv", region="mx-test", mapping=tmp_path / "v.yaml")
    assert [e.reason for e in wrong.errors] == ["the parent is at level 5, which is not above this unit's level 5"]


def test_region_create_rejects_bad_input(db):
    bad = cli(db, "region", "create", "x-bad", "--country", "XXX", "--crs", "EPSG:26916", check=False)
    assert bad.returncode == 2 and "unknown country" in bad.stderr
    geographic = cli(db, "region", "create", "x-bad", "--country", "USA", "--crs", "EPSG:4326", check=False)
    assert geographic.returncode == 2 and "not a projected CRS in metres" in geographic.stderr
    assert count(db, "SELECT count(*) FROM region WHERE region_id = 'x-bad'") == 0


def test_export_geopackage_and_codes_stay_with_their_region(db, georgia, tmp_path):
    out = tmp_path / "georgia.gpkg"
    cli(db, "export", "region", "georgia-us", str(out))
    layers = {str(r[0]) for r in pyogrio.list_layers(out)}
    assert {"admin_units", "villages", "projects", "facilities"} <= layers
    assert not layers & {"households", "persons", "audit"}  # restricted data never leaves
    info = pyogrio.read_info(out, layer="admin_units")
    assert info["features"] == 159 and info["crs"] == "EPSG:4326"
    _m, _f, _g, fields = pyogrio.raw.read(out, layer="admin_units", columns=["id", "properties"])
    props = {fid: json.loads(p) for fid, p in zip(fields[0], fields[1], strict=True)}
    assert props["US13001"]["pct_poverty"] == 19.9
    # The same codes cannot be taken over by another region.
    cli(db, "region", "create", "georgia-copy", "--country", "USA", "--crs", "EPSG:26916")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(yaml.safe_dump({"fields": {"code": "id", "level": "level", "name": "name"}}))
    res = imp(db, "boundaries", out, region="georgia-copy", mapping=mapping, layer="admin_units")
    assert not res.committed and res.error_count == 159
    assert res.errors[0].reason == "belongs to region georgia-us, not georgia-copy"


def test_pygeoapi_serves_the_region_from_the_exported_config(db, georgia, tmp_path):
    cfg, oas = tmp_path / "pygeoapi.yml", tmp_path / "openapi.yml"
    port = free_port()
    cli(db, "export", "pygeoapi-config", "georgia-us", "-o", str(cfg), "--port", str(port), "--url",
        f"http://127.0.0.1:{port}")
    assert "password:" not in cfg.read_text()
    env = {**os.environ, "PYGEOAPI_CONFIG": str(cfg), "PYGEOAPI_OPENAPI": str(oas)}
    bin_dir = Path(sys.executable).parent
    subprocess.run([str(bin_dir / "pygeoapi"), "openapi", "generate", str(cfg), "--output-file", str(oas)],
                   env=env, check=True, capture_output=True, timeout=120)
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "pygeoapi.starlette_app:APP", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "error"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}/collections/admin_units/items"
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(url, params={"f": "json", "limit": 200}, timeout=10)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(proc.stderr.read().decode()[-2000:]) from None
                time.sleep(0.3)
        assert r.status_code == 200, r.text[:500]
        body = r.json()
        assert body["numberMatched"] == 159 and len(body["features"]) == 159
        f = next(f for f in body["features"] if f["id"] == "US13001")
        assert f["properties"]["region"] == "georgia-us" and f["geometry"]["type"] == "MultiPolygon"
    finally:
        proc.terminate()
        proc.wait(10)


# ------------------------------------------------------------------------------------------ the registry
def test_gbk_csv_registry_pseudonymised_and_mapped(db, villages, tmp_path):
    path = write_registry_csv(tmp_path / "registry-gbk.csv", 300, villages, seed=11, encoding="gbk")
    with pytest.raises(UnicodeDecodeError):
        path.read_text(encoding="utf-8")
    res = imp(db, "households", path, mapping=MAPPINGS / "households-zh.yaml", partial=True)
    assert res.ok and res.committed and res.inserted == 300, res.errors[:5]
    rows = registry_rows(300, villages, seed=11)
    first = rows[0]
    head_id = first[COLUMNS.index("户主身份证号")]
    got = fetch(db.name, "SELECT main_cause::text, village_code, size, water_safe, other_causes::text[], "
                "valid_from::text, source FROM household WHERE hh_id = $1", pseudonym(head_id))
    assert got, "the household is stored under the HMAC pseudonym of the head's ID number"
    labels = {"因病": "illness", "因残": "disability", "因学": "schooling", "因灾": "disaster", "缺土地": "lack_land",
              "缺水": "lack_water", "缺技术": "lack_skills", "缺劳力": "lack_labour", "缺资金": "lack_capital",
              "交通条件落后": "poor_transport", "自身发展动力不足": "lack_motivation", "其它": "other"}
    row = got[0]
    assert row["main_cause"] == labels[first[COLUMNS.index("主要致贫原因")]]
    assert row["village_code"] == first[COLUMNS.index("行政村代码")]
    assert row["size"] == int(first[COLUMNS.index("家庭人口数")])
    assert row["water_safe"] == (first[COLUMNS.index("饮水安全")] == "是")
    others = [labels[c] for c in first[COLUMNS.index("其他致贫原因")].split("、") if c]
    assert row["other_causes"] == others and row["valid_from"] == "2019-01-01"
    # Neither ID numbers nor names are stored anywhere.
    dump = fetch(db.name, "SELECT string_agg(t::text, ' ') FROM household t WHERE source = $1", row["source"])[0][0]
    assert head_id not in dump and first[0] not in dump
    assert count(db, "SELECT count(*) FROM import_log WHERE file_name = 'registry-gbk.csv'") == 1


def test_refuses_personal_data_without_a_key(db, villages, tmp_path):
    path = write_registry_csv(tmp_path / "r.csv", 5, villages)
    opts = ImportOptions("households", path, "tieling-demo", MAPPINGS / "households-zh.yaml")
    with pytest.raises(InvalidParameter, match="TPA_PSEUDONYM_KEY"):
        run_async(run_import(db.url, opts, None))
    out = cli(db, "import", "households", str(path), "--region", "tieling-demo", "--mapping",
              str(MAPPINGS / "households-zh.yaml"), key=None, check=False)
    assert out.returncode == 2 and "TPA_PSEUDONYM_KEY" in out.stderr


def test_one_bad_row_rejects_the_file_and_is_reported(db, villages, tmp_path):
    rows = registry_rows(50, villages, seed=21)
    rows[6][COLUMNS.index("主要致贫原因")] = "因懒"  # not a registry label → not a code
    rows[6][COLUMNS.index("家庭人口数")] = "三"
    rows[20][COLUMNS.index("行政村代码")] = "999999999999"
    path = tmp_path / "bad.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([COLUMNS, *rows])
    before = count(db, "SELECT count(*) FROM household")
    report = tmp_path / "report.csv"
    out = cli(db, "import", "households", str(path), "--region", "tieling-demo", "--mapping",
              str(MAPPINGS / "households-zh.yaml"), "--partial", "--report", str(report), check=False)
    assert out.returncode == 1 and "nothing was written" in out.stderr.replace("\n", " ")
    assert count(db, "SELECT count(*) FROM household") == before
    assert count(db, "SELECT count(*) FROM import_log WHERE file_name = 'bad.csv'") == 0
    with report.open(encoding="utf-8") as fh:
        problems = list(csv.DictReader(fh))
    found = {(p["file"], int(p["line"]), p["field"]) for p in problems}
    # data rows start on line 2 (line 1 is the header)
    assert found == {("bad.csv", 8, "main_cause"), ("bad.csv", 8, "size"), ("bad.csv", 22, "village_code")}
    by_field = {p["field"]: p for p in problems}
    assert by_field["main_cause"]["value"] == "因懒" and "not one of" in by_field["main_cause"]["reason"]
    assert "no admin_unit of level 5" in by_field["village_code"]["reason"]


def test_reimport_is_idempotent_and_dry_run_writes_nothing(db, villages, tmp_path):
    path = write_registry_csv(tmp_path / "again.csv", 120, villages, seed=31)
    mapping = MAPPINGS / "households-zh.yaml"
    dry = imp(db, "households", path, mapping=mapping, partial=True, dry_run=True)
    assert dry.ok and not dry.committed and dry.inserted == 120
    assert count(db, "SELECT count(*) FROM import_log WHERE file_name = 'again.csv'") == 0
    first = imp(db, "households", path, mapping=mapping, partial=True)
    n = count(db, "SELECT count(*) FROM household")
    second = imp(db, "households", path, mapping=mapping, partial=True)
    assert (first.inserted, first.updated) == (120, 0)
    assert (second.inserted, second.updated, second.unchanged) == (0, 0, 120)
    assert count(db, "SELECT count(*) FROM household") == n


def test_newer_registry_year_closes_and_archives_instead_of_deleting(db, villages, tmp_path):
    cli(db, "region", "create", "yearly", "--country", "CHN", "--crs", "EPSG:32651", "--poverty-line", "4000",
        "--currency", "CNY")
    # villages of the new region: copy three demo villages' geometry under new codes
    boundaries = tmp_path / "villages.csv"
    with boundaries.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["code", "name", "households", "population", "lon", "lat"])
        for i in range(3):
            w.writerow([f"Y{i}", f"村{i}", 100, 300, 123.8 + i / 100, 42.3])
    vm = tmp_path / "v.yaml"
    vm.write_text(yaml.safe_dump({"geometry": {"x": "lon", "y": "lat"}}), encoding="utf-8")
    assert imp(db, "villages", boundaries, region="yearly", mapping=vm).inserted == 3
    rows = registry_rows(40, ["Y0", "Y1", "Y2"], seed=41)
    mapping = MAPPINGS / "households-zh.yaml"
    y2019 = tmp_path / "r2019.csv"
    with y2019.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([COLUMNS, *rows])
    assert imp(db, "households", y2019, region="yearly", mapping=mapping, year=2019).inserted == 40
    # 2020: the first 10 households left the registry, the others were re-surveyed, 5 are new
    later = [list(r) for r in rows[10:]]
    for r in later:
        r[COLUMNS.index("家庭人口数")] = str(int(r[COLUMNS.index("家庭人口数")]) + 1)
        r[COLUMNS.index("人均纯收入")] = "9999.00"
    later += registry_rows(5, ["Y0"], seed=42)
    y2020 = tmp_path / "r2020.csv"
    with y2020.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([COLUMNS, *later])
    res = imp(db, "households", y2020, region="yearly", mapping=mapping, year=2020)
    assert (res.inserted, res.updated, res.closed, res.archived) == (5, 30, 10, 30), res
    assert count(db, "SELECT count(*) FROM household WHERE region_id = 'yearly'") == 45  # nothing deleted
    assert count(db, "SELECT count(*) FROM household WHERE region_id = 'yearly' AND valid_to = '2020-01-01'") == 10
    assert count(db, "SELECT count(*) FROM household_history WHERE region_id = 'yearly' "
                     "AND valid_from = '2019-01-01' AND valid_to = '2020-01-01'") == 30
    gone = pseudonym(rows[0][COLUMNS.index("户主身份证号")])
    kept = pseudonym(rows[10][COLUMNS.index("户主身份证号")])
    assert fetch(db.name, "SELECT valid_to::text FROM household WHERE hh_id = $1", gone)[0][0] == "2020-01-01"
    old, new = (fetch(db.name, f"SELECT size, net_income_pc::text FROM {t} WHERE hh_id = $1", kept)[0]
                for t in ("household_history", "household"))
    assert new["size"] == old["size"] + 1 and new["net_income_pc"] == "9999.00"
    # An older year cannot overwrite the newer one.
    stale = imp(db, "households", y2019, region="yearly", mapping=mapping, year=2019)
    assert not stale.committed and "later year" in stale.errors[0].reason


def test_cells_become_text_without_spreadsheet_artefacts():
    import datetime as dt

    from app.ingest.readers import text_of

    assert text_of(211202001001.0) == "211202001001"  # a village code typed as a number in Excel
    assert text_of(12.5) == "12.5" and text_of(float("nan")) is None and text_of("  ") is None
    assert text_of(dt.datetime(2019, 5, 1)) == "2019-05-01" and text_of(True) == "true"


def test_xlsx_facilities_and_gcj02_projects(db, tmp_path):
    import openpyxl

    # Facilities from a spreadsheet, with Chinese headers and class labels, coordinates in GCJ-02.
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "设施"
    ws.append(["编号", "名称", "类别", "经度", "纬度"])
    wgs = [(123.84, 42.29), (123.90, 42.31)]
    gx, gy = wgs84_to_gcj02(np.array([p[0] for p in wgs]), np.array([p[1] for p in wgs]))
    ws.append(["F-X1", "中心小学", "小学", float(gx[0]), float(gy[0])])
    ws.append(["F-X2", "卫生院", "卫生院", float(gx[1]), float(gy[1])])
    xlsx = tmp_path / "facilities.xlsx"
    wb.save(xlsx)
    mapping = tmp_path / "f.yaml"
    mapping.write_text(yaml.safe_dump({
        "entity": "facilities", "source": {"sheet": "设施"}, "geometry": {"x": "经度", "y": "纬度", "crs": "gcj02"},
        "fields": {"fac_id": "编号", "name": "名称",
                   "class": {"from": "类别", "values": {"小学": "school_primary", "卫生院": "hospital"}}},
    }, allow_unicode=True), encoding="utf-8")
    res = imp(db, "facilities", xlsx, mapping=mapping)
    assert res.ok and res.inserted == 2, res.errors
    rows = fetch(db.name, "SELECT fac_id, class::text, ST_X(geom) AS x, ST_Y(geom) AS y FROM facility "
                 "WHERE fac_id IN ('F-X1', 'F-X2') ORDER BY fac_id")
    for row, (lon, lat) in zip(rows, wgs, strict=True):
        assert abs(row["x"] - lon) < 1e-7 and abs(row["y"] - lat) < 1e-7  # back on WGS84, not ~500 m off
    assert [r["class"] for r in rows] == ["school_primary", "hospital"]

    # Projects from a CSV with coordinates on the published GCJ-02 test points; budgets in 万元.
    pairs = [("P-SH", 31.1774276, 121.5272106, 31.17530398364597, 121.531541859215),
             ("P-BJ", 39.911954, 116.377817, 39.91334545536069, 116.38404722455657)]
    path = tmp_path / "projects.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["项目编号", "项目名称", "项目类型", "建设状态", "总投资（万元）", "lng", "lat"])
        for pid, _wlat, _wlon, glat, glon in pairs:
            w.writerow([pid, f"项目{pid}", "光伏扶贫", "运营", "12.5", glon, glat])
    pm = tmp_path / "p.yaml"
    pm.write_text(yaml.safe_dump({
        "geometry": {"x": "lng", "y": "lat"},
        "fields": {"project_id": "项目编号", "name": "项目名称",
                   "type": {"from": "项目类型", "values": {"光伏扶贫": "photovoltaic"}},
                   "status": {"from": "建设状态", "values": {"运营": "operating"}},
                   "budget_total": {"from": "总投资（万元）", "scale": 10000}},
    }, allow_unicode=True), encoding="utf-8")
    out = cli(db, "import", "projects", str(path), "--region", "tieling-demo", "--mapping", str(pm),
              "--source-crs", "gcj02")
    assert "2 new" in out.stderr
    got = {r["project_id"]: r for r in fetch(
        db.name, "SELECT project_id, ST_X(geom) AS x, ST_Y(geom) AS y, budget_total::text, type::text FROM project "
        "WHERE project_id IN ('P-SH', 'P-BJ')")}
    for pid, wlat, wlon, _glat, _glon in pairs:
        assert abs(got[pid]["x"] - wlon) < 1e-6 and abs(got[pid]["y"] - wlat) < 1e-6
        assert got[pid]["budget_total"] == "125000.00" and got[pid]["type"] == "photovoltaic"


def test_invalid_geometry_is_reported_or_repaired(db, tmp_path):
    bowtie = "POLYGON((0 0, 1 1, 1 0, 0 1, 0 0))"
    path = tmp_path / "units.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["code", "name", "level", "wkt"])
        w.writerow(["BOW-1", "Bow tie", "3", bowtie])
    mapping = tmp_path / "u.yaml"
    mapping.write_text(yaml.safe_dump({"geometry": {"wkt": "wkt"}}), encoding="utf-8")
    cli(db, "region", "create", "bowtie", "--country", "KEN", "--crs", "EPSG:21037")
    rejected = imp(db, "boundaries", path, region="bowtie", mapping=mapping)
    assert not rejected.committed and rejected.errors[0].line == 2
    assert rejected.errors[0].reason.startswith("invalid geometry (Self-intersection")
    repaired = imp(db, "boundaries", path, region="bowtie", mapping=mapping, repair=True)
    assert repaired.committed and repaired.repaired == 1
    area = fetch(db.name, "SELECT ST_Area(geom) AS a, ST_IsValid(geom) AS v FROM admin_unit WHERE code = 'BOW-1'")[0]
    assert area["v"] and area["a"] == pytest.approx(0.5)


def test_suggest_mapping_for_a_registry_export(db, villages, tmp_path):
    path = tmp_path / "suggest.csv"
    cli(db, "demo", "registry-csv", str(path), "--rows", "200", "--seed", "5", "--encoding", "gb18030")
    assert path.read_bytes() == write_registry_csv(tmp_path / "same.csv", 200, villages, seed=5,
                                                   encoding="gb18030").read_bytes()
    out = cli(db, "import", "households", str(path), "--suggest-mapping")
    suggested = yaml.safe_load(out.stdout)
    fields = suggested["fields"]
    assert fields["hh_id"] == {"from": "户主身份证号", "pseudonymize": True}
    assert fields["main_cause"]["values"]["因病"] == "illness"
    assert fields["hh_type"]["values"]["低保贫困户"] == "dibao"
    assert fields["size"]["from"] == "家庭人口数"
    assert "户主姓名" in out.stdout.split("Personal data NOT imported")[1]
    assert "户主姓名" not in json.dumps(fields, ensure_ascii=False)


def test_killed_import_leaves_nothing(db, villages, tmp_path):
    path = write_registry_csv(tmp_path / "big.csv", 150_000, villages, seed=3)
    before = count(db, "SELECT count(*) FROM household")
    env = {**os.environ, "DATABASE_URL": db.url, "TPA_PSEUDONYM_KEY": KEY.decode()}
    proc = subprocess.Popen([*TPA, "import", "households", str(path), "--region", "tieling-demo", "--mapping",
                             str(MAPPINGS / "households-zh.yaml"), "--partial", "--batch-rows", "5000"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        # wait until the import holds its transaction and has staged rows, then kill it without warning
        while not count(db, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = "
                            "(SELECT oid FROM pg_database WHERE datname = $1)", db.name):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.0)
        assert proc.poll() is None, "the import finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 30
    while count(db, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state LIKE 'idle in%'",
                db.name) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert count(db, "SELECT count(*) FROM household") == before
    assert count(db, "SELECT count(*) FROM import_log WHERE file_name = 'big.csv'") == 0
    assert count(db, "SELECT count(*) FROM pg_class WHERE relname IN ('_stage', '_typed', '_errors')") == 0


def test_every_vector_format_gives_the_same_region(db, georgia, tmp_path):
    """The Georgia counties as zipped Shapefile, GeoPackage, FlatGeobuf and GeoJSON: same rows, all unchanged."""
    import zipfile

    meta, _fids, wkb, fields = pyogrio.raw.read(georgia_shp())
    files = {}
    for ext, driver in ((".gpkg", "GPKG"), (".fgb", "FlatGeobuf"), (".geojson", "GeoJSON")):
        out = tmp_path / f"georgia{ext}"
        crs = "EPSG:4326" if driver == "GeoJSON" else "EPSG:26916"
        geoms = wkb
        if driver == "GeoJSON":  # GeoJSON is WGS84 by definition: reproject first
            geoms = np.array(list(shapely.to_wkb(utm16_to_wgs84(wkb))), dtype=object)
        pyogrio.raw.write(str(out), geoms, fields, list(meta["fields"]), driver=driver, geometry_type="Unknown",
                          crs=crs, layer="counties")
        files[ext] = out
    zipped = tmp_path / "georgia-shp.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        for part in georgia_shp().parent.glob("G_utm.*"):
            z.write(part, part.name)
    files[".zip"] = zipped
    for ext, path in files.items():
        crs = "EPSG:26916" if ext == ".zip" else None  # the zipped Shapefile has no .prj, the others declare it
        res = imp(db, "boundaries", path, region="georgia-us", mapping=MAPPINGS / "georgia-counties.yaml",
                  source_crs=crs, year=1990)
        assert res.committed and res.rows == 159, (ext, res.errors[:3])
        # GeoJSON went through a reprojection in this test and so moves vertices by float rounding only
        assert res.inserted == 0 and res.updated + res.unchanged == 159, ext
        if ext != ".geojson":
            assert res.unchanged == 159, ext


def test_gbk_shapefile_without_cpg_and_name_lookup(db, tmp_path):
    """Chinese Shapefiles often come without a .cpg file; their GBK names still arrive intact."""
    shp = tmp_path / "设施.shp"
    names = ["团结村卫生室", "铁岭县第二中学", "镇中心小学"]
    pts = [shapely.Point(123.84 + i / 100, 42.29) for i in range(3)]
    pyogrio.raw.write(str(shp), np.array([shapely.to_wkb(p) for p in pts], dtype=object),
                      [np.array(["S-1", "S-2", "S-3"], dtype=object), np.array(names, dtype=object),
                       np.array(["卫生室", "初中", "小学"], dtype=object)],
                      ["id", "mc", "lb"], driver="ESRI Shapefile", geometry_type="Point", crs="EPSG:4326",
                      encoding="GBK")
    for cpg in tmp_path.glob("*.cpg"):
        cpg.unlink()
    assert "铁岭".encode("gbk") in shp.with_suffix(".dbf").read_bytes()
    village = fetch(db.name, "SELECT a.name, a.code FROM admin_unit a JOIN village v USING (code) "
                    "WHERE v.region_id = 'tieling-demo' AND a.name IN (SELECT name FROM admin_unit "
                    "WHERE region_id = 'tieling-demo' AND level = 5 GROUP BY name HAVING count(*) = 1) LIMIT 1")[0]
    mapping = tmp_path / "s.yaml"
    mapping.write_text(yaml.safe_dump({"fields": {
        "fac_id": "id", "name": "mc", "admin_code": {"value": village["name"], "lookup": "name"},
        "class": {"from": "lb", "values": {"卫生室": "clinic", "初中": "school_junior", "小学": "school_primary"}},
    }}, allow_unicode=True), encoding="utf-8")
    res = imp(db, "facilities", shp, mapping=mapping)
    assert res.committed and res.inserted == 3, res.errors
    got = fetch(db.name, "SELECT fac_id, name, class::text, admin_code FROM facility WHERE fac_id LIKE 'S-%' "
                "ORDER BY fac_id")
    assert [r["name"] for r in got] == names
    assert [r["class"] for r in got] == ["clinic", "school_junior", "school_primary"]
    assert {r["admin_code"] for r in got} == {village["code"]}
    # a name that no unit has is reported, not guessed
    mapping.write_text(mapping.read_text(encoding="utf-8").replace(village["name"], "不存在村"), encoding="utf-8")
    bad = imp(db, "facilities", shp, mapping=mapping)
    assert bad.error_count == 3 and bad.errors[0].field == "admin_code"
    assert bad.errors[0].reason == "no single administrative unit of the region has this name"


def test_persons_link_to_pseudonymous_households(db, villages, tmp_path):
    heads = registry_rows(4, villages, seed=51)
    reg = tmp_path / "hh.csv"
    with reg.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([COLUMNS, *heads])
    assert imp(db, "households", reg, mapping=MAPPINGS / "households-zh.yaml", partial=True).inserted == 4
    members = tmp_path / "persons.csv"
    head_ids = [h[COLUMNS.index("户主身份证号")] for h in heads]
    with members.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["姓名", "身份证号", "户主身份证号", "与户主关系", "性别", "出生年份", "劳动技能", "参加医保",
                    "参加养老保险"])
        for i, head in enumerate(head_ids):
            w.writerow([f"户主{i}", head, head, "户主", "男", 1960 + i, "普通劳动力", "是", "是"])
            w.writerow([f"成员{i}", f"21122419900101{i:03d}X", head, "配偶", "女", 1962 + i, "弱劳动力或半劳动力",
                        "是", "否"])
    mapping = tmp_path / "p.yaml"
    mapping.write_text(yaml.safe_dump({"entity": "persons", "year": 2019, "fields": {
        "person_id": "身份证号", "hh_id": "户主身份证号",
        "relation": {"from": "与户主关系", "values": {"户主": "head", "配偶": "spouse"}},
        "sex": {"from": "性别", "values": {"男": "male", "女": "female"}}, "birth_year": "出生年份",
        "labour": {"from": "劳动技能", "values": {"普通劳动力": "ordinary", "弱劳动力或半劳动力": "weak"}},
        "med_insured": "参加医保", "pension_insured": "参加养老保险"}}, allow_unicode=True), encoding="utf-8")
    res = imp(db, "persons", members, mapping=mapping, partial=True)
    assert res.committed and res.inserted == 8, res.errors
    rows = fetch(db.name, "SELECT p.person_id, p.relation::text, p.pension_insured, h.hh_id FROM person p "
                 "JOIN household h USING (hh_id) WHERE h.hh_id = $1 ORDER BY p.relation", pseudonym(head_ids[0]))
    assert [r["relation"] for r in rows] == ["head", "spouse"]
    assert rows[0]["person_id"] == pseudonym(head_ids[0]) and rows[1]["pension_insured"] is False
    dump = fetch(db.name, "SELECT string_agg(t::text, ' ') FROM person t WHERE hh_id = $1", pseudonym(head_ids[0]))
    assert head_ids[0] not in dump[0][0] and "户主0" not in dump[0][0]
    # a member of a household that is not in the registry is refused
    orphan = tmp_path / "orphan.csv"
    orphan.write_text(members.read_text(encoding="utf-8").splitlines()[0] + "\n"
                      "某人,211224199001019999,999999999999999999,户主,男,1970,普通劳动力,是,是\n", encoding="utf-8")
    bad = imp(db, "persons", orphan, mapping=mapping, partial=True)
    assert bad.error_count == 1 and bad.errors[0].field == "hh_id" and "no household" in bad.errors[0].reason
