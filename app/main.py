"""Application factory. Run with ``uvicorn --factory app.main:create_app`` or ``tpa serve``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app import __version__
from app.db import create_engine, create_sessionmaker
from app.errors import add_exception_handlers
from app.health import router as health_router
from app.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the FastAPI application. Nothing touches the database until the lifespan starts."""
    settings = settings or Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.db)
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        try:
            yield
        finally:
            await engine.dispose()

    app = FastAPI(
        title=settings.api.title,
        description=settings.api.description,
        version=__version__,
        root_path=settings.api.root_path,
        lifespan=lifespan,
    )
    app.state.settings = settings
    if settings.api.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.api.cors_origins, allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["*"],
        )
    add_exception_handlers(app)
    app.include_router(health_router)
    return app
