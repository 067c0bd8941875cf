"""Typed settings from the environment."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.settings import DatabaseSettings, Settings, to_asyncpg_url


def test_database_url_from_environment(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db.example:5433/gis")
    monkeypatch.setenv("TPA_DB_POOL_SIZE", "3")
    s = Settings()
    assert s.db.url == "postgresql+asyncpg://u:p@db.example:5433/gis"
    assert s.db.pool_size == 3


def test_default_url_is_local(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("TPA_DB_URL", raising=False)
    assert DatabaseSettings().url == "postgresql+asyncpg://postgres@127.0.0.1:5432/tpa"


def test_explicit_url_wins_over_environment(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://env/x")
    assert DatabaseSettings(url="postgresql://explicit/y").url == "postgresql+asyncpg://explicit/y"


@pytest.mark.parametrize("bad", ["mysql://x/y", "not a url"])
def test_rejects_other_databases(bad):
    with pytest.raises((ValueError, ValidationError)):
        to_asyncpg_url(bad)


def test_invalid_limits_rejected(monkeypatch):
    monkeypatch.setenv("TPA_DB_POOL_SIZE", "0")
    with pytest.raises(ValidationError):
        DatabaseSettings()


def test_settings_fixture_uses_throwaway_database(settings):
    assert "/tpa_test_" in settings.db.url


async def test_service_refuses_to_start_without_the_jitter_key(monkeypatch, settings):
    """Secrets come only from the environment: without TPA_JITTER_KEY there is no built-in key to fall back on."""
    from app.main import create_app
    from app.settings import SecuritySettings

    monkeypatch.delenv("TPA_JITTER_KEY", raising=False)
    assert SecuritySettings(_env_file=None).jitter_key is None
    app = create_app(settings.model_copy(update={"security": SecuritySettings(_env_file=None)}))
    with pytest.raises(RuntimeError, match="TPA_JITTER_KEY"):
        async with app.router.lifespan_context(app):
            pass
