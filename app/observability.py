"""Structured logs and Prometheus metrics.

Logs: one JSON object per line (``TPA_LOG_FORMAT=json``, the default) with the request id of the request being
served, so a line of the access log, of a database error and of a job started by that request can be joined.
The formatter is a few lines over :mod:`logging` (no extra dependency): the record's message, level, logger,
time and exception, plus ``request_id`` from a context variable and any ``extra={...}`` fields.

Metrics (``GET /metrics``, Prometheus text format, from :mod:`prometheus_client`): request counts and
latencies by route template, requests in flight, rejected requests (rate limit, size, time, busy pool),
connection-pool usage of both pools (read path and ORM) and job counts by status (read from
``analysis_run`` when scraped). With several worker processes each process reports its own series.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import sys
from collections.abc import Iterator
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("tpa_request_id", default=None)
csp_nonce: contextvars.ContextVar[str] = contextvars.ContextVar("tpa_csp_nonce", default="")  # of HTML pages

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = request_id.get()
        if rid:
            out["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        rid = request_id.get()
        text = super().format(record)
        return f"{text} [request {rid}]" if rid else text


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (not the stream of the moment it was made, which a
    test runner may have closed by the time a library logs from a finaliser)."""

    @property
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001
        pass


def configure_logging(level: str, fmt: str) -> None:
    """Route the root logger (and uvicorn's) to stderr in the chosen format. Idempotent."""
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         _TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.set_name("tpa")
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers = []
        lg.propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # our middleware writes the access log (with ids)


# ------------------------------------------------------------------------------------------------ metrics
disable_created_metrics()  # no *_created series: they double the output and no dashboard uses them
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """The metrics of one application instance (its own registry: several apps may share a process in tests)."""

    def __init__(self, app_state: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("tpa_http_requests", "HTTP requests by route template, method and status",
                                ("method", "route", "status"), registry=self.registry)
        self.latency = Histogram("tpa_http_request_duration_seconds", "HTTP request latency by route template",
                                 ("method", "route"), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("tpa_http_requests_in_flight", "Requests being served", registry=self.registry)
        self.rejected = Counter("tpa_http_rejected", "Requests refused before or while being served",
                                ("reason",), registry=self.registry)
        self.registry.register(_StateCollector(app_state))


class _StateCollector(Collector):
    """Pool usage and job counts, read when scraped."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pools = GaugeMetricFamily("tpa_db_pool_connections", "Database pool connections by pool and state",
                                  labels=("pool", "state"))
        read = getattr(self.state, "read_pool", None)
        if read is not None:
            size, idle = read.get_size(), read.get_idle_size()
            pools.add_metric(("read", "in_use"), size - idle)
            pools.add_metric(("read", "idle"), idle)
            pools.add_metric(("read", "max"), read.get_max_size())
            waiting = getattr(read, "waiting", None)
            if waiting is not None:
                pools.add_metric(("read", "waiting"), waiting)
        engine = getattr(self.state, "engine", None)
        if engine is not None:
            pool = engine.pool
            pools.add_metric(("orm", "in_use"), pool.checkedout())
            pools.add_metric(("orm", "idle"), pool.checkedin())
            pools.add_metric(("orm", "max"), pool.size() + max(pool._max_overflow, 0))  # noqa: SLF001
        yield pools
        if read is not None and getattr(read, "replicas", None):
            reads = CounterMetricFamily("tpa_db_reads", "Connections taken by the read path, by server",
                                        labels=("server",))
            reads.add_metric(("primary",), read.primary_reads)
            state = GaugeMetricFamily("tpa_db_replica_up", "Whether a read replica answered the last check as a "
                                      "standby", labels=("server",))
            lag = GaugeMetricFamily("tpa_db_replica_behind_bytes", "WAL the replica had not replayed at the last "
                                    "check, against the primary's position then", labels=("server",))
            newest = read.primary_position
            for r in read.replicas:
                reads.add_metric((r.name,), r.reads)
                state.add_metric((r.name,), float(r.up))
                lag.add_metric((r.name,), max(newest - r.replayed, 0) if r.replayed >= 0 else float("nan"))
            yield reads
            yield state
            yield lag
        jobs = GaugeMetricFamily("tpa_jobs", "Process jobs by status (as last read from the database)",
                                 labels=("status",))
        for status, n in (getattr(self.state, "job_counts", None) or {}).items():
            jobs.add_metric((status,), n)
        yield jobs
