"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse
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
