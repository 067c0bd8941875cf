"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text

from app.db import current_revisions, migration_heads
from app.deps import EngineDep, SettingsDep

log = logging.getLogger("tpa.health")
router = APIRouter(tags=["Health"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: str
    migrations: str
    detail: str | None = None


@router.get("/healthz", operation_id="get_health", response_model=Health, summary="The process is alive")
async def get_health() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    operation_id="get_readiness",
    response_model=Readiness,
    summary="The database is reachable and migrated to the head revision",
    responses={503: {"model": Readiness, "description": "Database unreachable or migrations behind"}},
)
async def get_readiness(engine: EngineDep, settings: SettingsDep) -> JSONResponse:
    heads = migration_heads()
    try:
        async with asyncio.timeout(settings.db.connect_timeout_s + 1):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            revisions = await current_revisions(engine)
    except Exception as exc:  # any failure to reach the database means "not ready"
        log.warning("readiness: database unreachable (%s)", type(exc).__name__)
        body = Readiness(status="unavailable", database="unreachable", migrations="unknown",
                         detail="The database cannot be reached.")
        return JSONResponse(body.model_dump(), status_code=503)
    if revisions != heads:
        body = Readiness(
            status="unavailable", database="ok", migrations="behind",
            detail=f"Database at revision {sorted(revisions) or 'none'}, code expects {sorted(heads)}; "
            "run 'tpa db upgrade'.",
        )
        return JSONResponse(body.model_dump(), status_code=503)
    return JSONResponse(Readiness(status="ok", database="ok", migrations="head").model_dump())


JOB_COUNTS_SQL = text("SELECT status::text, count(*) FROM analysis_run WHERE kind LIKE 'process:%' GROUP BY 1")


@router.get(
    "/metrics",
    operation_id="get_metrics",
    summary="Metrics in the Prometheus text format",
    description="Request counts and latencies by route, requests refused (rate limit, size, time, busy pool), "
    "database pool usage and job counts by status.",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def get_metrics(request: Request, engine: EngineDep) -> Response:
    state = request.app.state
    try:
        async with asyncio.timeout(2.0), engine.connect() as conn:
            state.job_counts = {status: n for status, n in (await conn.execute(JOB_COUNTS_SQL)).all()}
    except Exception as exc:  # metrics must answer while the database is away; job counts are then left out
        log.info("metrics: job counts unavailable (%s)", type(exc).__name__)
        state.job_counts = None
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
