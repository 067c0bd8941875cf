"""Typed settings, read from the environment (and an optional ``.env`` file).

One ``BaseSettings`` per concern, each with its own prefix; :class:`Settings` bundles them.
Nothing here is instantiated at import time: :func:`app.main.create_app` takes a ``Settings``
object (or builds one from the environment when called without).
"""

from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/tpa"


def to_asyncpg_url(url: str) -> str:
    """Normalise ``postgres://`` / ``postgresql://`` / ``postgresql+psycopg://`` URLs to asyncpg's dialect."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a database URL: {url!r}")
    if scheme.split("+", 1)[0] not in {"postgres", "postgresql"}:
        raise ValueError("only PostgreSQL/PostGIS databases are supported")
    return f"postgresql+asyncpg://{rest}"


def libpq_url(url: str) -> str:
    """The URL without SQLAlchemy's driver suffix, for asyncpg.connect and other libpq clients."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


class DatabaseSettings(BaseSettings):
    """Connection to PostGIS. ``DATABASE_URL`` (no prefix) is honoured as the URL."""

    model_config = SettingsConfigDict(env_prefix="TPA_DB_", env_file=".env", extra="ignore", populate_by_name=True)

    url: str = Field(
        default=DEFAULT_DATABASE_URL,
        validation_alias=AliasChoices("DATABASE_URL", "TPA_DB_URL"),
        description="SQLAlchemy URL of the PostGIS database (postgres:// URLs are accepted).",
    )
    read_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Streaming replicas of the database for the read path (OGC API "
        "features, tiles, figures), comma-separated URLs; writes, jobs and the catalogue stay on the primary. A "
        "replica that is down or behind is left out (docs/operations.md#read-replicas).")
    read_max_lag_s: float = Field(default=30.0, gt=0, description="A replica that has not replayed what the "
                                  "primary had written this many seconds ago is left out until it catches up.")
    pool_size: int = Field(default=10, ge=1, le=200)
    max_overflow: int = Field(default=10, ge=0, le=200)
    pool_timeout_s: float = Field(
        default=5.0, gt=0,
        description="Longest wait for a free pooled connection; then 503 with Retry-After (no unbounded queue).")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="Timeout when opening a connection.")
    statement_timeout_ms: int = Field(default=30_000, ge=0, description="Per-statement limit; 0 = none.")
    echo: bool = False

    @field_validator("url")
    @classmethod
    def _asyncpg(cls, v: str) -> str:
        return to_asyncpg_url(v)

    @field_validator("read_urls", mode="before")
    @classmethod
    def _read_urls(cls, v: object) -> object:
        if isinstance(v, str):
            v = [u.strip() for u in v.split(",") if u.strip()]
        return [to_asyncpg_url(u) for u in v] if isinstance(v, list) else v


class ApiSettings(BaseSettings):
    """HTTP-facing limits and identity."""

    model_config = SettingsConfigDict(env_prefix="TPA_API_", env_file=".env", extra="ignore")

    title: str = "tpa-gis"
    description: str = (
        "Targeted Poverty Alleviation GIS: OGC API - Features for poverty layers and analyses "
        "for siting poverty-alleviation projects."
    )
    root_path: str = ""
    default_limit: int = Field(default=10, ge=1)
    max_limit: int = Field(default=10_000, ge=1)
    cors_origins: list[str] = Field(default_factory=list)
    templates_dir: str | None = Field(default=None, description="Directory whose templates override the built-in ones")
    basemap_url: str = Field(
        default="",
        description="XYZ tile URL for HTML maps (e.g. an intranet tile server); empty = no base map (offline).",
    )
    basemap_attribution: str = ""
    data_license_url: str | None = Field(default=None, description="Link to the licence of the published data")
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024, description="Largest request body (413 above).")
    request_timeout_s: float = Field(
        default=60.0, gt=0, description="Time limit of one request (503 after it); synchronous process executions "
        "have TPA_PROCESSES_SYNC_TIME_LIMIT_S instead.")
    retry_after_s: int = Field(default=5, ge=1, description="Retry-After of 503 answers (database busy or away).")
    rate_limit_per_minute: int = Field(
        default=30_000, ge=0, description="Requests per minute per API key (429 + Retry-After above); 0 = no limit. "
        "Generous by default: GDAL and QGIS page through a layer with thousands of small requests.")
    rate_limit_anonymous_per_minute: int = Field(
        default=0, ge=0, description="Requests per minute per client address without a key; 0 = no limit (set it "
        "when the service is reached directly, not through a proxy that limits already).")
    rate_limit_burst: int = Field(
        default=10_000, ge=1, description="Requests a client may send at once (a whole GDAL download of a layer).")
    rate_limit_shared: bool = Field(
        default=True, description="Count requests against the limits in the database (table rate_bucket), so all "
        "workers and machines of the service share one allowance per key or address; false: each worker process "
        "counts alone, and N workers allow N times the limit (docs/operations.md#scale-out).")
    count_budget_ms: int = Field(
        default=250, ge=0, description="Longest the count behind numberMatched may take within a request. A count "
        "that takes longer (a filter matching millions of rows) is left out of that answer (numberMatched is "
        "optional in OGC API - Features) and finished in the background by the worker; later answers carry it from "
        "the cache until the data change. 0 = always count within the request.")
    figures_wait_s: float = Field(
        default=2.0, ge=0, description="Longest a request waits for the public figures per administrative unit "
        "(admin-poverty, village-poverty, the overview) to be rebuilt after the registry changed. A longer rebuild "
        "(about 30 s for 5 million households) finishes in the background; answers carry the figures last built "
        "until then.")
    access_log: bool = Field(default=True, description="One log line per request (with its request id).")
    html_default_limit: int = Field(default=50, ge=1, description="Features on an HTML items page when the "
                                    "request names no limit (a page a person reads; JSON keeps default_limit).")
    html_max_limit: int = Field(default=500, ge=1, description="Most features on one HTML items page (larger "
                                "limits are capped; JSON and CSV go to max_limit).")
    bulk_max_limit: int = Field(default=1_000_000, ge=1, description="Most features in one FlatGeobuf or GeoParquet "
                                "answer (f=fgb, f=parquet): bulk downloads are written through a temporary file, so "
                                "memory stays bounded whatever the size.")


class TileSettings(BaseSettings):
    """OGC API - Tiles (Mapbox Vector Tiles built by PostGIS)."""

    model_config = SettingsConfigDict(env_prefix="TPA_TILES_", env_file=".env", extra="ignore")

    extent: int = Field(default=4096, ge=256, le=16384, description="Integer grid of a tile (MVT extent).")
    buffer: int = Field(default=64, ge=0, le=1024, description="Margin around a tile, in grid units, whose features "
                        "are kept (clipped) so lines and symbols continue across tile edges.")
    max_features: int = Field(default=10_000, ge=1, description="Most features of one collection in one tile (as "
                              "tipg and pg_tileserv); a denser tile shows this many, zoom in for the rest.")
    max_zoom: int = Field(default=22, ge=0, le=24, description="Deepest tile matrix served and declared in "
                          "the tile matrix set limits and TileJSON.")
    cache_mb: int = Field(default=64, ge=0, description="Memory per worker for rendered tiles, kept while the tables "
                          "they come from are unchanged (0: no cache; every tile is rendered by PostGIS).")


class SecuritySettings(BaseSettings):
    """Secrets. ``pseudonym_key`` keys HMAC-SHA256 pseudonyms of national ids (docs/methodology.md#registry)."""

    model_config = SettingsConfigDict(env_prefix="TPA_", env_file=".env", extra="ignore")

    pseudonym_key: SecretStr | None = Field(
        default=None,
        description="HMAC key for pseudonymising national ids on import; required by the registry import.",
    )
    jitter_key: SecretStr | None = Field(
        default=None,
        description="Key that makes the displacement of household points deterministic but not guessable; "
        "required to serve (there is no built-in value: secrets come only from the environment).",
    )


class ProcessSettings(BaseSettings):
    """OGC API - Processes: job execution (``TPA_PROCESSES_*``)."""

    model_config = SettingsConfigDict(env_prefix="TPA_PROCESSES_", env_file=".env", extra="ignore")

    worker: bool = Field(default=True, description="Run a job worker inside the API process (else: tpa worker).")
    concurrency: int = Field(default=1, ge=1, le=32, description="Jobs run at the same time by one worker.")
    time_limit_s: int = Field(default=900, ge=1, description="Wall-clock limit of one job (sync or async).")
    sync_time_limit_s: int = Field(default=120, ge=1, description="Limit of a synchronous execution.")
    sync_concurrency: int = Field(
        default_factory=lambda: os.cpu_count() or 2, ge=1, le=64,
        description="Synchronous executions one API process runs at once (default: the CPU count); more wait.")
    sync_queue_timeout_s: float = Field(
        default=20.0, gt=0, description="Longest wait for a synchronous execution slot; then 503 + Retry-After.")
    max_input_features: int = Field(default=100_000, ge=1, description="Features one data input may hold.")
    max_registry_households: int = Field(
        default=1_000_000, ge=1, description="Households one registry reference may bring into an analysis. They "
        "are scored in the job's memory (about 5 KB each with their results; docs/operations.md#scale): a "
        "province-sized registry is analysed per prefecture or county (admin_code), or with a larger limit on a "
        "worker with the memory for it.")
    sae_max_cv: float = Field(
        default=0.20, gt=0, le=10, description="Small-area estimates whose coefficient of variation exceeds this "
        "are flagged unreliable (portals should not publish them as figures).")
    solver_threads: int = Field(default=2, ge=1, le=64, description="CBC threads of location-allocation.")
    heartbeat_s: float = Field(default=5.0, gt=0, description="Worker heartbeat interval.")
    stalled_after_s: float = Field(
        default=30.0, gt=0, description="A running job whose worker sent no heartbeat for this long is taken "
        "from it: queued again while it has attempts left, else failed.",
    )
    attempts: int = Field(default=2, ge=1, le=10, description="Times an asynchronous job is started at most: a "
                          "job whose worker died (killed, machine lost) is queued again for another worker until "
                          "then; 1 = never again (it fails with the reason).")
    results_anonymous_ttl_h: float = Field(
        default=24.0, gt=0, description="Hours the results of an execution without an API key are kept.")
    results_ttl_days: float = Field(
        default=30.0, gt=0, description="Days the results of an execution with a key are kept (published results "
        "are kept until they are unpublished; `tpa results keep` extends).")
    results_prune_every_s: float = Field(
        default=600.0, gt=0, description="How often the job worker deletes expired results and their tables.")


class Settings(BaseSettings):
    """All settings of one service instance."""

    model_config = SettingsConfigDict(env_prefix="TPA_", env_file=".env", extra="ignore")

    db: DatabaseSettings = Field(default_factory=DatabaseSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    processes: ProcessSettings = Field(default_factory=ProcessSettings)
    tiles: TileSettings = Field(default_factory=TileSettings)
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = Field(default="json", description="json: one JSON object per line.")
