"""The job store: the rows of ``analysis_run`` (one per execution, synchronous or not), read and finished."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import text
from starlette.requests import Request

from app.auth import SIGN_IN
from app.db import translated_errors
from app.errors import (
    NotFound,
    Unauthorized,
)
from app.models.codes import Role
from app.processes.base import Process
from app.processes.catalogue import PROCESSES
from app.processes.data import (
    big_ints_as_floats,
)

log = logging.getLogger("tpa.jobs")
_RUN_COLS = ("run_id, kind, params, status::text AS status, message, progress, created, started, finished, updated, "
             "owner, owner_role::text AS owner_role, mode, time_limit_s, result, expires, pruned")


async def get_run(engine: Any, run_id: uuid.UUID) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        row = (await conn.execute(text(f"SELECT {_RUN_COLS} FROM analysis_run WHERE run_id = :id AND kind LIKE "
                                       "'process:%'"), {"id": run_id})).mappings().first()
    return run_row(row) if row else None


def run_row(row: Any) -> dict[str, Any]:
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
        rows = [run_row(r) for r in rows]
        total = int(await conn.scalar(text(f"SELECT count(*) FROM analysis_run WHERE {sql}"), args) or 0)
    return rows, total


async def finish_if_open(engine: Any, run_id: uuid.UUID, status: str, message: str) -> int:
    async with engine.begin() as conn:
        res = await conn.execute(text(
            "UPDATE analysis_run SET status = CAST(:status AS run_status), message = :message, finished = now(), "
            "updated = now() WHERE run_id = :id AND status IN ('accepted', 'running')"),
            {"status": status, "message": message[:2000], "id": run_id})
    return res.rowcount or 0


async def started_within(engine: Any, run_id: uuid.UUID, seconds: float) -> bool:
    """Whether the run started (or, not started yet, was created) less than ``seconds`` ago."""
    async with engine.connect() as conn:
        return bool(await conn.scalar(text(
            "SELECT coalesce(started, created) > now() - make_interval(secs => :s) FROM analysis_run "
            "WHERE run_id = :id"), {"s": seconds, "id": run_id}))


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

