"""Jobs of OGC API - Processes: stored in ``analysis_run``, queued and run by procrastinate, results
published as tables in schema ``results`` (OGC collections).

A job's life: ``accepted`` → ``running`` → ``successful`` | ``failed``; ``dismissed`` at any time by its owner.
Synchronous executions are jobs too (recorded, same limits), run in the request instead of the queue.
A worker that stops while running a job (restart, crash) stops sending heartbeats; the job is then failed
with that reason by whichever worker notices (at start-up and periodically). Queued jobs stay queued in
PostgreSQL and run when a worker is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import logging
import re
import time
import uuid
from dataclasses import dataclass
from importlib import metadata
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import orjson
import procrastinate
import psycopg_pool
import shapely
from procrastinate.jobs import Status
from pydantic import BaseModel
from sqlalchemy import text
from starlette.requests import Request

from app.analysis.spatial import AnalysisError, representative_lonlat
from app.auth import SIGN_IN
from app.db import translated_errors
from app.errors import (
    DatabaseUnavailable,
    DomainError,
    Forbidden,
    InvalidParameter,
    NotFound,
    ServiceBusy,
    Unauthorized,
    is_unavailable,
)
from app.layers.catalog import Catalog, Layer, LiveCatalog
from app.layers.query import PageLimits, Params, items_query
from app.models.codes import ROLE_RANK, Role, allowed
from app.processes import styles as st
from app.processes.catalogue import PROCESSES
from app.processes.data import (
    CollectionRef,
    InlineFeatures,
    Units,
    big_ints_as_floats,
    units_from_geojson,
    units_from_table,
)
from app.processes.definitions import LayerOut, Outcome, Process
from app.processes.registry import REGISTRY_ROLE, RegistryRef, cause_table, load_registry
from app.processes.runner import JobCrashed, JobStopped, JobTimeout, run_isolated, warm_up
from app.repositories import regions as regions_repo
from app.settings import Settings, libpq_url

log = logging.getLogger("tpa.jobs")
QUEUE = "processes"
LIBRARIES = ("esda", "libpysal", "spopt", "pulp", "access", "ortools", "numpy", "scipy", "shapely", "pyproj", "h3")


class JobFailed(DomainError):
    status, code, title = 500, "JobFailed", "The job failed"


# ----------------------------------------------------------------------------------------- queue
def make_queue(settings: Settings) -> procrastinate.App:
    queue = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=libpq_url(settings.db.url)))
    queue.task(name="tpa:run", queue=QUEUE, pass_context=True)(run_job)  # registered per App
    return queue


async def open_queue(queue: procrastinate.App, settings: Settings) -> psycopg_pool.AsyncConnectionPool:
    """Open the queue on a pool of our own that connects in the background: procrastinate's own pool waits
    (30 s) for the database at start-up, and the service must start (and answer 503s) without it."""
    pool = psycopg_pool.AsyncConnectionPool(
        libpq_url(settings.db.url), min_size=1, max_size=4, open=False, timeout=settings.db.pool_timeout_s,
        kwargs={"application_name": "tpa-gis-jobs", "connect_timeout": max(1, int(settings.db.connect_timeout_s))},
        check=psycopg_pool.AsyncConnectionPool.check_connection)
    await pool.open(wait=False)
    await queue.open_async(pool=pool)
    return pool


@dataclass
class Runtime:
    """What a worker needs: the FastAPI app's state (settings, engine, pools, catalogue) and the queue."""

    app: Any
    queue: procrastinate.App


def set_runtime(rt: Runtime) -> None:
    """Attach the runtime to its queue: the task finds the service it runs for through the job's context
    (several apps may live in one process, e.g. in tests)."""
    rt.queue.tpa_runtime = rt  # type: ignore[attr-defined]


async def run_job(context: procrastinate.JobContext, run_id: str) -> None:
    rt: Runtime | None = getattr(context.app, "tpa_runtime", None)
    if rt is None:
        raise RuntimeError("no job runtime attached to this queue")
    await execute(rt.app, uuid.UUID(run_id))


async def run_worker(rt: Runtime, retry_s: float = 5.0) -> None:
    """Run the procrastinate worker; if the database goes away, start it again once it is back."""
    s = rt.app.state.settings.processes
    await asyncio.get_running_loop().run_in_executor(None, warm_up)
    while True:
        try:
            await rt.queue.run_worker_async(
                queues=[QUEUE], concurrency=s.concurrency, wait=True, install_signal_handlers=False,
                update_heartbeat_interval=s.heartbeat_s, stalled_worker_timeout=s.stalled_after_s,
                listen_notify=True, name="tpa-worker", delete_jobs="successful", shutdown_graceful_timeout=1.0,
            )
            return
        except Exception as exc:  # connection lost or refused: the queue lives in PostgreSQL, try again
            log.warning("job worker stopped (%s); starting again in %g s", type(exc).__name__, retry_s)
            await asyncio.sleep(retry_s)


async def fail_interrupted(rt: Runtime) -> int:
    """Fail the jobs whose worker stopped sending heartbeats, and synchronous runs older than their limit."""
    s = rt.app.state.settings.processes
    n = 0
    for job in await rt.queue.job_manager.get_stalled_jobs(seconds_since_heartbeat=s.stalled_after_s):
        run_id = job.task_kwargs.get("run_id")
        with contextlib.suppress(Exception):
            await rt.queue.job_manager.finish_job_by_id_async(job.id, Status.FAILED, delete_job=False)
        if run_id:
            n += await _finish_if_open(rt.app.state.engine, uuid.UUID(run_id), "failed",
                                       "interrupted: the worker running the job stopped (service restart or "
                                       "crash); execute the process again")
    async with rt.app.state.engine.begin() as conn:
        res = await conn.execute(text(
            "UPDATE analysis_run SET status = 'failed', finished = now(), updated = now(), message = "
            "'interrupted: the service stopped during a synchronous execution' "
            "WHERE mode = 'sync' AND status IN ('accepted', 'running') "
            "AND created < now() - make_interval(secs => :limit)"), {"limit": s.sync_time_limit_s * 2 + 60})
        n += res.rowcount or 0
    if n:
        log.warning("failed %d interrupted job(s)", n)
    return n


async def watch_interrupted(rt: Runtime) -> None:
    every = max(rt.app.state.settings.processes.stalled_after_s / 2, 1.0)
    while True:
        try:
            await fail_interrupted(rt)
        except Exception as exc:  # the database may be away for a while; try again later
            log.warning("checking interrupted jobs failed: %s", type(exc).__name__)
        await asyncio.sleep(every)


# ----------------------------------------------------------------------------------------- store
_RUN_COLS = ("run_id, kind, params, status::text AS status, message, progress, created, started, finished, updated, "
             "owner, owner_role::text AS owner_role, mode, time_limit_s, result, expires, pruned")


async def get_run(engine: Any, run_id: uuid.UUID) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        row = (await conn.execute(text(f"SELECT {_RUN_COLS} FROM analysis_run WHERE run_id = :id AND kind LIKE "
                                       "'process:%'"), {"id": run_id})).mappings().first()
    return _run_row(row) if row else None


def _run_row(row: Any) -> dict[str, Any]:
    """A job row; its JSON read back from jsonb, where 1e300 became the integer 10**300 (not JSON-writable)."""
    out = dict(row)
    out["params"], out["result"] = big_ints_as_floats(out["params"]), big_ints_as_floats(out["result"])
    return out


async def list_runs(engine: Any, owner: str | None, limit: int, offset: int, status: list[str] | None,
                    process_ids: list[str] | None) -> tuple[list[dict[str, Any]], int]:
    where = ["kind LIKE 'process:%'"]
    args: dict[str, Any] = {"limit": limit, "offset": offset}
    if owner is not None:
        where.append("owner = :owner")
        args["owner"] = owner
    if status:
        where.append("status::text = ANY(:status)")
        args["status"] = status
    if process_ids:
        where.append("kind = ANY(:kinds)")
        args["kinds"] = [f"process:{p}" for p in process_ids]
    sql = " AND ".join(where)
    async with engine.connect() as conn:
        rows = (await conn.execute(text(f"SELECT {_RUN_COLS} FROM analysis_run WHERE {sql} "
                                        "ORDER BY created DESC, run_id LIMIT :limit OFFSET :offset"), args)).mappings()
        rows = [_run_row(r) for r in rows]
        total = int(await conn.scalar(text(f"SELECT count(*) FROM analysis_run WHERE {sql}"), args) or 0)
    return rows, total


async def _finish_if_open(engine: Any, run_id: uuid.UUID, status: str, message: str) -> int:
    async with engine.begin() as conn:
        res = await conn.execute(text(
            "UPDATE analysis_run SET status = CAST(:status AS run_status), message = :message, finished = now(), "
            "updated = now() WHERE run_id = :id AND status IN ('accepted', 'running')"),
            {"status": status, "message": message[:2000], "id": run_id})
    return res.rowcount or 0


def process_of(run: Any) -> Process:
    """The process a job row (``kind`` = ``process:<id>``) runs."""
    return PROCESSES[run["kind"].removeprefix("process:")]


def can_see(run: dict[str, Any], actor: str | None, role: Role | None) -> bool:
    """Owners see their jobs; admins see every job; an anonymous job is reachable by its (secret) id."""
    return role == Role.admin or run["owner"] is None or run["owner"] == actor


async def visible_run(request: Request, job_id: str, actor: str | None, role: Role | None) -> dict[str, Any]:
    try:
        run_id = uuid.UUID(job_id)
    except ValueError:
        raise NotFound(f"There is no job '{job_id}'.") from None
    async with translated_errors():
        run = await get_run(request.app.state.engine, run_id)
    if run is not None and not can_see(run, actor, role) and role is None:
        raise Unauthorized(f"The job '{job_id}' belongs to a signed-in user: {SIGN_IN}")
    if run is None or not can_see(run, actor, role):
        raise NotFound(f"There is no job '{job_id}'.")  # other users' jobs are not revealed
    return run


# ----------------------------------------------------------------------------------------- inputs
_ITEMS = re.compile(r"/collections/([^/]+)/items")


def parse_ref(request_base: str | None, root_path: str, href: str) -> tuple[str, str]:
    """(collection id, query string) of a reference to our own items; other hosts are refused (no SSRF)."""
    parts = urlsplit(href)
    if parts.scheme or parts.netloc:
        base = urlsplit(request_base or "")
        if parts.scheme not in ("http", "https") or not base.netloc or parts.netloc != base.netloc:
            raise InvalidParameter(f"Only collections of this service can be referenced, not {href!r}.")
    path = parts.path
    if root_path and path.startswith(root_path):
        path = path[len(root_path):]
    m = _ITEMS.fullmatch(path)
    if m is None:
        raise InvalidParameter(f"A reference must point to /collections/{{id}}/items of this service: {href!r}.")
    return m.group(1), parts.query


def _ref_params(query: str, limit: int) -> Params:
    """The query of a reference, read as the items query of up to ``limit`` features (its own paging dropped)."""
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in ("f", "limit", "cursor")]
    return Params([*pairs, ("limit", str(limit))])


async def _ref_layer(live: LiveCatalog, collection_id: str) -> tuple[Catalog, Layer | None]:
    async with translated_errors():
        return await live.current(), await live.find(collection_id)


async def check_ref(request: Request, name: str, ref: CollectionRef, role: Role | None) -> tuple[str, Role | None]:
    """Validate a reference at submission (collection, access, query); returns the relative href."""
    cid, query = parse_ref(str(request.base_url), request.app.state.settings.api.root_path, ref.href)
    catalog, layer = await _ref_layer(request.app.state.catalog, cid)
    if layer is None or layer.hidden_from(role, getattr(request.state, "actor", None)):
        raise InvalidParameter(f"{name}: there is no collection '{cid}'.")
    if not allowed(role, layer.required_role):
        if role is None:
            raise Unauthorized(f"{name}: authentication is required for the collection '{cid}'.")
        raise Forbidden(f"{name}: the role '{role.value}' may not read the collection '{cid}'.")
    items_query(_ref_params(query, 1), catalog, layer, role, PageLimits(1, 1))
    return f"/collections/{cid}/items" + (f"?{query}" if query else ""), layer.required_role


async def check_registry(request: Request, name: str, ref: RegistryRef, role: Role | None) -> None:
    """The registry is restricted like the households collection; the region must exist."""
    if not allowed(role, REGISTRY_ROLE):
        if role is None:
            raise Unauthorized(f"{name}: authentication is required for the household registry.")
        raise Forbidden(f"{name}: the role '{role.value}' may not read the household registry.")
    async with translated_errors(), request.app.state.engine.connect() as conn:
        found = await regions_repo.find_region(conn, ref.region)
        if found is None:
            known = ", ".join(f"{rid} ({title})" for rid, title in await regions_repo.known_regions(conn))
            raise InvalidParameter(f"{name}: there is no region '{ref.region}'. Give a region's id (see /regions): "
                                   f"{known or 'no region is loaded yet'}.")
        ref.region = found  # a display name given: the id from here on


async def fetch_ref(app: Any, name: str, href: str, role: Role | None, max_features: int,
                    actor: str | None = None) -> Units:
    from app.repositories import features as repo

    cid, query = parse_ref(None, "", href)
    catalog, layer = await _ref_layer(app.state.catalog, cid)
    if layer is None or not layer.readable_by(role, actor):
        raise AnalysisError(f"{name}: the collection '{cid}' is not available.")
    # the page size of /items (api.max_limit) does not bound a process input: read up to max_features + 1
    n = max_features + 1
    q = items_query(_ref_params(query, n), catalog, layer, role, PageLimits(n, n))
    texts: list[str] = []
    async for rows, _ in repo.stream_page(app.state.read_pool, layer, role, q):
        texts += [r[0] for r in rows]
        if len(texts) > max_features:
            raise AnalysisError(f"{name}: more than {max_features} features; narrow the reference with a filter.")
    features = orjson.loads("[" + ",".join(texts) + "]")
    if any(f.get("geometry") is None for f in features):
        rows = [{"id": f.get("id"), **(f.get("properties") or {})} for f in features]
        return units_from_table(name, rows)
    return units_from_geojson(name, features, href)


async def resolve(app: Any, process: Process, inputs: BaseModel, role: Role | None,
                  actor: str | None = None) -> dict[str, Units]:
    max_features = app.state.settings.processes.max_input_features
    data: dict[str, Units] = {}
    for name in process.data_inputs:
        value = getattr(inputs, name, None)
        if value is None or not isinstance(value, InlineFeatures | CollectionRef | RegistryRef | list):
            continue
        if isinstance(value, RegistryRef):
            data.update(await load_registry(app, value, role))
        elif isinstance(value, CollectionRef):
            data[name] = await fetch_ref(app, name, value.href, role, max_features, actor)
        elif isinstance(value, InlineFeatures):
            if len(value.features) > max_features:
                raise AnalysisError(f"{name}: more than {max_features} features.")
            data[name] = units_from_geojson(name, [f.model_dump() for f in value.features], "inline")
        else:
            if len(value) > max_features:
                raise AnalysisError(f"{name}: more than {max_features} rows.")
            data[name] = units_from_table(name, value)
    if "cause_table" in process.context_data and "cause_table" not in data:
        async with app.state.engine.connect() as conn:
            data["cause_table"] = await cause_table(conn, None)
    return data


async def with_region_crs(app: Any, inputs: BaseModel, raw: dict[str, Any], data: dict[str, Units]
                          ) -> dict[str, Any]:
    """The inputs an analysis runs with: a process that measures in a metric CRS (``analysis_crs``) and was not
    given one uses the CRS its region declares (``tpa region create --crs``), not the UTM zone of the data — a
    country spanning several zones is measured in one national CRS. The region is the one named by the registry
    input, or by the ``region`` property of every feature, or, for inline data, the one whose administrative
    areas contain the data's centre. Without a single region, the UTM zone of the data is used."""
    if "analysis_crs" not in type(inputs).model_fields or getattr(inputs, "analysis_crs", None) is not None:
        return raw
    regions: set[str] = set()
    for value in (getattr(inputs, n, None) for n in type(inputs).model_fields):
        if isinstance(value, RegistryRef):
            regions.add(value.region)
    units = [u for u in data.values() if u.name != "cause_table"]
    for u in units:
        regions |= {str(p["region"]) for p in u.props if p.get("region") is not None}
    async with app.state.engine.connect() as conn:
        if regions:
            found = await regions_repo.analysis_crs_of(conn, sorted(regions))
            crs = set(found.values())
        else:
            points = [representative_lonlat(u.geoms) for u in units if u.geoms is not None and len(u.geoms)]
            if not points:
                return raw
            centre = np.concatenate(points).mean(axis=0)
            crs = {epsg for _, epsg in await regions_repo.regions_at(conn, float(centre[0]), float(centre[1]))}
    return {**raw, "analysis_crs": crs.pop()} if len(crs) == 1 else raw


# ----------------------------------------------------------------------------------------- submit
async def submit(request: Request, process: Process, inputs: BaseModel, outputs: dict[str, Any] | None,
                 role: Role | None, actor: str | None, run_async: bool, publish: bool = False) -> dict[str, Any]:
    """Record a job (after checking its references) and queue it, or run it now; returns the run row.

    Its results expire after ``results_anonymous_ttl_h`` (no key) or ``results_ttl_days``; ``publish`` (analysts
    and administrators) lists them in ``/collections`` and keeps them until they are unpublished."""
    settings: Settings = request.app.state.settings
    if publish and not allowed(role, Role.analyst):
        if role is None:
            raise Unauthorized(f"Publishing results needs an analyst or administrator key: {SIGN_IN}")
        raise Forbidden(f"The role '{role.value}' may not publish results.")
    result_role: Role | None = None
    payload = inputs.model_dump(mode="json")  # explicit nulls kept: they may override a default
    inline = False
    for name in process.data_inputs:
        value = getattr(inputs, name, None)
        if isinstance(value, CollectionRef):
            href, needed = await check_ref(request, name, value, role)
            payload[name] = {"href": href}
            if ROLE_RANK[needed] > ROLE_RANK[result_role]:
                result_role = needed
        elif isinstance(value, RegistryRef):
            await check_registry(request, name, value, role)
            payload[name]["region"] = value.region
            if ROLE_RANK[REGISTRY_ROLE] > ROLE_RANK[result_role]:
                result_role = REGISTRY_ROLE
        elif isinstance(value, InlineFeatures | list):
            inline = True
    if inline and ROLE_RANK[role] > ROLE_RANK[result_role]:
        result_role = role  # inline data is the submitter's: its results are readable at their role
    run_id = uuid.uuid4()
    limit = settings.processes.time_limit_s if run_async else min(settings.processes.sync_time_limit_s,
                                                                    settings.processes.time_limit_s)
    params = {"inputs": payload, "outputs": outputs or {}, "result_role": result_role.value if result_role else None,
              "publish": publish, "owner_name": getattr(request.state, "key_name", None)}
    keep = None if publish else dt.timedelta(hours=settings.processes.results_anonymous_ttl_h) if role is None \
        else dt.timedelta(days=settings.processes.results_ttl_days)
    try:
        params_json = orjson.dumps(params).decode()
        input_hash = hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()
    except TypeError:  # orjson (and jsonb) take integers up to 64 bits
        raise InvalidParameter("inputs: integers beyond the 64-bit range are not accepted.") from None
    async with request.app.state.engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO analysis_run (run_id, kind, params, input_hash, status, owner, owner_role, mode, "
            "time_limit_s, expires) VALUES (:id, :kind, CAST(:params AS jsonb), :hash, 'accepted', :owner, "
            "CAST(:role AS api_role), :mode, :limit, now() + CAST(:keep AS interval))"),
            {"id": run_id, "kind": f"process:{process.id}", "params": params_json, "hash": input_hash,
             "owner": actor, "role": role.value if role else None, "mode": "async" if run_async else "sync",
             "limit": limit, "keep": keep})
    if run_async:
        queue: procrastinate.App = request.app.state.queue
        try:
            job_id = await queue.configure_task("tpa:run", queue=QUEUE).defer_async(run_id=str(run_id))
        except Exception:  # queue not opened at start-up, or the database went away
            await _finish_if_open(request.app.state.engine, run_id, "failed", "the job could not be queued")
            raise DatabaseUnavailable("The job queue is not available; try again later or execute synchronously.",
                                      jobID=str(run_id)) from None
        async with request.app.state.engine.begin() as conn:
            await conn.execute(text("UPDATE analysis_run SET queue_job_id = :j WHERE run_id = :id"),
                               {"j": job_id, "id": run_id})
    else:
        await _execute_in_slot(request.app, run_id)
    run = await get_run(request.app.state.engine, run_id)
    assert run is not None
    return run


# ----------------------------------------------------------------------------------------- execute
async def _execute_in_slot(app: Any, run_id: uuid.UUID) -> None:
    """A synchronous execution, at most ``sync_concurrency`` at once per process: analyses are CPU-bound, and
    beyond the cores every one of them only gets slower (under load they ran past clients' time-outs). A request
    that waits longer than ``sync_queue_timeout_s`` for a slot gets 503 + Retry-After."""
    slots: asyncio.Semaphore = app.state.sync_slots
    try:
        async with asyncio.timeout(app.state.settings.processes.sync_queue_timeout_s):
            await slots.acquire()
    except TimeoutError:
        await _finish_if_open(app.state.engine, run_id, "failed", "not started: every execution slot was busy")
        raise ServiceBusy("Every synchronous execution slot is busy; try again shortly or execute asynchronously "
                          "(Prefer: respond-async).", jobID=str(run_id)) from None
    try:
        await execute(app, run_id, sync=True)
    finally:
        slots.release()


def _library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


async def execute(app: Any, run_id: uuid.UUID, sync: bool = False) -> None:
    engine = app.state.engine
    async with engine.begin() as conn:
        row = (await conn.execute(text(
            "UPDATE analysis_run SET status = 'running', started = now(), updated = now() "
            "WHERE run_id = :id AND status = 'accepted' "
            "RETURNING kind, params, owner, owner_role::text AS owner_role, time_limit_s"),
            {"id": run_id})).mappings().first()
    if row is None:
        return  # dismissed (or already taken) before it started
    process = process_of(row)
    # jsonb keeps numbers as numeric: 1e300 comes back as the integer 10**300, which no later JSON step takes
    params = big_ints_as_floats(row["params"])
    role = Role(row["owner_role"]) if row["owner_role"] else None

    async def dismissed() -> bool:
        async with engine.connect() as c:
            return (await c.scalar(text("SELECT status::text FROM analysis_run WHERE run_id = :id"),
                                   {"id": run_id})) == "dismissed"

    started = dt.datetime.now(dt.UTC)
    try:
        inputs = process.Inputs.model_validate(params["inputs"])
        t0 = time.perf_counter()
        data = await resolve(app, process, inputs, role, row["owner"])
        run_inputs = await with_region_crs(app, inputs, params["inputs"], data)
        t1 = time.perf_counter()
        outcome: Outcome = await run_isolated(
            process.id, run_inputs, data, app.state.settings.processes.solver_threads,
            float(row["time_limit_s"] or app.state.settings.processes.time_limit_s), dismissed)
        t2 = time.perf_counter()
        await _publish(app, run_id, process, {**params, "inputs": run_inputs}, data, outcome, started)
        log.info("job %s (%s): inputs %.2f s, analysis %.2f s, publishing %.2f s", run_id, process.id, t1 - t0,
                 t2 - t1, time.perf_counter() - t2)
    except AnalysisError as exc:
        await _finish_if_open(engine, run_id, "failed", f"invalid input: {exc}")
    except JobTimeout as exc:
        await _finish_if_open(engine, run_id, "failed", str(exc))
    except JobStopped:
        pass
    except JobCrashed as exc:
        log.error("job %s crashed: %s", run_id, exc)
        await _finish_if_open(engine, run_id, "failed", str(exc))
    except asyncio.CancelledError:
        await asyncio.shield(_finish_if_open(engine, run_id, "failed", "interrupted: the service stopped while the "
                                             "job was running; execute the process again"))
        raise
    except Exception as exc:  # recorded on the job; the traceback goes to the log
        if is_unavailable(exc):
            log.warning("job %s: the database became unavailable (%s)", run_id, type(exc).__name__)
            reason = "the database became unavailable while the job was running; execute the process again"
            if sync:  # the caller is waiting: answer 503 now (the row is failed now or by the interrupted-check)
                with contextlib.suppress(Exception):
                    await _finish_if_open(engine, run_id, "failed", reason)
                raise DatabaseUnavailable("The database became unavailable during the execution; try again.",
                                          jobID=str(run_id)) from None
            await _finish_when_possible(engine, run_id, reason)
        else:
            log.exception("job %s failed", run_id)
            await _finish_if_open(engine, run_id, "failed", f"{type(exc).__name__}: {exc}")


async def _finish_when_possible(engine: Any, run_id: uuid.UUID, message: str, patience_s: float = 600.0) -> None:
    """Record the failure once the database is back (a job must not stay 'running' after an outage); if it
    stays away longer than ``patience_s``, the stalled-job check of a later worker records it."""
    delay, waited = 1.0, 0.0
    while True:
        try:
            await _finish_if_open(engine, run_id, "failed", message)
            return
        except Exception as exc:
            if not is_unavailable(exc) or waited >= patience_s:
                log.warning("job %s: could not record its failure (%s)", run_id, type(exc).__name__)
                return
        await asyncio.sleep(delay)
        waited += delay
        delay = min(delay * 2, 15.0)


def _column_name(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9_]", "_", name.lower())[:50] or "value"
    if not re.match(r"[a-z_]", base):
        base = "_" + base
    out, i = base, 1
    while out in taken or out in ("fid", "geom"):
        i += 1
        out = f"{base}_{i}"
    taken.add(out)
    return out


def _geometry_type(geoms: np.ndarray) -> str:
    names = {shapely.get_type_id(g) for g in geoms}
    kinds = {0: "Point", 1: "LineString", 3: "Polygon", 4: "MultiPoint", 5: "MultiLineString", 6: "MultiPolygon"}
    if len(names) == 1 and next(iter(names)) in kinds:
        return kinds[next(iter(names))]
    return "Geometry"


async def _publish(app: Any, run_id: uuid.UUID, process: Process, params: dict[str, Any], data: dict[str, Units],
                   outcome: Outcome, started: dt.datetime) -> None:
    """Store every spatial output as a table in ``results``, register it as a collection (listed in ``/collections``
    only when the execution asked to publish it) with its style and context, and mark the job successful — one
    transaction, so a job's results appear whole or not at all."""
    result_role = params.get("result_role")
    collections: dict[str, str] = {}
    short = run_id.hex[:8]
    provenance = {
        "process": process.id, "version": process.version, "inputs": {
            k: (v if k not in process.data_inputs or not isinstance(v, dict | list) or "href" in v or "region" in v else
                {"inline": True, "features": len(data[k]) if k in data else None,
                 "sha256": hashlib.sha256(orjson.dumps(v, option=orjson.OPT_SORT_KEYS)).hexdigest()})
            for k, v in params["inputs"].items()},
        "seed": params["inputs"].get("seed"), "libraries": _library_versions(),
        "started": started.isoformat(), "finished": dt.datetime.now(dt.UTC).isoformat(),
    }
    context = {"process": process.id, "process_title": process.title, "job": str(run_id),
               "inputs": inputs_summary(process, provenance["inputs"]), "owner": params.get("owner_name"),
               "created": started.isoformat()}
    async with app.state.engine.begin() as conn:
        ancestry = await _ancestry(conn, outcome.layers.values())
        for out_id, layer in outcome.layers.items():
            layer = with_context(layer, ancestry, data)
            table = f"r_{run_id.hex}_{out_id.replace('-', '_')}"[:63]
            layer_id = f"{process.id}-{short}-{out_id}"
            spec = process.outputs[out_id]
            style = st.resolve(spec.style, layer.columns[spec.style["property"]][1]
                               if spec.style and spec.style["property"] in layer.columns else None)
            await _write_table(conn, table, layer)
            await conn.execute(text(
                "INSERT INTO published_layer (layer_id, schema_name, table_name, title, description, id_column, "
                "geometry_column, required_role, run_id, keywords, listed, style, context) VALUES (:lid, 'results', "
                ":t, :title, :descr, 'fid', :geom, CAST(:role AS api_role), :run, :kw, :listed, "
                "CAST(:style AS jsonb), CAST(:context AS jsonb))"),
                {"lid": layer_id, "t": table, "title": f"{layer.title} (job {short})",
                 "descr": f"{layer.description}. Output '{out_id}' of the process {process.id}, job {run_id}.",
                 "geom": "geom" if layer.geoms is not None else None, "role": result_role, "run": run_id,
                 "kw": [RESULT_KEYWORD, process.id, f"job {run_id}"], "listed": bool(params.get("publish")),
                 "style": orjson.dumps(style).decode() if style else None,
                 "context": orjson.dumps({**context, "output": out_id}).decode()})
            collections[out_id] = layer_id
        result = {"values": outcome.values, "collections": collections, "provenance": provenance}
        await conn.execute(text(
            "UPDATE analysis_run SET status = 'successful', finished = now(), updated = now(), progress = 100, "
            "message = 'done', result = CAST(:result AS jsonb), result_table = :rt WHERE run_id = :id "
            "AND status = 'running'"),
            {"result": orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY).decode(), "id": run_id,
             "rt": (f"r_{run_id.hex}" if collections else None)})
    await _recheck_catalog(app)


RESULT_KEYWORD = "analysis result"


def inputs_summary(process: Process, inputs: dict[str, Any]) -> str:
    """The inputs of a job in one line, for people choosing among results: data inputs by reference (or region, or
    inline count), other inputs as given."""
    parts = []
    for k, v in sorted(inputs.items(), key=lambda kv: (kv[0] not in process.data_inputs, kv[0])):
        if v is None or v == {} or v == []:
            continue
        if isinstance(v, dict) and "href" in v:
            parts.append(f"{k}: {v['href']}")
        elif isinstance(v, dict) and "region" in v:
            parts.append(f"{k}: registry of {v['region']}" + (f" ({', '.join(v['statuses'])})"
                                                               if v.get("statuses") else ""))
        elif isinstance(v, dict) and v.get("inline"):
            parts.append(f"{k}: {v.get('features')} features inline")
        elif k in process.data_inputs:
            continue
        else:
            parts.append(f"{k}: {v if isinstance(v, str) else orjson.dumps(v).decode()}")
    text_ = "; ".join(parts)
    return text_ if len(text_) <= 400 else text_[:399] + "…"


async def _ancestry(conn: Any, layers: Any) -> dict[str, dict[str, Any]]:
    """Names and parents of every administrative unit a result row stands for (one query for all outputs)."""
    keys: set[str] = set()
    for layer in layers:
        values = layer.columns[layer.unit_column][1] if layer.unit_column else layer.ids
        if len(values) <= MAX_CONTEXT_ROWS:
            keys |= {str(v) for v in values if v is not None}
    return await regions_repo.admin_ancestry(conn, sorted(keys))


MAX_CONTEXT_ROWS = 200_000


def with_context(layer: LayerOut, ancestry: dict[str, dict[str, Any]], data: dict[str, Units]) -> LayerOut:
    """The layer with the name of each row's unit and the names of its parents (prefecture, county, township …) in
    columns of their own, first: from the administrative units of the database, else the ``name`` of the input
    feature. Rows of households (pseudonyms) match neither and get no names."""
    units = layer.columns[layer.unit_column][1] if layer.unit_column else layer.ids
    keys = [None if u is None else str(u) for u in units]
    given = {uid: p.get("name") for u in data.values() for uid, p in zip(u.ids, u.props, strict=True)
             if isinstance(p.get("name"), str)}
    names = [(ancestry.get(k) or {}).get("name") or given.get(k) if k is not None else None for k in keys]
    extra: dict[str, tuple[str, Any]] = {}
    if any(n is not None for n in names) and "name" not in layer.columns:
        extra["name"] = ("text", names)
    for level in (2, 3, 4, 5):
        col = regions_repo.LEVEL_COLUMNS[level]
        values = [(ancestry.get(k) or {}).get("ancestors", {}).get(col) if k is not None else None for k in keys]
        if any(v is not None for v in values) and col not in layer.columns:
            extra[col] = ("text", values)
    if not extra:
        return layer
    return dataclasses.replace(layer, columns={**extra, **layer.columns})


async def _recheck_catalog(app: Any) -> None:
    """This process's catalogue as of now, so a result link handed out next answers at once (other processes
    look again when asked for a collection they do not know)."""
    catalog = getattr(app.state, "catalog", None)
    if catalog is not None:
        try:
            await catalog.current(force=True)
        except Exception as exc:  # the results are committed; the next request reads the catalogue again
            log.warning("catalogue not refreshed after a job (%s)", type(exc).__name__)
            catalog.invalidate()


async def _write_table(conn: Any, table: str, layer: LayerOut) -> None:
    taken: set[str] = set()
    cols = [(_column_name(name, taken), pg, values) for name, (pg, values) in layer.columns.items()]
    ddl = ", ".join(f'"{c}" {pg}' for c, pg, _ in cols)
    geom_sql = ""
    if layer.geoms is not None:
        geom_sql = f", geom geometry({_geometry_type(layer.geoms)}, 4326)"
    await conn.execute(text(f'CREATE TABLE results."{table}" (fid text PRIMARY KEY{", " + ddl if ddl else ""}'
                            f"{geom_sql})"))
    cols = [(c, pg, _values(pg, values)) for c, pg, values in cols]
    if layer.ids:
        await _copy_rows(conn, table, layer, cols)
    if layer.geoms is not None:
        await conn.execute(text(f'CREATE INDEX ON results."{table}" USING gist (geom)'))


def _values(pg: str, values: Any) -> list[Any]:
    """A column as Python values for COPY: arrays to lists (NaN and ±inf → null), JSON text for json(b)."""
    if isinstance(values, np.ndarray):
        out = values.tolist()
        if values.dtype.kind == "f":
            for i in np.flatnonzero(~np.isfinite(values)):
                out[i] = None
        return out
    if pg in ("json", "jsonb"):
        return [v if v is None or isinstance(v, str) else orjson.dumps(v).decode() for v in values]
    return list(values)


async def _copy_rows(conn: Any, table: str, layer: LayerOut, cols: list[tuple[str, str, list[Any]]]) -> None:
    """Rows by COPY (asyncpg, binary): ten times faster than INSERTs for the large Stage 2 layers. asyncpg has
    no codec for PostGIS types, so one passing EWKB through as bytes is set for the COPY and removed after
    (the connection goes back to the pool as it was)."""
    names = ["fid"] + [c for c, _, _ in cols]
    columns = [list(layer.ids)] + [values for _, _, values in cols]
    geom = layer.geoms is not None
    if geom:
        names.append("geom")
        columns.append(list(shapely.to_wkb(shapely.set_srid(layer.geoms, 4326), include_srid=True)))
    raw = (await conn.get_raw_connection()).driver_connection
    if geom:
        await raw.set_type_codec("geometry", schema="public", format="binary", encoder=bytes, decoder=bytes)
    try:
        await raw.copy_records_to_table(table, schema_name="results", records=zip(*columns, strict=True),
                                        columns=names)
    finally:
        if geom:
            await raw.reset_type_codec("geometry", schema="public")


async def drop_results(conn: Any, run_ids: list[uuid.UUID]) -> int:
    """Delete the result collections of these jobs and their tables (in the caller's transaction)."""
    tables = (await conn.execute(text(
        "DELETE FROM published_layer WHERE run_id = ANY(:ids) RETURNING schema_name, table_name"),
        {"ids": run_ids})).all()
    for schema, table in tables:
        await conn.execute(text(f'DROP TABLE IF EXISTS "{schema}"."{table}"'))
    return len(tables)


async def prune_expired(engine: Any, now: dt.datetime | None = None, limit: int = 500) -> tuple[int, int]:
    """Delete the results of jobs whose expiry has passed (as of ``now``): their tables and collections. The job
    stays, marked ``pruned`` (its results answer 404 "expired"). Returns (jobs, tables)."""
    jobs_done = tables_done = 0
    while True:
        async with engine.begin() as conn:
            ids = list((await conn.execute(text(
                "SELECT run_id FROM analysis_run WHERE pruned IS NULL AND expires <= coalesce(:now, now()) "
                "ORDER BY expires LIMIT :limit FOR UPDATE SKIP LOCKED"), {"now": now, "limit": limit})).scalars())
            if not ids:
                return jobs_done, tables_done
            tables_done += await drop_results(conn, ids)
            await conn.execute(text("UPDATE analysis_run SET pruned = now(), updated = now() WHERE run_id = ANY(:ids)"),
                               {"ids": ids})
            jobs_done += len(ids)


async def watch_expired(rt: Runtime) -> None:
    """The job worker's periodic task: delete expired results (every ``results_prune_every_s``)."""
    every = rt.app.state.settings.processes.results_prune_every_s
    while True:
        try:
            jobs_done, tables = await prune_expired(rt.app.state.engine)
            if jobs_done:
                log.info("deleted the expired results of %d job(s) (%d tables)", jobs_done, tables)
                await _recheck_catalog(rt.app)
        except Exception as exc:  # the database may be away; try again next time
            log.warning("pruning expired results failed: %s", type(exc).__name__)
        await asyncio.sleep(every)


async def dismiss(app: Any, run: dict[str, Any]) -> None:
    """Dismiss a job: stop it (queued or running) and remove its published results."""
    engine = app.state.engine
    async with translated_errors(), engine.begin() as conn:
        await conn.execute(text(
            "UPDATE analysis_run SET status = 'dismissed', message = 'dismissed', updated = now(), "
            "finished = coalesce(finished, now()) WHERE run_id = :id"), {"id": run["run_id"]})
        await drop_results(conn, [run["run_id"]])
        job_id = await conn.scalar(text("SELECT queue_job_id FROM analysis_run WHERE run_id = :id"),
                                   {"id": run["run_id"]})
    await _recheck_catalog(app)
    if job_id is not None and getattr(app.state, "queue", None) is not None:
        with contextlib.suppress(Exception):
            await app.state.queue.job_manager.cancel_job_by_id_async(job_id, abort=True)
