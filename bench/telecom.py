"""Telecom benchmark: 50 million events (20,000 devices × 30 days) through the definitions, DuckDB vs Polars.

    .venv/bin/python bench/telecom.py [--devices 20000] [--spark]

1. generates the events with ``app.telecom.synthetic`` around 1,200 synthetic village anchors (no database);
2. DuckDB (``app.telecom.engine``): read + H3 + local time, then every definition (presence, home, day cell,
   radius of gyration, residents, OD, gyration by home), then suppression with roll-up; wall time per stage,
   peak RSS of the process (measured in a child process so each engine's peak is its own);
3. Polars (``app.telecom.polars_ref``), the same definitions from the same normalised events, as the peer;
4. writes ``bench/results-telecom.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def child(kind: str, events: str, norm: str) -> None:
    from app.telecom import engine
    from app.telecom.privacy import suppress_rollup

    p = engine.Period.month("2024-03")
    stages: dict[str, float] = {}
    t = time.perf_counter()
    if kind in ("duckdb", "spark"):
        if kind == "duckdb":
            runner = engine.DuckDBRunner(memory_limit="3GB", temp_dir=Path(norm).parent / "spill")
        else:
            from app.telecom.spark import SparkRunner

            runner = SparkRunner(master="local[2]", memory="6g")
        n = runner.load_events([Path(events)], res=8, offset_s=engine.fixed_offset_seconds("Asia/Shanghai", p),
                               period=p)
        stages["read, H3, local time"] = time.perf_counter() - t
        t = time.perf_counter()
        engine.definitions(runner, min_nights=10)
        stages["definitions"] = time.perf_counter() - t
        t = time.perf_counter()
        suppress_rollup(runner.materialize, membership="SELECT dev, home_cell AS cell FROM home", keys=(), k=15,
                        base_res=8, floor_res=5, out="pub_res")
        suppress_rollup(runner.materialize, membership="SELECT DISTINCT dev, cell, "
                        "CAST(FLOOR((t % 86400) / 3600) AS INTEGER) AS hour FROM ev", keys=("hour",), k=15,
                        base_res=8, floor_res=5, out="pub_presence")
        stages["suppression"] = time.perf_counter() - t
        if kind == "duckdb":
            runner.con.execute(f"COPY ev TO '{norm}' (FORMAT parquet)")
        homes = runner.rows("SELECT count(*) FROM home")[0][0]
        runner.close()
    else:
        import polars as pl

        from app.telecom.polars_ref import definitions

        ev = pl.read_parquet(norm)
        stages["read normalised events"] = time.perf_counter() - t
        t = time.perf_counter()
        out = definitions(ev, min_nights=10)
        stages["definitions"] = time.perf_counter() - t
        n, homes = ev.height, out["home"].height
    # VmHWM: this process's own peak (ru_maxrss would carry the parent's peak across exec)
    status = Path("/proc/self/status").read_text()
    peak = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024
    print(json.dumps({"events": n, "homes": homes, "stages": stages, "peak_mb": peak}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=20_000)
    ap.add_argument("--child", nargs=3)
    ap.add_argument("--spark", action="store_true", help="also run the Spark engine (local[2]); needs .[spark]")
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    import numpy as np

    from app.telecom import engine
    from app.telecom.synthetic import generate_events

    rng = np.random.default_rng(5)
    anchors = np.column_stack([rng.uniform(41.9, 43.2, 1200), rng.uniform(123.3, 124.9, 1200)])
    p = engine.Period.month("2024-03")
    with tempfile.TemporaryDirectory(prefix="tpa-bench-") as tmp:
        events = Path(tmp) / "events.parquet"
        t = time.perf_counter()
        # rates tuned so that 20,000 devices × 31 days give about 50 million events
        n = generate_events(events, anchors, devices=args.devices, period=p,
                            utc_offset_s=engine.fixed_offset_seconds("Asia/Shanghai", p), seed=11,
                            night_rate=32.0, work_rate=32.0, other_rate=35.0)
        print(f"generated {n:,} events in {time.perf_counter() - t:.0f} s", flush=True)
        norm = str(Path(tmp) / "normalised.parquet")
        results = {}
        kinds = ["duckdb", "polars"] + (["spark"] if args.spark else [])
        for kind in kinds:
            t = time.perf_counter()
            done = subprocess.run([sys.executable, __file__, "--child", kind, str(events), norm], capture_output=True,
                                  text=True, check=True)
            res = json.loads(done.stdout.strip().splitlines()[-1])
            res["wall"] = time.perf_counter() - t
            results[kind] = res
            print(kind, json.dumps(res), flush=True)
    d, pl_ = results["duckdb"], results["polars"]
    assert d["homes"] == pl_["homes"], "the engines disagree on the number of homes"
    lines = [
        "# Telecom benchmark (`bench/telecom.py`)", "",
        f"{n:,} events, {args.devices:,} devices, March 2024 (31 days), H3 res 8, two cores. "
        f"Homes found: {d['homes']:,} (equal in every engine).", "",
        "| engine | what it runs | wall (process) | stages | peak RSS |", "|---|---|---|---|---|",
        "| DuckDB (tpa-gis) | read Parquet, hash ids, H3 (polars-h3 on Arrow batches), local time, all definitions, "
        f"suppression with roll-up | {d['wall']:.1f} s | " + ", ".join(f"{k} {v:.1f} s" for k, v in d["stages"].items())
        + f" | {d['peak_mb']:.0f} MB |",
        f"| Polars (peer) | all definitions from the already normalised events | {pl_['wall']:.1f} s | "
        + ", ".join(f"{k} {v:.1f} s" for k, v in pl_["stages"].items()) + f" | {pl_['peak_mb']:.0f} MB |", "",
        "Ratio of the definition stage, DuckDB / Polars: "
        f"{d['stages']['definitions'] / pl_['stages']['definitions']:.2f}.",
        "",
    ]
    if "spark" in results:
        sp = results["spark"]
        assert sp["homes"] == d["homes"], "Spark and DuckDB disagree on the number of homes"
        lines[-3:-3] = [f"| Spark local[2] (same SQL) | as DuckDB | {sp['wall']:.1f} s | "
                        + ", ".join(f"{k} {v:.1f} s" for k, v in sp["stages"].items())
                        + " | (JVM not measured) |"]
    (ROOT / "bench" / "results-telecom.md").write_text("\n".join(lines), encoding="utf-8")
    print("wrote bench/results-telecom.md")


if __name__ == "__main__":
    main()
