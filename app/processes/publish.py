"""Publishing the results of a job: every spatial output becomes a table in schema ``results`` registered as a
collection (like ``tpa layers publish``, through the same repository), with its provenance, its style, and the names
of the units and parents its rows stand for; listed in ``/collections`` only when the execution asked to publish it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import logging
import uuid
from importlib import metadata
from typing import Any

import orjson
from sqlalchemy import text

from app.processes import styles as st
from app.processes.base import LayerOut, Outcome, Process
from app.processes.data import Units
from app.repositories import layers as layers_repo
from app.repositories import regions as regions_repo
from app.repositories import results as results_repo

log = logging.getLogger("tpa.jobs")
LIBRARIES = ("esda", "libpysal", "spopt", "pulp", "access", "ortools", "numpy", "scipy", "shapely", "pyproj", "h3")


def library_versions(libraries: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """The installed versions of ``libraries`` (those installed)."""
    out = {}
    for name in libraries:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


async def publish_results(app: Any, run_id: uuid.UUID, process: Process, params: dict[str, Any], data: dict[str, Units],
                   outcome: Outcome, started: dt.datetime) -> None:
    """Store every spatial output as a table in ``results``, register it as a collection (listed in ``/collections``
    only when the execution asked to publish it) with its style and context, and mark the job successful — one
    transaction, so a job's results appear whole or not at all."""
    result_role = params.get("result_role")
    collections: dict[str, str] = {}
    short = run_id.hex[:8]
    provenance = {
        "process": process.id, "version": process.version, "inputs": {
            k: (v if k not in process.data_inputs or not isinstance(v, dict | list) or "href" in v or "region" in v else
                {"inline": True, "features": len(data[k]) if k in data else None,
                 "sha256": hashlib.sha256(orjson.dumps(v, option=orjson.OPT_SORT_KEYS)).hexdigest()})
            for k, v in params["inputs"].items()},
        "seed": params["inputs"].get("seed"), "libraries": library_versions(),
        "started": started.isoformat(), "finished": dt.datetime.now(dt.UTC).isoformat(),
    }
    context = {"process": process.id, "process_title": process.title, "job": str(run_id),
               "inputs": inputs_summary(process, provenance["inputs"]), "owner": params.get("owner_name"),
               "created": started.isoformat()}
    async with app.state.engine.begin() as conn:
        ancestry = await _ancestry(conn, outcome.layers.values())
        for out_id, layer in outcome.layers.items():
            layer = with_context(layer, ancestry, data)
            table = f"r_{run_id.hex}_{out_id.replace('-', '_')}"[:63]
            layer_id = f"{process.id}-{short}-{out_id}"
            spec = process.outputs[out_id]
            style = st.resolve(spec.style, layer.columns[spec.style["property"]][1]
                               if spec.style and spec.style["property"] in layer.columns else None)
            await results_repo.write_table(conn, table, layer)
            await layers_repo.register_layer(
                conn, layer_id, "results", table, f"{layer.title} (job {short})",
                f"{layer.description}. Output '{out_id}' of the process {process.id}, job {run_id}.", "fid",
                "geom" if layer.geoms is not None else None, role=result_role, run_id=run_id,
                keywords=[RESULT_KEYWORD, process.id, f"job {run_id}"], listed=bool(params.get("publish")),
                style=style, context={**context, "output": out_id})
            collections[out_id] = layer_id
        result = {"values": outcome.values, "collections": collections, "provenance": provenance}
        await conn.execute(text(
            "UPDATE analysis_run SET status = 'successful', finished = now(), updated = now(), progress = 100, "
            "message = 'done', result = CAST(:result AS jsonb), result_table = :rt WHERE run_id = :id "
            "AND status = 'running'"),
            {"result": orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY).decode(), "id": run_id,
             "rt": (f"r_{run_id.hex}" if collections else None)})
    if collections and params.get("publish"):  # unlisted results are found by their URL (LiveCatalog.find)
        await recheck_catalog(app)


RESULT_KEYWORD = "analysis result"


def inputs_summary(process: Process, inputs: dict[str, Any]) -> str:
    """The inputs of a job in one line, for people choosing among results: data inputs by reference (or region, or
    inline count), other inputs as given."""
    parts = []
    for k, v in sorted(inputs.items(), key=lambda kv: (kv[0] not in process.data_inputs, kv[0])):
        if v is None or v == {} or v == []:
            continue
        if isinstance(v, dict) and "href" in v:
            parts.append(f"{k}: {v['href']}")
        elif isinstance(v, dict) and "region" in v:
            parts.append(f"{k}: registry of {v['region']}" + (f" ({', '.join(v['statuses'])})"
                                                               if v.get("statuses") else ""))
        elif isinstance(v, dict) and v.get("inline"):
            parts.append(f"{k}: {v.get('features')} features inline")
        elif k in process.data_inputs:
            continue
        else:
            parts.append(f"{k}: {v if isinstance(v, str) else orjson.dumps(v).decode()}")
    text_ = "; ".join(parts)
    return text_ if len(text_) <= 400 else text_[:399] + "…"


async def _ancestry(conn: Any, layers: Any) -> dict[str, dict[str, Any]]:
    """Names and parents of every administrative unit a result row stands for (one query for all outputs)."""
    keys: set[str] = set()
    for layer in layers:
        values = layer.columns[layer.unit_column][1] if layer.unit_column else layer.ids
        if len(values) <= MAX_CONTEXT_ROWS:
            keys |= {str(v) for v in values if v is not None}
    return await regions_repo.admin_ancestry(conn, sorted(keys))


MAX_CONTEXT_ROWS = 200_000


def with_context(layer: LayerOut, ancestry: dict[str, dict[str, Any]], data: dict[str, Units]) -> LayerOut:
    """The layer with the name of each row's unit and the names of its parents (prefecture, county, township …) in
    columns of their own, first: from the administrative units of the database, else the ``name`` of the input
    feature. Rows of households (pseudonyms) match neither and get no names."""
    units = layer.columns[layer.unit_column][1] if layer.unit_column else layer.ids
    keys = [None if u is None else str(u) for u in units]
    given = {uid: p.get("name") for u in data.values() for uid, p in zip(u.ids, u.props, strict=True)
             if isinstance(p.get("name"), str)}
    names = [(ancestry.get(k) or {}).get("name") or given.get(k) if k is not None else None for k in keys]
    extra: dict[str, tuple[str, Any]] = {}
    if any(n is not None for n in names) and "name" not in layer.columns:
        extra["name"] = ("text", names)
    for level in (2, 3, 4, 5):
        col = regions_repo.LEVEL_COLUMNS[level]
        values = [(ancestry.get(k) or {}).get("ancestors", {}).get(col) if k is not None else None for k in keys]
        if any(v is not None for v in values) and col not in layer.columns:
            extra[col] = ("text", values)
    if not extra:
        return layer
    return dataclasses.replace(layer, columns={**extra, **layer.columns})


async def recheck_catalog(app: Any) -> None:
    """This process's catalogue as of now, after results were published or deleted: /collections lists them (or no
    longer) at once, and results read by URL are not served from memory after they were deleted."""
    catalog = getattr(app.state, "catalog", None)
    if catalog is not None:
        try:
            await catalog.current(force=True)
        except Exception as exc:  # the results are committed; the next request reads the catalogue again
            log.warning("catalogue not refreshed after a job (%s)", type(exc).__name__)
            catalog.invalidate()


