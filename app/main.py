"""Application factory. Run with ``uvicorn --factory app.main:create_app`` or ``tpa serve``."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from app import __version__
from app.auth import KeyCache, document_security
from app.db import create_engine, create_limits_pool, create_read_pool, create_sessionmaker, watch_replicas
from app.errors import add_exception_handlers, document_problems
from app.health import router as health_router
from app.layers.catalog import LiveCatalog
from app.middleware import CompressedAssets, ServiceMiddleware, SharedLimits
from app.observability import Metrics, configure_logging
from app.ogc import common, docs, edits, features, overview, portal, processes, regions, tiles
from app.ogc.render import document_media_types, templates
from app.openapi30 import to_openapi30
from app.processes.jobs import (
    Runtime,
    make_queue,
    open_queue,
    run_worker,
    set_runtime,
    watch_expired,
    watch_interrupted,
)
from app.repositories import stats
from app.repositories.cache import CountCache, TileCache
from app.settings import Settings

STATIC_DIR = Path(__file__).resolve().parent / "static"
SHUTDOWN_TIMEOUT_S = 10.0

# OGC modules enabled in this build: (router, conformance classes)
OGC_MODULES = (
    (common.router, common.CONFORMANCE), (features.router, features.CONFORMANCE), (edits.router, edits.CONFORMANCE),
    (processes.router, processes.CONFORMANCE), (regions.router, regions.CONFORMANCE), (docs.router, docs.CONFORMANCE),
    (tiles.router, tiles.CONFORMANCE), (overview.router, ()), (portal.router, ()),
)


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI 3.0 document served at /api and committed under openapi/."""
    doc = processes.document_examples(copy.deepcopy(app.openapi()))
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for model in edits.BODY_MODELS:  # referenced by the editing operations, which read their bodies themselves
        schemas[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return document_security(document_problems(document_media_types(to_openapi30(doc))))


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the FastAPI application. Nothing touches the database until the lifespan starts."""
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_format)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.security.jitter_key is None:
            raise RuntimeError("TPA_JITTER_KEY is not set: the service needs it to displace household points "
                               "(secrets come only from the environment; 'make run' generates one in .tpa/).")
        engine = create_engine(settings.db)
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        app.state.read_pool = await create_read_pool(settings.db)
        api = settings.api
        app.state.limits = SharedLimits(await create_limits_pool(settings.db)) \
            if api.rate_limit_shared and (api.rate_limit_per_minute or api.rate_limit_anonymous_per_minute) else None
        app.state.catalog = LiveCatalog(engine, settings.security, settings.api.data_license_url,
                                        derive=stats.ensure_current, read_pool=app.state.read_pool,
                                        derive_wait_s=settings.api.figures_wait_s)
        try:
            await app.state.catalog.current()
        except Exception as exc:  # an unreachable or unmigrated database must not stop /healthz and /readyz
            logging.getLogger("tpa").warning("catalogue not loaded (%s); collections unavailable until it is",
                                             type(exc).__name__)
        background: list[asyncio.Task[None]] = []
        if app.state.read_pool.replicas:
            background.append(asyncio.create_task(watch_replicas(app.state.read_pool), name="tpa-read-replicas"))
        app.state.queue = make_queue(settings)
        queue_pool = await open_queue(app.state.queue, settings)  # connects in the background
        if settings.processes.worker:
            runtime = Runtime(app, app.state.queue)
            set_runtime(runtime)
            background += [asyncio.create_task(run_worker(runtime), name="tpa-worker"),
                           asyncio.create_task(watch_interrupted(runtime), name="tpa-interrupted-jobs"),
                           asyncio.create_task(watch_expired(runtime), name="tpa-expired-results")]
        try:
            yield
        finally:
            # shutdown is bounded: a running job is aborted (and recorded as interrupted), never waited for
            for task in background:
                task.cancel()
            if background:
                _, pending = await asyncio.wait(background, timeout=SHUTDOWN_TIMEOUT_S)
                for task in pending:
                    logging.getLogger("tpa").warning("%s did not stop within %s s", task.get_name(),
                                                     SHUTDOWN_TIMEOUT_S)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(queue_pool.close(), SHUTDOWN_TIMEOUT_S)
            await app.state.count_cache.close()
            await app.state.catalog.close()
            try:
                await asyncio.wait_for(app.state.read_pool.close(), SHUTDOWN_TIMEOUT_S)
            except TimeoutError:  # a connection still held by a stuck task: close it the hard way
                app.state.read_pool.terminate()
            if app.state.limits is not None:
                await app.state.limits.close()
            await engine.dispose()

    app = FastAPI(
        title=settings.api.title,
        description=settings.api.description,
        version=__version__,
        root_path=settings.api.root_path,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.count_cache = CountCache(budget_ms=settings.api.count_budget_ms)
    app.state.tile_cache = TileCache(settings.tiles.cache_mb * 1024 * 1024)
    app.state.key_cache = KeyCache()
    app.state.templates = templates(settings.api.templates_dir)
    app.state.conformance = tuple(c for _, classes in OGC_MODULES for c in classes)
    app.state.openapi30 = cache(lambda: openapi_document(app))
    app.state.metrics = Metrics(app.state)
    app.state.sync_slots = asyncio.Semaphore(settings.processes.sync_concurrency)  # jobs._execute_in_slot
    if settings.api.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.api.cors_origins, allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["*"], expose_headers=["Location", "ETag", "Retry-After", "X-Request-ID", "Link",
                                                 "Preference-Applied", "Content-Crs"],
        )
    app.add_middleware(CompressedAssets)
    # outermost: every answer (CORS preflights and refusals included) gets a request id, headers and metrics
    app.add_middleware(ServiceMiddleware, settings=settings.api, metrics=app.state.metrics,
                       sync_limit_s=float(settings.processes.sync_time_limit_s))
    add_exception_handlers(app)
    for router, _ in OGC_MODULES:
        app.include_router(router)
    app.include_router(health_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
