"""Jobs of OGC API - Processes: submitted, queued and run by procrastinate, executed in a killable child, dismissed.
The job rows are in ``store``, the inputs are resolved by ``inputs``, the results published by ``publish``.

A job's life: ``accepted`` → ``running`` → ``successful`` | ``failed``; ``dismissed`` at any time by its owner.
Synchronous executions are jobs too (recorded, same limits), run in the request instead of the queue.
A worker that stops while running a job (restart, crash) stops sending heartbeats; the job is then failed
with that reason by whichever worker notices (at start-up and periodically). Queued jobs stay queued in
PostgreSQL and run when a worker is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import procrastinate
import psycopg_pool
from procrastinate.jobs import Status
from pydantic import BaseModel
from sqlalchemy import text
from starlette.requests import Request

from app.analysis.spatial import AnalysisError
from app.auth import SIGN_IN
from app.db import translated_errors
from app.errors import (
    DatabaseUnavailable,
    DomainError,
    Forbidden,
    InvalidParameter,
    ServiceBusy,
    Unauthorized,
    is_unavailable,
)
from app.models.codes import ROLE_RANK, Role, allowed
from app.processes import inputs as job_inputs
from app.processes import publish, store
from app.processes.base import NETWORK_COSTS, DatabaseJob, Outcome, Process
from app.processes.data import (
    CollectionRef,
    InlineFeatures,
    big_ints_as_floats,
)
from app.processes.registry import REGISTRY_ROLE, RegistryRef
from app.processes.runner import JobCrashed, JobStopped, JobTimeout, run_isolated, warm_up
from app.repositories import results as results_repo
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
        # A job taken less than stalled_after_s ago had a live worker then: after a database outage the worker's
        # heartbeat row is stale until its next beat, and a job it has just taken must not be failed for that
        if run_id and await store.started_within(rt.app.state.engine, uuid.UUID(run_id), s.stalled_after_s):
            continue
        with contextlib.suppress(Exception):
            await rt.queue.job_manager.finish_job_by_id_async(job.id, Status.FAILED, delete_job=False)
        if run_id and await _run_again(rt, uuid.UUID(run_id), s.attempts):
            continue
        if run_id:
            n += await store.finish_if_open(rt.app.state.engine, uuid.UUID(run_id), "failed",
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


SET_QUEUE_JOB = text("UPDATE analysis_run SET queue_job_id = :j WHERE run_id = :id")


async def _defer(queue: procrastinate.App, run_id: uuid.UUID) -> int:
    """Put a recorded run on the job queue; the queue's job id."""
    return await queue.configure_task("tpa:run", queue=QUEUE).defer_async(run_id=str(run_id))


async def _run_again(rt: Runtime, run_id: uuid.UUID, attempts: int) -> bool:
    """Queue a job whose worker died again, for another worker, while it has attempts left. Safe because a job
    writes its results in one transaction at its end: a killed attempt leaves nothing behind."""
    engine = rt.app.state.engine
    async with engine.begin() as conn:
        row = (await conn.execute(text(
            "UPDATE analysis_run SET status = 'accepted', started = NULL, updated = now(), message = "
            "'queued again for another worker: the worker running it stopped (attempt ' || attempts || ' of ' "
            "|| :max || ')' "
            "WHERE run_id = :id AND mode = 'async' AND status IN ('accepted', 'running') AND attempts < :max "
            "RETURNING attempts"), {"id": run_id, "max": attempts})).first()
        if row is None:
            return False
        try:
            job_id = await _defer(rt.queue, run_id)
        except Exception:  # noqa: BLE001 (the queue is away: the job fails as before, in this transaction's stead)
            await conn.rollback()
            return False
        await conn.execute(SET_QUEUE_JOB, {"j": job_id, "id": run_id})
    log.warning("job %s queued again after its worker stopped (attempt %d of %d)", run_id, row[0], attempts)
    return True


async def watch_interrupted(rt: Runtime) -> None:
    every = max(rt.app.state.settings.processes.stalled_after_s / 2, 1.0)
    while True:
        try:
            await fail_interrupted(rt)
        except Exception as exc:  # the database may be away for a while; try again later
            log.warning("checking interrupted jobs failed: %s", type(exc).__name__)
        await asyncio.sleep(every)


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
    await process.authorize(request.app, inputs, role)
    result_role: Role | None = None
    payload = inputs.model_dump(mode="json")  # explicit nulls kept: they may override a default
    inline = False
    for name, path, value in process.data_values(inputs):
        if isinstance(value, CollectionRef):
            href, needed = await job_inputs.check_ref(request, name, value, role)
            _replace(payload, path, {"href": href})
            if ROLE_RANK[needed] > ROLE_RANK[result_role]:
                result_role = needed
        elif isinstance(value, RegistryRef):
            await job_inputs.check_registry(request, name, value, role)
            _replace(payload, path, {**_at(payload, path), "region": value.region})
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
            job_id = await _defer(queue, run_id)
        except Exception:  # queue not opened at start-up, or the database went away
            await store.finish_if_open(request.app.state.engine, run_id, "failed", "the job could not be queued")
            raise DatabaseUnavailable("The job queue is not available; try again later or execute synchronously.",
                                      jobID=str(run_id)) from None
        async with request.app.state.engine.begin() as conn:
            await conn.execute(SET_QUEUE_JOB, {"j": job_id, "id": run_id})
    else:
        await _execute_in_slot(request.app, run_id)
    run = await store.get_run(request.app.state.engine, run_id)
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
        await store.finish_if_open(app.state.engine, run_id, "failed", "not started: every execution slot was busy")
        raise ServiceBusy("Every synchronous execution slot is busy; try again shortly or execute asynchronously "
                          "(Prefer: respond-async).", jobID=str(run_id)) from None
    try:
        await execute(app, run_id, sync=True)
    finally:
        slots.release()


async def execute(app: Any, run_id: uuid.UUID, sync: bool = False) -> None:
    engine = app.state.engine
    async with engine.begin() as conn:
        row = (await conn.execute(text(
            "UPDATE analysis_run SET status = 'running', started = now(), updated = now(), attempts = attempts + 1 "
            "WHERE run_id = :id AND status = 'accepted' "
            "RETURNING kind, params, owner, owner_role::text AS owner_role, time_limit_s"),
            {"id": run_id})).mappings().first()
    if row is None:
        return  # dismissed (or already taken) before it started
    process = store.process_of(row)
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
        if process.in_database:
            await _execute_in_database(app, run_id, process, inputs, params, role, row, started, dismissed)
            return
        t0 = time.perf_counter()
        data = await job_inputs.resolve(app, process, inputs, role, row["owner"])
        run_inputs = await job_inputs.with_region_crs(app, inputs, params["inputs"], data)
        limit = float(row["time_limit_s"] or app.state.settings.processes.time_limit_s)
        t_net = time.perf_counter()
        if getattr(inputs, "cost", None) == "network":  # travel times on the road network, computed here
            try:
                async with asyncio.timeout(limit):
                    data[NETWORK_COSTS] = await job_inputs.network_costs(
                        app, process, process.Inputs.model_validate(run_inputs), data)
            except TimeoutError:
                raise JobTimeout(f"the time limit of {limit:g} s was reached (travel times)") from None
        t1 = time.perf_counter()
        outcome: Outcome = await run_isolated(
            process.id, run_inputs, data, app.state.settings.processes.solver_threads,
            max(limit - (time.perf_counter() - t_net), 0.1), dismissed)
        t2 = time.perf_counter()
        await publish.publish_results(app, run_id, process, {**params, "inputs": run_inputs}, data, outcome, started)
        log.info("job %s (%s): inputs %.2f s, analysis %.2f s, publishing %.2f s", run_id, process.id, t1 - t0,
                 t2 - t1, time.perf_counter() - t2)
    except AnalysisError as exc:
        await store.finish_if_open(engine, run_id, "failed", f"invalid input: {exc}")
    except JobTimeout as exc:
        await store.finish_if_open(engine, run_id, "failed", str(exc))
    except JobStopped:
        pass
    except JobCrashed as exc:
        log.error("job %s crashed: %s", run_id, exc)
        await store.finish_if_open(engine, run_id, "failed", str(exc))
    except asyncio.CancelledError:
        await asyncio.shield(store.finish_if_open(engine, run_id, "failed", "interrupted: the service stopped "
                                                  "while the job was running; execute the process again"))
        raise
    except Exception as exc:  # recorded on the job; the traceback goes to the log
        if is_unavailable(exc):
            log.warning("job %s: the database became unavailable (%s)", run_id, type(exc).__name__)
            reason = "the database became unavailable while the job was running; execute the process again"
            if sync:  # the caller is waiting: answer 503 now (the row is failed now or by the interrupted-check)
                with contextlib.suppress(Exception):
                    await store.finish_if_open(engine, run_id, "failed", reason)
                raise DatabaseUnavailable("The database became unavailable during the execution; try again.",
                                          jobID=str(run_id)) from None
            await _finish_when_possible(engine, run_id, reason)
        else:
            log.exception("job %s failed", run_id)
            await store.finish_if_open(engine, run_id, "failed", f"{type(exc).__name__}: {exc}")


async def _execute_in_database(app: Any, run_id: uuid.UUID, process: Process, inputs: BaseModel,
                               params: dict[str, Any], role: Role | None, row: Any, started: dt.datetime,
                               dismissed: Callable[[], Awaitable[bool]]) -> None:
    """A process on the service's tables, in this worker within the job's time limit (its writes are one
    transaction of their own: a time limit before it commits leaves nothing written); its pure part, if any, in
    the analysis child like every analysis."""
    limit = float(row["time_limit_s"] or app.state.settings.processes.time_limit_s)
    deadline = time.monotonic() + limit
    t0 = time.perf_counter()

    async def analyse(data: dict[str, Any]) -> Outcome:
        return await run_isolated(process.id, inputs.model_dump(mode="json"), data,
                                  app.state.settings.processes.solver_threads,
                                  max(deadline - time.monotonic(), 0.1), dismissed)

    job = DatabaseJob(app, run_id, role, row["owner"], analyse)
    try:
        async with asyncio.timeout(limit):
            outcome = await process.run_in_database(job, inputs)
    except TimeoutError:
        raise JobTimeout(f"the time limit of {limit:g} s was reached") from None
    except DomainError as exc:  # bad input found on the data (no records that year, a rule that does not parse)
        if exc.status >= 500:
            raise
        raise AnalysisError(exc.detail) from None
    await publish.publish_results(app, run_id, process, params, {}, outcome, started)
    log.info("job %s (%s): %.2f s in the database", run_id, process.id, time.perf_counter() - t0)


async def _finish_when_possible(engine: Any, run_id: uuid.UUID, message: str, patience_s: float = 600.0) -> None:
    """Record the failure once the database is back (a job must not stay 'running' after an outage); if it
    stays away longer than ``patience_s``, the stalled-job check of a later worker records it."""
    delay, waited = 1.0, 0.0
    while True:
        try:
            await store.finish_if_open(engine, run_id, "failed", message)
            return
        except Exception as exc:
            if not is_unavailable(exc) or waited >= patience_s:
                log.warning("job %s: could not record its failure (%s)", run_id, type(exc).__name__)
                return
        await asyncio.sleep(delay)
        waited += delay
        delay = min(delay * 2, 15.0)


async def watch_expired(rt: Runtime) -> None:
    """The job worker's periodic task: delete expired results (every ``results_prune_every_s``)."""
    every = rt.app.state.settings.processes.results_prune_every_s
    while True:
        try:
            jobs_done, tables = await results_repo.prune_expired(rt.app.state.engine)
            if jobs_done:
                log.info("deleted the expired results of %d job(s) (%d tables)", jobs_done, tables)
                await publish.recheck_catalog(rt.app)
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
        await results_repo.drop_results(conn, [run["run_id"]])
        job_id = await conn.scalar(text("SELECT queue_job_id FROM analysis_run WHERE run_id = :id"),
                                   {"id": run["run_id"]})
    await publish.recheck_catalog(app)
    if job_id is not None and getattr(app.state, "queue", None) is not None:
        with contextlib.suppress(Exception):
            await app.state.queue.job_manager.cancel_job_by_id_async(job_id, abort=True)


def _at(payload: Any, path: tuple[str | int, ...]) -> Any:
    for key in path:
        payload = payload[key]
    return payload


def _replace(payload: Any, path: tuple[str | int, ...], value: Any) -> None:
    """Put ``value`` at ``path`` of the inputs as recorded (a data input by its checked reference)."""
    _at(payload, path[:-1])[path[-1]] = value
