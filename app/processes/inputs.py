"""The inputs of a job: references to our own collections (checked at submission, read at execution with the
same items query as ``/collections/{id}/items``), the household registry of a region, inline features; the
analysis CRS of the region the data belong to."""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import orjson
from pydantic import BaseModel
from starlette.requests import Request

from app.analysis.spatial import AnalysisError, representative_lonlat
from app.db import translated_errors
from app.errors import (
    Forbidden,
    InvalidParameter,
    Unauthorized,
)
from app.layers.catalog import Catalog, Layer, LiveCatalog
from app.layers.query import PageLimits, Params, items_query
from app.models.codes import Role, allowed
from app.processes.base import NETWORK_COSTS, Process
from app.processes.data import (
    CollectionRef,
    InlineFeatures,
    NetworkCosts,
    Units,
    units_from_geojson,
    units_from_table,
)
from app.processes.registry import REGISTRY_ROLE, RegistryRef, cause_table, load_registry
from app.repositories import regions as regions_repo

log = logging.getLogger("tpa.jobs")
_ITEMS = re.compile(r"/collections/([^/]+)/items")


def parse_ref(request_base: str | None, root_path: str, href: str) -> tuple[str, str]:
    """(collection id, query string) of a reference to our own items; other hosts are refused (no SSRF)."""
    parts = urlsplit(href)
    if parts.scheme or parts.netloc:
        base = urlsplit(request_base or "")
        if parts.scheme not in ("http", "https") or not base.netloc or parts.netloc != base.netloc:
            raise InvalidParameter(f"Only collections of this service can be referenced, not {href!r}.")
    path = parts.path
    if root_path and path.startswith(root_path):
        path = path[len(root_path):]
    m = _ITEMS.fullmatch(path)
    if m is None:
        raise InvalidParameter(f"A reference must point to /collections/{{id}}/items of this service: {href!r}.")
    return m.group(1), parts.query


def _ref_params(query: str, limit: int) -> Params:
    """The query of a reference, read as the items query of up to ``limit`` features (its own paging dropped)."""
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in ("f", "limit", "cursor")]
    return Params([*pairs, ("limit", str(limit))])


async def _ref_layer(live: LiveCatalog, collection_id: str) -> tuple[Catalog, Layer | None]:
    async with translated_errors():
        return await live.current(), await live.find(collection_id)


async def check_ref(request: Request, name: str, ref: CollectionRef, role: Role | None) -> tuple[str, Role | None]:
    """Validate a reference at submission (collection, access, query); returns the relative href."""
    cid, query = parse_ref(str(request.base_url), request.app.state.settings.api.root_path, ref.href)
    catalog, layer = await _ref_layer(request.app.state.catalog, cid)
    if layer is None or layer.hidden_from(role, getattr(request.state, "actor", None)):
        raise InvalidParameter(f"{name}: there is no collection '{cid}'.")
    if not allowed(role, layer.required_role):
        if role is None:
            raise Unauthorized(f"{name}: authentication is required for the collection '{cid}'.")
        raise Forbidden(f"{name}: the role '{role.value}' may not read the collection '{cid}'.")
    items_query(_ref_params(query, 1), catalog, layer, role, PageLimits(1, 1))
    return f"/collections/{cid}/items" + (f"?{query}" if query else ""), layer.required_role


async def check_registry(request: Request, name: str, ref: RegistryRef, role: Role | None) -> None:
    """The registry is restricted like the households collection; the region must exist."""
    if not allowed(role, REGISTRY_ROLE):
        if role is None:
            raise Unauthorized(f"{name}: authentication is required for the household registry.")
        raise Forbidden(f"{name}: the role '{role.value}' may not read the household registry.")
    ref.region = await region_id(request.app, name, ref.region)  # a display name given: the id from here on


async def region_id(app: Any, name: str, given: str) -> str:
    """The id of the region an input names (its id or its display name); 400 with the known regions if none."""
    async with translated_errors(), app.state.engine.connect() as conn:
        found = await regions_repo.find_region(conn, given)
        if found is None:
            known = ", ".join(f"{rid} ({title})" for rid, title in await regions_repo.known_regions(conn))
            raise InvalidParameter(f"{name}: there is no region '{given}'. Give a region's id (see /regions): "
                                   f"{known or 'no region is loaded yet'}.")
    return found


async def fetch_ref(app: Any, name: str, href: str, role: Role | None, max_features: int,
                    actor: str | None = None) -> Units:
    from app.repositories import features as repo

    cid, query = parse_ref(None, "", href)
    catalog, layer = await _ref_layer(app.state.catalog, cid)
    if layer is None or not layer.readable_by(role, actor):
        raise AnalysisError(f"{name}: the collection '{cid}' is not available.")
    # the page size of /items (api.max_limit) does not bound a process input: read up to max_features + 1
    n = max_features + 1
    q = items_query(_ref_params(query, n), catalog, layer, role, PageLimits(n, n))
    texts: list[str] = []
    async for rows, _ in repo.stream_page(app.state.read_pool, layer, role, q):
        texts += [r[0] for r in rows]
        if len(texts) > max_features:
            raise AnalysisError(f"{name}: more than {max_features} features; narrow the reference with a filter.")
    features = orjson.loads("[" + ",".join(texts) + "]")
    if any(f.get("geometry") is None for f in features):
        rows = [{"id": f.get("id"), **(f.get("properties") or {})} for f in features]
        return units_from_table(name, rows)
    return units_from_geojson(name, features, href)


async def resolve(app: Any, process: Process, inputs: BaseModel, role: Role | None,
                  actor: str | None = None) -> dict[str, Units]:
    max_features = app.state.settings.processes.max_input_features
    data: dict[str, Units] = {}
    for name, _, value in process.data_values(inputs):
        if value is None or not isinstance(value, InlineFeatures | CollectionRef | RegistryRef | list):
            continue
        if isinstance(value, RegistryRef):
            data.update(await load_registry(app, value, role))
        elif isinstance(value, CollectionRef):
            data[name] = await fetch_ref(app, name, value.href, role, max_features, actor)
        elif isinstance(value, InlineFeatures):
            if len(value.features) > max_features:
                raise AnalysisError(f"{name}: more than {max_features} features.")
            data[name] = units_from_geojson(name, [f.model_dump() for f in value.features], "inline")
        else:
            if len(value) > max_features:
                raise AnalysisError(f"{name}: more than {max_features} rows.")
            data[name] = units_from_table(name, value)
    if "cause_table" in process.context_data and "cause_table" not in data:
        async with app.state.engine.connect() as conn:
            data["cause_table"] = await cause_table(conn, None)
    return data


async def with_region_crs(app: Any, inputs: BaseModel, raw: dict[str, Any], data: dict[str, Units]
                          ) -> dict[str, Any]:
    """The inputs an analysis runs with: a process that measures in a metric CRS (``analysis_crs``) and was not
    given one uses the CRS its region declares (``tpa region create --crs``), not the UTM zone of the data — a
    country spanning several zones is measured in one national CRS. The region is the one named by the registry
    input, or by the ``region`` property of every feature, or, for inline data, the one whose administrative
    areas contain the data's centre. Without a single region, the UTM zone of the data is used."""
    if "analysis_crs" not in type(inputs).model_fields or getattr(inputs, "analysis_crs", None) is not None:
        return raw
    async with app.state.engine.connect() as conn:
        regions = await data_regions(conn, inputs, data)
        crs = set((await regions_repo.analysis_crs_of(conn, sorted(regions))).values()) if regions else set()
    return {**raw, "analysis_crs": crs.pop()} if len(crs) == 1 else raw


async def data_regions(conn: Any, inputs: BaseModel, data: dict[str, Units]) -> set[str]:
    """The regions the data of a job belong to: the one named by the registry input, or by the ``region`` property
    of every feature, or, for inline data, the ones whose administrative areas contain the data's centre."""
    regions: set[str] = set()
    for value in (getattr(inputs, n, None) for n in type(inputs).model_fields):
        if isinstance(value, RegistryRef):
            regions.add(value.region)
    units = [u for u in data.values() if u.name != "cause_table"]
    for u in units:
        regions |= {str(p["region"]) for p in u.props if p.get("region") is not None}
    if regions:
        return regions
    points = [representative_lonlat(u.geoms) for u in units if u.geoms is not None and len(u.geoms)]
    if not points:
        return set()
    centre = np.concatenate(points).mean(axis=0)
    return {rid for rid, _ in await regions_repo.regions_at(conn, float(centre[0]), float(centre[1]))}


async def region_network(app: Any, inputs: BaseModel, data: dict[str, Units], why: str, otherwise: str = ""
                         ) -> tuple[Any, int]:
    """The current road network of the one region the data belong to, and the region's analysis CRS;
    AnalysisError when the data span several regions or the region has no network (``why``: what needs it)."""
    from app.services.roads import current_network

    async with app.state.engine.connect() as conn:
        regions = await data_regions(conn, inputs, data)
        if len(regions) != 1:
            raise AnalysisError(f"{why} needs data of one region (found "
                                f"{', '.join(sorted(regions)) if regions else 'none'})")
        region = regions.pop()
        raw = (await conn.get_raw_connection()).driver_connection
        network = await current_network(raw, region)
        crs = (await regions_repo.analysis_crs_of(conn, [region])).get(region)
    if network is None:
        raise AnalysisError(f"the region {region!r} has no road network: import one (tpa import roads FILE "
                            f"--region {region}){otherwise}")
    return network, int(crs or 0)


async def network_costs(app: Any, process: Process, inputs: BaseModel, data: dict[str, Units]) -> NetworkCosts:
    """Travel times on the current road network of the data's region (cost "network"), in minutes."""
    from app.services.roads import travel_times

    network, _ = await region_network(app, inputs, data, "cost 'network'", " or use cost 'straight'")
    origins, destinations = process.network_points(inputs, data)
    mode = getattr(inputs, "mode", "motor")
    tt = await travel_times(app.state.engine, network, mode, representative_lonlat(origins.need_geometry()),
                            representative_lonlat(destinations.need_geometry()),
                            float(getattr(inputs, "max_snap_m", 1000.0)),
                            parallel=app.state.settings.processes.solver_threads)
    summary = tt.summary()
    for side, units, snapped in (("origins", origins, tt.origins), ("destinations", destinations, tt.destinations)):
        missed = [units.ids[i] for i in np.flatnonzero(~snapped.ok)]
        summary[f"{side}_not_snapped_ids"] = missed[:100]  # listed, never silently dropped (the first 100)
    summary["origins"], summary["destinations"] = origins.name, destinations.name
    return NetworkCosts(NETWORK_COSTS, [], None, [], f"network {network.network_id}", tt.seconds / 60.0, summary,
                        (tt.origins.distance_m, tt.destinations.distance_m))

