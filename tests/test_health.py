"""Liveness and readiness against real databases: migrated, behind, never migrated, unreachable."""

from __future__ import annotations

from tpa_testing import ThrowawayDatabase, client_for, run_async, settings_for

from app.db import migration_heads


async def test_healthz(client):
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


async def test_readyz_ok_at_head(client):
    r = await client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["migrations"] == "head"
    assert r.json()["database"] == "ok"


async def test_readyz_503_when_database_down():
    # Nothing listens on port 1 of loopback: connection refused.
    settings = settings_for("postgresql://postgres@127.0.0.1:1/nowhere", connect_timeout_s=1.0)
    async with client_for(settings) as client:
        r = await client.get("/readyz")
        assert r.status_code == 503
        body = r.json()
        assert body["database"] == "unreachable"
        assert "password" not in r.text
        # the process itself is alive
        assert (await client.get("/healthz")).status_code == 200


def _readyz(db: ThrowawayDatabase) -> tuple[int, dict]:
    async def go() -> tuple[int, dict]:
        async with client_for(settings_for(db.url)) as client:
            r = await client.get("/readyz")
            return r.status_code, r.json()

    return run_async(go())


def test_readyz_503_when_migrations_behind(throwaway_db):
    status, body = _readyz(throwaway_db)  # never migrated
    assert status == 503
    assert body["migrations"] == "behind"
    throwaway_db.upgrade("0001")  # one revision short of head
    status, body = _readyz(throwaway_db)
    assert status == 503 and body["migrations"] == "behind"
    (head,) = migration_heads()
    assert "0001" in body["detail"] and head in body["detail"]
    throwaway_db.upgrade("head")
    status, body = _readyz(throwaway_db)
    assert status == 200 and body["migrations"] == "head"
