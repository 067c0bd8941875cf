"""Fuzzing the whole API from its own OpenAPI document with Schemathesis (positive and negative cases, every
operation), against the service under uvicorn on a copy of the demo database.

Passes only when: no 5xx at all (counted by the server itself, from /metrics), every error is a problem
document (tests/fuzz_hooks.py), and responses, status codes, content types and headers match the document.
``make test`` runs a short pass; ``make long`` runs ``TPA_FUZZ_EXAMPLES=…`` for 10,000+ requests.

Checks left out, and why:
- positive_data_acceptance: a schema-valid request may rightly get 404 (random collection, feature or job ids)
  or 401/403 (restricted layers), so "valid → 2xx" does not hold for this API;
- ignored_auth: authentication is optional by design (public layers are readable without a key);
- use_after_free: a dismissed job keeps answering with its status ("dismissed"), as OGC API - Processes
  describes and tests/test_processes.py checks; only its results and collections are removed.
One Schemathesis worker: with several threads, CPython 3.11.7's ``ast.parse`` (used by Hypothesis to describe
strategies) can fail with "AST constructor recursion depth mismatch" (CPython gh-106905), a crash of the tool.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import _make_keys
from load import answers_by_status
from tpa_testing import ThrowawayDatabase, serve

from app.models.codes import Role

# timing-sensitive (time limits, load, outages): run alone, after the parallel part of make test (Makefile)
pytestmark = pytest.mark.serial

TESTS = Path(__file__).resolve().parent
EXAMPLES = int(os.environ.get("TPA_FUZZ_EXAMPLES", "6"))
SEED = os.environ.get("TPA_FUZZ_SEED", "20261129")
MIN_REQUESTS = int(os.environ.get("TPA_FUZZ_MIN_REQUESTS", "1000"))
MAX_TIME = os.environ.get("TPA_FUZZ_MAX_TIME")  # seconds: fuzzing repeats until spent (make long)
EXCLUDED = "positive_data_acceptance,ignored_auth,use_after_free"


@pytest.fixture(scope="module")
def fuzz_database(demo_template: str):
    with ThrowawayDatabase("fuzz", template=demo_template) as db:
        yield db


def test_fuzz_whole_api(fuzz_database: ThrowawayDatabase, tmp_path: Path) -> None:
    admin = _make_keys(fuzz_database.url)[Role.admin]
    env = {"TPA_API_RATE_LIMIT_PER_MINUTE": "0", "TPA_PROCESSES_SYNC_TIME_LIMIT_S": "30"}
    with serve(fuzz_database.url, extra_env=env, log_path=str(tmp_path / "server.log")) as url:
        before = answers_by_status(url)
        cmd = [str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(TESTS / "schemathesis.toml"),
               "run", f"{url}/api", "--checks", "all",
               "--exclude-checks", EXCLUDED, "-n", str(EXAMPLES), "--seed", SEED, "-w", "1", "--no-color",
               "--phases", "examples,coverage,fuzzing", "--suppress-health-check", "all",
               "--request-timeout", "60", "-H", f"Authorization: Bearer {admin}"]
        if MAX_TIME:
            cmd += ["--max-time", MAX_TIME]
        proc = subprocess.run(cmd, env={**os.environ, "SCHEMATHESIS_HOOKS": "fuzz_hooks",
                                        "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
                              capture_output=True, text=True, timeout=3600, cwd=tmp_path)
        after = answers_by_status(url)
    counted = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    total = int(sum(counted.values()))
    server_errors = int(sum(n for k, n in counted.items() if k.startswith("5") and k != "503"))
    unavailable = int(counted.get("503", 0))
    summary = (f"fuzzed requests: {total}; 5xx: {server_errors + unavailable} (503: {unavailable}); by status: "
               + ", ".join(f"{k}: {int(v)}" for k, v in sorted(counted.items()) if v))
    print(summary)
    if os.environ.get("TPA_REPORT_DIR"):
        Path(os.environ["TPA_REPORT_DIR"]).mkdir(parents=True, exist_ok=True)
        (Path(os.environ["TPA_REPORT_DIR"]) / "fuzz.txt").write_text(summary + "\n" + proc.stdout[-4000:])
    assert server_errors + unavailable == 0, summary + "\n" + proc.stdout[-6000:]
    assert proc.returncode == 0, proc.stdout[-12000:] + proc.stderr[-3000:]
    assert total >= MIN_REQUESTS, summary
