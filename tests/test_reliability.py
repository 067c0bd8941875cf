"""Reliability: overload protection, limits, observability, load, and a PostgreSQL restart under load.

The load and outage tests drive the service under uvicorn with wrk (bench/load.py, bench/load.lua); the outage
runs on a PostgreSQL cluster of the test's own (tpa_testing.PrivateCluster) so it can be restarted. ``make test``
runs short loads; ``make long`` runs 64 clients for 60 s (TPA_LOAD_SECONDS, TPA_LOAD_CLIENTS) and writes the
figures to TPA_REPORT_DIR.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
from pathlib import Path

import httpx
import load
import pytest
from conftest import _make_keys
from tpa_testing import PrivateCluster, ThrowawayDatabase, _dsn, serve, settings_for

from app.main import create_app
from app.models.codes import Role
from app.settings import ApiSettings

# timing-sensitive (time limits, load, outages): run alone, after the parallel part of make test (Makefile)
pytestmark = pytest.mark.serial

LOAD_SECONDS = int(os.environ.get("TPA_LOAD_SECONDS", "8"))
LOAD_CLIENTS = int(os.environ.get("TPA_LOAD_CLIENTS", "64"))
VILLAGE = "/collections/villages/items/211202001001"


def _report(name: str, data: dict) -> None:
    print(name, json.dumps(data))
    if os.environ.get("TPA_REPORT_DIR"):
        Path(os.environ["TPA_REPORT_DIR"]).mkdir(parents=True, exist_ok=True)
        (Path(os.environ["TPA_REPORT_DIR"]) / f"{name}.json").write_text(json.dumps(data, indent=1))


def _problem(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["code"] == code and body["detail"]
    return body


class _App:
    """The app in-process (lifespan run), for tests that reach into its pools."""

    def __init__(self, settings):
        self.app = create_app(settings)

    async def __aenter__(self):
        self._life = self.app.router.lifespan_context(self.app)
        await self._life.__aenter__()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://testserver")
        return self

    async def __aexit__(self, *exc):
        await self.client.aclose()
        await self._life.__aexit__(*exc)


# ------------------------------------------------------------------------------------------------ overload
async def test_busy_pool_answers_503_with_retry_after_not_a_queue(demo_database):
    settings = settings_for(demo_database.url, pool_size=1, pool_timeout_s=0.3)
    async with _App(settings) as a:
        assert (await a.client.get(VILLAGE)).status_code == 200
        async with a.app.state.read_pool.acquire():  # every read connection is in use
            t0 = time.perf_counter()
            r = await a.client.get(VILLAGE)
            waited = time.perf_counter() - t0
            _problem(r, 503, "ServiceBusy")
            assert r.headers["retry-after"] == str(settings.api.retry_after_s)
            assert waited < 2.0, "a request waits at most the queue timeout"
            metrics = (await a.client.get("/metrics")).text
            assert 'tpa_db_pool_connections{pool="read",state="in_use"} 1.0' in metrics
        assert (await a.client.get(VILLAGE)).status_code == 200  # free again: served again


async def test_busy_execution_slots_answer_503(edit_database):
    settings = settings_for(edit_database.url)  # a private copy: executions publish results
    settings.processes.sync_concurrency, settings.processes.sync_queue_timeout_s = 1, 0.3
    body = {"inputs": {"features": {"href": "/collections/village-poverty/items?suppressed=false&limit=50"},
                       "variable": "poverty_rate", "permutations": 9}}
    async with _App(settings) as a:
        assert (await a.client.post("/processes/spatial-autocorrelation/execution", json=body)).status_code == 200
        await a.app.state.sync_slots.acquire()  # the only slot is taken
        try:
            r = await a.client.post("/processes/spatial-autocorrelation/execution", json=body)
            assert _problem(r, 503, "ServiceBusy")["jobID"] and "retry-after" in r.headers
        finally:
            a.app.state.sync_slots.release()
        assert (await a.client.post("/processes/spatial-autocorrelation/execution", json=body)).status_code == 200


async def test_request_body_and_time_limits(demo_database):
    settings = settings_for(demo_database.url)
    settings.api = ApiSettings(max_body_bytes=4096, request_timeout_s=0.5)
    async with _App(settings) as a:
        body = {"inputs": {"features": {"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [123.0 + i / 1000, 42.0]},
             "properties": {"x": i}} for i in range(200)]}, "variable": "x"}}
        _problem(await a.client.post("/processes/spatial-autocorrelation/execution", json=body), 413,
                 "PayloadTooLarge")

        async def chunks():  # no Content-Length: counted while it arrives
            for _ in range(10):
                yield b" " * 1000

        r = await a.client.post("/processes/spatial-autocorrelation/execution", content=chunks(),
                                headers={"Content-Type": "application/json"})
        _problem(r, 413, "PayloadTooLarge")

        async def slow():
            await asyncio.sleep(5)

        a.app.add_api_route("/slow-for-the-test", slow)
        t0 = time.perf_counter()
        r = await a.client.get("/slow-for-the-test")
        _problem(r, 503, "RequestTimeout")
        assert "retry-after" in r.headers and time.perf_counter() - t0 < 2
        assert (await a.client.get(VILLAGE)).status_code == 200


async def test_rate_limit_per_key(demo_database, api_keys):
    settings = settings_for(demo_database.url)
    settings.api = ApiSettings(rate_limit_per_minute=60, rate_limit_burst=5)
    analyst, admin = api_keys[Role.analyst], api_keys[Role.admin]
    async with _App(settings) as a:
        codes = [(await a.client.get(VILLAGE, headers={"Authorization": f"Bearer {analyst}"})).status_code
                 for _ in range(7)]
        assert codes[:5] == [200] * 5 and codes[5:] == [429, 429]
        r = await a.client.get(VILLAGE, headers={"Authorization": f"Bearer {analyst}"})
        _problem(r, 429, "TooManyRequests")
        assert 1 <= int(r.headers["retry-after"]) <= 2  # one request a second comes back
        # another key has its own budget; anonymous callers are not limited by default; probes never are
        assert (await a.client.get(VILLAGE, headers={"Authorization": f"Bearer {admin}"})).status_code == 200
        assert [(await a.client.get(VILLAGE)).status_code for _ in range(10)] == [200] * 10
        assert "tpa_http_rejected_total{reason=\"rate_limited\"} 3.0" in (await a.client.get("/metrics")).text
    settings.api = ApiSettings(rate_limit_anonymous_per_minute=60, rate_limit_burst=2)
    async with _App(settings) as a:
        assert [(await a.client.get(VILLAGE)).status_code for _ in range(3)] == [200, 200, 429]
        assert (await a.client.get("/healthz")).status_code == 200


def test_rate_limit_is_one_allowance_across_machines(demo_database):
    """Two instances of the service on one database (two machines behind a load balancer, or two worker
    processes) share a key's allowance: requests alternating between them pass ``burst`` times, not twice that, and
    the allowance comes back at the set rate (the same arithmetic as a token bucket: docs/operations.md). With
    TPA_API_RATE_LIMIT_SHARED=false each instance counts alone, which is the documented N-times arithmetic."""
    keys = iter(_make_keys(demo_database.url).values())
    limits = {"TPA_API_RATE_LIMIT_PER_MINUTE": "60", "TPA_API_RATE_LIMIT_BURST": "3"}

    def alternate(urls: list[str], key: str, n: int) -> list[int]:
        auth = {"Authorization": f"Bearer {key}"}
        return [httpx.get(urls[i % 2] + VILLAGE, headers=auth).status_code for i in range(n)]

    with serve(demo_database.url, extra_env=limits) as one, serve(demo_database.url, extra_env=limits) as two:
        key = next(keys)
        assert alternate([one, two], key, 6) == [200, 200, 200, 429, 429, 429]
        r = httpx.get(two + VILLAGE, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) == 1
        time.sleep(2.2)  # two requests' worth comes back (one a second), not a third
        assert alternate([one, two], key, 3) == [200, 200, 429]
    alone = {**limits, "TPA_API_RATE_LIMIT_SHARED": "false"}
    with serve(demo_database.url, extra_env=alone) as one, serve(demo_database.url, extra_env=alone) as two:
        assert alternate([one, two], next(keys), 8) == [200] * 6 + [429, 429]


async def test_filter_complexity_is_bounded(api):
    tree: dict = {"op": "=", "args": [{"property": "population"}, 1]}
    for _ in range(60):
        tree = {"op": "not", "args": [tree]}
    body = _problem(await api.get("/collections/villages/items", params={"filter": json.dumps(tree),
                                                                          "filter-lang": "cql2-json"}),
                    400, "InvalidParameterValue")
    assert "levels deep" in body["detail"]
    wide = " OR ".join(f"population = {i}" for i in range(600))
    assert "expression nodes" in _problem(await api.get("/collections/villages/items", params={"filter": wide}),
                                          400, "InvalidParameterValue")["detail"]
    # inputs that crash cql2's parser on a normal thread stack (8 MiB) are answered, not fatal to the service
    for crafted in ("NOT " * 9000 + "population = 1", "(" * 3000 + "population = 1" + ")" * 3000,
                    "-" * 9000 + "1 = population"):
        r = await api.get("/collections/villages/items", params={"filter": crafted})
        assert r.status_code in (200, 400), r.text
    assert (await api.get(VILLAGE)).status_code == 200
    r = await api.get("/collections/villages/items", params={"limit": 10**9})
    assert r.status_code == 200 and r.json()["numberReturned"] <= 10_000


# ------------------------------------------------------------------------------------------------ headers
async def test_security_headers_request_id_and_cors(demo_database, api_keys):
    settings = settings_for(demo_database.url)
    settings.api = ApiSettings(cors_origins=["https://portal.example.org"])
    async with _App(settings) as a:
        html = await a.client.get("/collections/villages/items", params={"f": "html", "limit": 5})
        csp = html.headers["content-security-policy"]
        nonce = re.search(r"'nonce-([^']+)'", csp).group(1)
        scripts = re.findall(r"<script([^>]*)>", html.text)
        inline = [s for s in scripts if "src=" not in s]
        assert inline and all(f'nonce="{nonce}"' in s for s in inline)
        assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
        api_html = await a.client.get("/api.html")
        assert re.search(r"'nonce-([^']+)'", api_html.headers["content-security-policy"]).group(1) in api_html.text
        page = await a.client.get("/collections")
        for name, value in (("x-content-type-options", "nosniff"), ("x-frame-options", "DENY"),
                            ("referrer-policy", "no-referrer")):
            assert page.headers[name] == value
        assert re.fullmatch(r"[0-9a-f]{32}", page.headers["x-request-id"])
        mine = await a.client.get("/collections", headers={"X-Request-ID": "portal-42"})
        assert mine.headers["x-request-id"] == "portal-42"
        keyed = await a.client.get(VILLAGE, headers={"Authorization": f"Bearer {api_keys[Role.analyst]}"})
        assert keyed.headers["cache-control"] == "private, no-store"
        pre = await a.client.options("/collections", headers={"Origin": "https://portal.example.org",
                                                               "Access-Control-Request-Method": "GET"})
        assert pre.headers["access-control-allow-origin"] == "https://portal.example.org"
        other = await a.client.get("/collections", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
    async with _App(settings_for(demo_database.url)) as a:  # no origins configured: no CORS at all
        r = await a.client.get("/collections", headers={"Origin": "https://portal.example.org"})
        assert "access-control-allow-origin" not in r.headers


async def test_metrics_in_prometheus_format(api):
    await api.get("/collections")
    await api.get(VILLAGE)
    await api.get("/collections/nothing-here")
    text = (await api.get("/metrics")).text
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(text)}
    routes = {(s.labels["route"], s.labels["status"]) for s in families["tpa_http_requests"].samples}
    assert ("/collections/{collectionId}/items/{featureId}", "200") in routes  # templates, not raw paths
    assert ("/collections/{collectionId}", "404") in routes
    assert any(s.name == "tpa_http_request_duration_seconds_bucket" for s in
               families["tpa_http_request_duration_seconds"].samples)
    pools = {(s.labels["pool"], s.labels["state"]) for s in families["tpa_db_pool_connections"].samples}
    assert {("read", "in_use"), ("read", "max"), ("orm", "in_use"), ("orm", "max")} <= pools
    assert "tpa_jobs" in families


def test_json_logs_carry_the_request_id(demo_database, tmp_path):
    log = tmp_path / "server.log"
    with serve(demo_database.url, extra_env={"TPA_LOG_LEVEL": "INFO"}, log_path=str(log)) as url:
        httpx.get(url + VILLAGE, headers={"X-Request-ID": "trace-7"}, timeout=10)
        httpx.get(url + "/collections/nothing-here", timeout=10)
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    access = [x for x in lines if x.get("logger") == "tpa.access"]
    mine = [x for x in access if x.get("request_id") == "trace-7"]
    assert mine and mine[0]["route"] == "/collections/{collectionId}/items/{featureId}" and mine[0]["status"] == 200
    assert any(x["status"] == 404 and re.fullmatch(r"[0-9a-f]{32}", x["request_id"]) for x in access)
    assert all({"time", "level", "logger", "message"} <= set(x) for x in lines)


# ------------------------------------------------------------------------------------------------ load
def test_load_mix_has_no_errors(demo_template):
    with ThrowawayDatabase("load", template=demo_template) as db, serve(db.url) as url:
        result = load.run(url, LOAD_CLIENTS, LOAD_SECONDS)
    _report("load", result)
    assert result["requests"] > LOAD_SECONDS * 20
    assert sum(result["errors"].values()) == 0, result
    assert set(result["by_status"]) == {"200"}, result


@pytest.fixture(scope="module")
def cluster(demo_template):
    """A private PostgreSQL with a copy of the demo (without the telecom aggregates, not needed here)."""
    with PrivateCluster() as pg:
        url = pg.copy_database(_dsn(demo_template), "tpa", exclude_data=("telecom_agg", "telecom_od"))
        yield pg, url


def _poll(url: str, path: str, stop: threading.Event, out: list) -> None:
    while not stop.is_set():
        try:
            status = httpx.get(url + path, timeout=5).status_code
        except httpx.HTTPError:
            status = 0
        out.append((time.monotonic(), status))
        time.sleep(0.1)


def _outage(samples: list, start: float) -> tuple[float, float]:
    """(seconds /readyz was not 200 after ``start``, seconds from the restart until it was 200 again)."""
    bad = [t for t, s in samples if t >= start and s != 200]
    if not bad:
        return 0.0, 0.0
    back = next(t for t, s in samples if t > bad[-1] and s == 200)
    return back - bad[0], back - start


def test_postgres_restart_under_load(cluster, tmp_path):
    pg, db_url = cluster
    seconds = max(LOAD_SECONDS * 2, 12)
    env = {"TPA_DB_CONNECT_TIMEOUT_S": "2", "TPA_DB_POOL_TIMEOUT_S": "2"}
    log = tmp_path / "server.log"
    with serve(db_url, extra_env=env, log_path=str(log)) as url:
        before = load.answers_by_status(url)
        proc, work = load.start(url, LOAD_CLIENTS, seconds)
        stop, ready = threading.Event(), []
        poller = threading.Thread(target=_poll, args=(url, "/readyz", stop, ready))
        poller.start()
        time.sleep(seconds / 3)
        t_restart = time.monotonic()
        pg.stop("fast")
        time.sleep(1.0)  # the server is away for a moment, as in a real restart
        pg.start()
        t_back = time.monotonic()
        result = load.finish(proc, work, seconds + 120)
        # recovered by itself: the same process serves again, with no restart of the service
        deadline = time.monotonic() + 30
        while httpx.get(url + VILLAGE, timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "the service did not recover"
            time.sleep(0.2)
        time.sleep(0.5)
        stop.set()
        poller.join()
        after = load.answers_by_status(url)
        failing = [line for line in httpx.get(url + "/metrics").text.splitlines()
                   if line.startswith("tpa_http_requests_total") and 'status="5' in line and 'status="503"' not in line]
    by_status = {k: int(after.get(k, 0) - before.get(k, 0)) for k in after if after.get(k, 0) - before.get(k, 0)}
    outage, recovered = _outage(ready, t_restart)
    figures = {**result, "by_status": by_status, "readyz_not_ok_s": round(outage, 2),
               "restart_to_ready_s": round(recovered, 2), "postgres_down_s": round(t_back - t_restart, 2)}
    _report("outage", figures)
    errors = [x for x in log.read_text().splitlines() if '"level":"error"' in x]
    # during the outage: 503 problems, never a 500
    assert set(by_status) <= {"200", "503"}, (figures, errors[-3:], failing)
    assert by_status.get("503", 0) > 0, "the outage was not seen"
    assert any(s == 503 for _, s in ready) and ready[-1][1] == 200
    assert recovered < 30, figures
    assert result["errors"]["connect"] == result["errors"]["read"] == result["errors"]["timeout"] == 0, figures


async def _wait_job(client: httpx.AsyncClient, job: str, headers: dict, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            r = await client.get(f"/jobs/{job}", headers=headers)
            if r.status_code == 200 and r.json()["status"] in ("successful", "failed", "dismissed"):
                return r.json()
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"job {job} did not end"
        await asyncio.sleep(0.3)


async def test_job_running_during_an_outage_fails_with_a_reason_and_runs_again(cluster):
    pg, db_url = cluster
    key = _make_keys(db_url)[Role.analyst]
    headers = {"Authorization": f"Bearer {key}"}
    env = {"TPA_PROCESSES_STALLED_AFTER_S": "10", "TPA_PROCESSES_HEARTBEAT_S": "1"}
    # about 10 s of analysis (99,999 permutations) after reading its input: the database goes away meanwhile
    href = "/collections/village-poverty/items?suppressed=false"
    body = {"inputs": {"features": {"href": href}, "variable": "poverty_rate", "permutations": 99_999}}
    with serve(db_url, extra_env=env) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            r = await client.post("/processes/spatial-autocorrelation/execution", json=body,
                                  headers={**headers, "Prefer": "respond-async"})
            assert r.status_code == 201, r.text
            job = r.json()["jobID"]
            deadline = time.monotonic() + 30
            while (await client.get(f"/jobs/{job}", headers=headers)).json()["status"] == "accepted":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.5)  # its input is read
            pg.stop("fast")  # while it runs
            during = await client.get(f"/jobs/{job}", headers=headers)
            _problem(during, 503, "ServiceUnavailable")
            await asyncio.sleep(15)  # longer than the analysis: its results cannot be published
            pg.start()
            status = await _wait_job(client, job, headers)
            assert status["status"] == "failed", status
            assert "database" in status["message"] or "interrupted" in status["message"], status
            # and it can be run again once the database is back
            body["inputs"]["permutations"] = 99
            r = await client.post("/processes/spatial-autocorrelation/execution", json=body,
                                  headers={**headers, "Prefer": "respond-async"})
            again = await _wait_job(client, r.json()["jobID"], headers)
            assert again["status"] == "successful", again.get("message")  # the reason, not a truncated document
