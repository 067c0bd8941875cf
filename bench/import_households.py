"""Import benchmark: a registry CSV of N households through `tpa import households`, against ogr2ogr.

    .venv/bin/python bench/import_households.py [--rows 1000000]

1. creates the database ``tpa_bench_import`` afresh (migrated, demo region loaded for its 1,200 villages);
2. writes a synthetic registry export (Chinese headers and labels, ``app.demo.registry_export``);
3. runs ``tpa import households`` with ``examples/mappings/households-zh.yaml`` (mapping, pseudonyms,
   validation of every field and constraint, upsert) under ``/usr/bin/time -v`` for wall time and peak RSS;
4. loads the same CSV with GDAL's ``ogr2ogr`` (COPY into a plain text table: no mapping, no validation) as
   the peer, in the same run;
5. writes ``bench/results-import.md``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PG = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
DB = "tpa_bench_import"
KEY = "bench-pseudonym-key-not-a-secret"


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def psql(sql: str, db: str = DB) -> str:
    return sh(["psql", f"{PG}/{db}", "-Atqc", sql]).stdout.strip()


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stderr) of a command under /usr/bin/time -v."""
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], env=env, text=True, capture_output=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1)) / 1024
    return wall, rss, proc.stderr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    env = {**os.environ, "DATABASE_URL": f"{PG}/{DB}", "TPA_PSEUDONYM_KEY": KEY, "COLUMNS": "200"}
    psql(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)', "postgres")
    psql(f'CREATE DATABASE "{DB}"', "postgres")
    sh([str(ROOT / ".venv/bin/tpa"), "db", "upgrade"], env=env)
    print("loading the demo region (villages) …", flush=True)
    sh([str(ROOT / ".venv/bin/tpa"), "demo", "load"], env=env)
    villages = psql("SELECT string_agg(code, ',') FROM village").split(",")

    from app.demo.registry_export import write_registry_csv

    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "registry.csv"
        t0 = time.perf_counter()
        write_registry_csv(csv_path, args.rows, villages, seed=2026)
        size_mb = csv_path.stat().st_size / 1e6
        print(f"wrote {args.rows:,} rows ({size_mb:.0f} MB) in {time.perf_counter() - t0:.1f} s", flush=True)
        before = int(psql("SELECT count(*) FROM household"))
        wall, rss, err = timed([str(ROOT / ".venv/bin/tpa"), "import", "households", str(csv_path), "--region",
                                "tieling-demo", "--mapping", str(ROOT / "examples/mappings/households-zh.yaml"),
                                "--partial"], env)
        phases = re.search(r"\(([\d,]+) rows/s\): ([^\n]*)", err)
        imported = int(psql("SELECT count(*) FROM household")) - before
        assert imported == args.rows, f"{imported} rows imported"
        print(f"tpa import: {wall:.1f} s, peak RSS {rss:.0f} MB ({phases.group(2) if phases else ''})", flush=True)
        ogr_wall, ogr_rss, _ = timed(
            ["ogr2ogr", "-f", "PostgreSQL", f"PG:dbname={DB} host=127.0.0.1 user=postgres", str(csv_path),
             "-nln", "peer_registry", "-overwrite", "--config", "PG_USE_COPY", "YES", "-lco", "FID=line"], env)
        loaded = int(psql("SELECT count(*) FROM peer_registry"))
        assert loaded == args.rows, f"ogr2ogr loaded {loaded} rows"
        print(f"ogr2ogr: {ogr_wall:.1f} s, peak RSS {ogr_rss:.0f} MB", flush=True)

    out = ROOT / "bench" / "results-import.md"
    out.write_text(
        "# Import benchmark (`bench/import_households.py`)\n\n"
        f"{args.rows:,} households from a {size_mb:.0f} MB CSV (Chinese headers and labels), two cores.\n\n"
        "| tool | what it does | wall time | rows/s | peak RSS |\n|---|---|---|---|---|\n"
        f"| tpa import households | mapping, value maps, HMAC pseudonyms, every field and constraint validated, "
        f"upsert in one transaction | {wall:.1f} s | {args.rows / wall:,.0f} | {rss:.0f} MB |\n"
        f"| ogr2ogr (GDAL) | COPY into a text table, no validation | {ogr_wall:.1f} s | {args.rows / ogr_wall:,.0f} | "
        f"{ogr_rss:.0f} MB |\n\n"
        f"Ratio tpa / ogr2ogr wall time: {wall / ogr_wall:.2f}. Phases of the tpa import: "
        f"{phases.group(2) if phases else 'n/a'}.\n", encoding="utf-8")
    print(f"wrote {out}")
    psql(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)', "postgres")


if __name__ == "__main__":
    main()
