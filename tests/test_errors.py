"""Errors are RFC 9457 problem documents with OGC 1.0's code/description; no internals leak."""

from __future__ import annotations

import httpx
from fastapi import APIRouter, Query
from tpa_testing import client_for

from app.errors import PROBLEM_MEDIA_TYPE, ConstraintViolation
from app.main import create_app


async def test_unknown_path_is_problem_json(client):
    r = await client.get("/no/such/thing")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
    body = r.json()
    assert body["status"] == 404 and body["code"] == "NotFound"
    assert body["type"].startswith("https://") and body["title"] and body["detail"] == body["description"]


async def test_validation_is_400_not_422_and_500_hides_internals(settings):
    app = create_app(settings)
    router = APIRouter()

    @router.get("/t/int")
    async def t_int(n: int = Query(...)) -> dict:
        return {"n": n}

    @router.get("/t/boom")
    async def t_boom() -> dict:
        raise RuntimeError("secret connection string postgres://user:pw@host")

    @router.get("/t/rule")
    async def t_rule() -> dict:
        raise ConstraintViolation("Duplicate key (constraint x_pkey).", constraint="x_pkey")

    app.include_router(router)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.get("/t/int", params={"n": "abc"})
            assert r.status_code == 400
            assert r.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
            assert r.json()["code"] == "InvalidParameterValue" and "n" in r.json()["detail"]
            r = await client.get("/t/boom")
            assert r.status_code == 500
            assert "secret" not in r.text and "postgres://" not in r.text
            assert r.json()["code"] == "ServerError"
            r = await client.get("/t/rule")
            assert r.status_code == 409 and r.json()["constraint"] == "x_pkey"


async def test_client_for_helper_shares_settings(settings):
    async with client_for(settings) as c:
        assert (await c.get("/healthz")).status_code == 200
