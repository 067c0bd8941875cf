"""Load run: wrk with bench/load.lua (a realistic mix) against a running service, on loopback.

    python bench/load.py http://127.0.0.1:8000 --clients 64 --seconds 60

Prints one JSON object: wrk's request count, latency percentiles (ms) and errors, plus the answers the server
itself counted by status (from /metrics), so 503s from overload protection are told apart from failures.
A request counts as timed out after 30 s (wrk --timeout; a synchronous execution may take up to 120 s).
wrk comes from Debian's package (scripts/ensure-test-tools.sh installs it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

HERE = Path(__file__).resolve().parent
PROCESS_BODY = {"inputs": {
    "features": {"href": "/collections/village-poverty/items?bbox=123.5,42.0,124.2,42.6&suppressed=false"},
    "variable": "poverty_rate", "permutations": 99}}


def answers_by_status(url: str) -> dict[str, float]:
    """Requests the server counted, by HTTP status (its tpa_http_requests counter)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text):
        if family.name == "tpa_http_requests":
            for sample in family.samples:
                out[sample.labels["status"]] = out.get(sample.labels["status"], 0.0) + sample.value
    return out


def start(url: str, clients: int, seconds: int, threads: int = 2, timeout_s: int = 30,
          headers: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], Path]:
    """Start wrk in the background; returns the process and its working directory."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (scripts/ensure-test-tools.sh installs Debian's package)")
    ids = [f["id"] for f in httpx.get(url + "/collections/villages/items", params={"limit": 300},
                                      timeout=30).json()["features"]]
    work = Path(tempfile.mkdtemp(prefix="tpa-load-"))
    (work / "body.json").write_text(json.dumps(PROCESS_BODY))
    cmd = [wrk, "-t", str(threads), "-c", str(clients), "-d", f"{seconds}s", "--timeout", f"{timeout_s}s",
           "--latency", "-s", str(HERE / "load.lua")]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    cmd += [url, "--", str(work / "body.json"), *ids]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), work


def finish(proc: subprocess.Popen[str], work: Path, timeout: float) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    shutil.rmtree(work, ignore_errors=True)
    line = next((ln for ln in out.splitlines() if ln.startswith("{")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {out[-2000:]} {err[-2000:]}")
    result = json.loads(line)
    result["rps"] = round(result["requests"] / (result["duration_us"] / 1e6), 1)
    return result


def run(url: str, clients: int = 64, seconds: int = 60, threads: int = 2) -> dict[str, Any]:
    before = answers_by_status(url)
    proc, work = start(url, clients, seconds, threads)
    result = finish(proc, work, seconds + 120)
    after = answers_by_status(url)
    result["by_status"] = {k: int(after.get(k, 0) - before.get(k, 0)) for k in sorted(after)
                           if after.get(k, 0) - before.get(k, 0)}
    result["clients"], result["seconds"] = clients, seconds
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    print(json.dumps(run(args.url.rstrip("/"), args.clients, args.seconds, args.threads)))


if __name__ == "__main__":
    main()
