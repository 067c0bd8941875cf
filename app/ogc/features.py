"""OGC API - Features Part 1: collections, items and single features.

GeoJSON is produced by PostGIS (one text value per feature) and spliced into the response; pages up
to ``STREAM_ABOVE`` features are sent in one piece, larger ones are streamed from a server-side cursor
so memory stays bounded whatever the page size.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict

from app.auth import RoleDep, current_role, require
from app.errors import DatabaseUnavailable, DomainError, InvalidParameter, NotFound
from app.models.codes import Role
from app.ogc.catalog import Catalog, Layer, Prop, load_catalog
from app.ogc.common import Conformance, Link
from app.ogc.params import (
    Cursor,
    bbox_query,
    datetime_query,
    limit_query,
    offset_query,
    parse_scalar,
)
from app.ogc.render import (
    GEOJSON,
    HTML,
    JSON,
    OutputType,
    html_response,
    link,
    negotiate,
    respond,
    self_links,
    url_for,
)
from app.repositories import features as repo

router = APIRouter(tags=["Data"])

CONFORMANCE: tuple[str, ...] = (Conformance.core, Conformance.geojson, Conformance.html, Conformance.oas30)
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
GREGORIAN = "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"
STANDARD_PARAMS = frozenset({"f", "limit", "offset", "bbox", "datetime", "cursor"})
STREAM_ABOVE = 1000  # rows


class Collection(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    title: str | None = None
    description: str | None = None
    links: list[Link]
    itemType: str = "feature"


class Collections(BaseModel):
    model_config = ConfigDict(extra="allow")
    links: list[Link]
    collections: list[Collection]


class FeatureCollection(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str = "FeatureCollection"
    features: list[dict[str, Any]]
    numberMatched: int | None = None
    numberReturned: int | None = None
    timeStamp: str | None = None
    links: list[Link] | None = None


class Feature(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str = "Feature"
    id: str | int | None = None
    geometry: dict[str, Any] | None
    properties: dict[str, Any] | None


async def _catalog(request: Request) -> Catalog:
    """The catalogue loaded at start-up; loaded now if the database was unreachable then."""
    catalog = request.app.state.catalog
    if catalog is None:
        try:
            catalog = await load_catalog(
                request.app.state.engine, request.app.state.settings.security,
                request.app.state.settings.api.data_license_url)
        except DomainError:
            raise
        except Exception:
            raise DatabaseUnavailable("The layer catalogue cannot be loaded: the database is not reachable.") from None
        request.app.state.catalog = catalog
    return catalog


async def get_layer(request: Request, collection_id: str, role: Role | None) -> Layer:
    layer = (await _catalog(request)).get(collection_id)
    if layer is None:
        raise NotFound(f"There is no collection '{collection_id}'.")
    require(role, layer.required_role, f"the collection '{collection_id}'")
    return layer


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def collection_document(request: Request, layer: Layer, top: bool = False) -> dict[str, Any]:
    path = f"/collections/{layer.id}"
    if top:
        links = self_links(request, path, JSON, layer.title)
    else:
        links = [link(url_for(request, path), "self", JSON, layer.title),
                 link(url_for(request, path, {"f": "html"}), "alternate", HTML, layer.title)]
    links += [
        link(url_for(request, path + "/items", {"f": "json"}), "items", GEOJSON, f"{layer.title} (GeoJSON)"),
        link(url_for(request, path + "/items", {"f": "html"}), "items", HTML, f"{layer.title} (HTML)"),
    ]
    if layer.license:
        links.append(link(layer.license, "license", HTML, "Licence"))
    doc: dict[str, Any] = {
        "id": layer.id,
        "title": layer.title,
        "description": layer.description,
        "links": links,
        "itemType": "feature",
        "crs": [CRS84],
        "keywords": list(layer.keywords),
    }
    extent: dict[str, Any] = {}
    if layer.extent.bbox:
        extent["spatial"] = {"bbox": [list(layer.extent.bbox)], "crs": CRS84}
    if layer.extent.interval:
        extent["temporal"] = {"interval": [list(layer.extent.interval)], "trs": GREGORIAN}
    if extent:
        doc["extent"] = extent
    if layer.attribution:
        doc["attribution"] = layer.attribution
    if layer.required_role:
        doc["accessRole"] = layer.required_role.value
    return doc


@router.get(
    "/collections",
    operation_id="get_collections",
    summary="The feature collections the caller may read",
    response_model=Collections,
    responses={200: {"content": {HTML: {}}}},
)
async def get_collections(request: Request, role: RoleDep) -> Response:
    layers = (await _catalog(request)).visible(role)
    body = {
        "links": self_links(request, "/collections", JSON, "Collections"),
        "collections": [collection_document(request, lyr) for lyr in layers],
    }
    return respond(request, body, "collections.html")


@router.get(
    "/collections/{collectionId}",
    operation_id="get_collection",
    summary="One feature collection",
    response_model=Collection,
    responses={200: {"content": {HTML: {}}}, 404: {"description": "No such collection"}},
)
async def get_collection(request: Request, role: RoleDep, collectionId: str = Path(...)) -> Response:  # noqa: N803
    layer = await get_layer(request, collectionId, role)
    return respond(request, collection_document(request, layer, top=True), "collection.html", layer=layer)


def _equality_filters(request: Request, layer: Layer) -> tuple[tuple[Prop, Any], ...]:
    out = []
    for name in request.query_params:
        if name in STANDARD_PARAMS:
            continue
        prop = layer.prop(name)
        if prop is None or not prop.filterable:
            allowed = sorted(STANDARD_PARAMS | {p.name for p in layer.props if p.filterable})
            raise InvalidParameter(f"Unknown query parameter '{name}'. Allowed: {', '.join(allowed)}.")
    for name, raw in request.query_params.multi_items():
        if name in STANDARD_PARAMS:
            continue
        prop = layer.prop(name)
        assert prop is not None
        try:
            out.append((prop, parse_scalar(raw, prop.schema)))
        except (ValueError, InvalidParameter):
            raise InvalidParameter(f"'{raw}' is not a valid value for {name} ({prop.schema.get('type')}).") from None
    return tuple(out)


def _single(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise InvalidParameter(f"{name} may be given only once.")
    return values[0] if values else None


def items_query(request: Request, layer: Layer) -> repo.ItemsQuery:
    settings = request.app.state.settings.api
    return repo.ItemsQuery(
        bbox=bbox_query(_single(request, "bbox")),
        interval=datetime_query(_single(request, "datetime")),
        equals=_equality_filters(request, layer),
        limit=limit_query(_single(request, "limit"), settings.default_limit, settings.max_limit),
        offset=offset_query(_single(request, "offset")),
        cursor=Cursor.decode(_single(request, "cursor")),
    )


def _page_links(
    request: Request, layer: Layer, q: repo.ItemsQuery, first: tuple | None, last: tuple | None,
    more_after: bool, more_before: bool,
) -> list[dict[str, Any]]:
    path = f"/collections/{layer.id}/items"
    keep = {k: v for k, v in request.query_params.multi_items() if k not in ("f", "offset", "cursor")}
    fmt = negotiate(request)
    ftype, fparam = (HTML, "html") if fmt is OutputType.html else (GEOJSON, "json")
    links = self_links(request, path, GEOJSON, f"{layer.title} items")
    links.append(link(url_for(request, f"/collections/{layer.id}"), "collection", JSON, layer.title))
    if more_after and last is not None:
        token = Cursor(last, True).encode()
        links.append(link(url_for(request, path, {**keep, "cursor": token, "f": fparam}), "next", ftype, "Next page"))
    if more_before:
        if q.cursor is None and q.offset:
            prev = {**keep, "f": fparam}
            if q.offset - q.limit > 0:
                prev["offset"] = q.offset - q.limit
            links.append(link(url_for(request, path, prev), "prev", ftype, "Previous page"))
        elif first is not None:
            token = Cursor(first, False).encode()
            links.append(link(url_for(request, path, {**keep, "cursor": token, "f": fparam}), "prev", ftype,
                              "Previous page"))
    return links


def _envelope_tail(matched: int, returned: int, links: list[dict[str, Any]]) -> bytes:
    tail = orjson.dumps({"numberMatched": matched, "numberReturned": returned, "timeStamp": _now(), "links": links})
    return b"]," + tail[1:]


F_PARAMETER = {"name": "f", "in": "query", "required": False, "description": "Output format",
               "schema": {"type": "string", "enum": ["json", "html"]}, "style": "form", "explode": False}
ITEMS_PARAMETERS = [
    {"name": "limit", "in": "query", "required": False, "style": "form", "explode": False,
     "description": "Page size. Values above the server maximum are capped (not an error).",
     "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 10}},
    {"name": "bbox", "in": "query", "required": False, "style": "form", "explode": False,
     "description": "minx,miny,maxx,maxy (or 6 numbers) in CRS84; minx > maxx crosses the antimeridian.",
     "schema": {"type": "array", "minItems": 4, "maxItems": 6, "items": {"type": "number"}}},
    {"name": "datetime", "in": "query", "required": False, "style": "form", "explode": False,
     "description": "Instant or interval (a/b, ../b, a/..), RFC 3339.", "schema": {"type": "string"}},
    {"name": "offset", "in": "query", "required": False, "style": "form", "explode": False,
     "description": "Features to skip (prefer the next links).", "schema": {"type": "integer", "minimum": 0}},
    {"name": "cursor", "in": "query", "required": False, "style": "form", "explode": False,
     "description": "Opaque paging token from a next/prev link.", "schema": {"type": "string"}},
    F_PARAMETER,
]
HEAD = b'{"type":"FeatureCollection","features":['


@router.get(
    "/collections/{collectionId}/items",
    operation_id="get_collection_items",
    summary="Features of a collection",
    description="Features in id order. Besides the parameters below, every filterable property of the collection "
    "can be used as an equality filter (e.g. `?status=poor`). `next`/`prev` links page by key (`cursor`).",
    response_model=FeatureCollection,
    openapi_extra={"parameters": ITEMS_PARAMETERS},
    responses={200: {"content": {GEOJSON: {}, HTML: {}}}, 400: {"description": "Invalid parameter"},
               401: {"description": "Authentication required"}, 403: {"description": "Role too low"},
               404: {"description": "No such collection"}},
)
async def get_collection_items(request: Request, collectionId: str = Path(...)) -> Response:  # noqa: N803
    # Query parameters are parsed from request.query_params (items_query) and documented through
    # openapi_extra: FastAPI's per-parameter validation costs more than the whole database round trip.
    role = await current_role(request)
    layer = await get_layer(request, collectionId, role)
    fmt = negotiate(request)
    q = items_query(request, layer)
    pool = request.app.state.read_pool
    cache = request.app.state.count_cache
    if fmt is OutputType.html or q.limit <= STREAM_ABOVE:
        page = await repo.fetch_page(pool, layer, role, q)
        matched = await repo.number_matched(pool, cache, layer, role, q, page.version)
        links = _page_links(request, layer, q, page.first_key, page.last_key, page.more_after, page.more_before)
        if fmt is OutputType.html:
            feats = orjson.loads(f"[{page.body}]")
            return html_response(request, "items.html", layer=layer, features=feats, matched=matched, links=links,
                                 geojson={"type": "FeatureCollection", "features": feats})
        body = HEAD + page.body.encode() + _envelope_tail(matched, page.returned, links)
        return Response(body, media_type=GEOJSON)
    return await _streamed_items(request, layer, role, q)


async def _streamed_items(request: Request, layer: Layer, role: Role | None, q: repo.ItemsQuery) -> Response:
    pool = request.app.state.read_pool
    cache = request.app.state.count_cache
    version = await repo.current_version(pool, layer)
    matched = await repo.number_matched(pool, cache, layer, role, q, version)
    stream = repo.stream_page(pool, layer, role, q)
    first_batch = await anext(stream, None)  # errors surface here, before the response starts

    async def body() -> AsyncIterator[bytes]:
        yield HEAD
        n = 0
        first = last = None
        more = False
        batch = first_batch
        while batch is not None:
            rows, more = batch
            if rows:
                if first is None:
                    first = rows[0][1]
                last = rows[-1][1]
                yield (b"," if n else b"") + b",".join(r[0].encode() for r in rows)
                n += len(rows)
            batch = await anext(stream, None)
        forward = q.cursor is None or q.cursor.forward
        links = _page_links(request, layer, q, (first,) if first is not None else None,
                            (last,) if last is not None else None,
                            more if forward else True, (q.cursor is not None or q.offset > 0) if forward else more)
        yield _envelope_tail(matched, n, links)

    return StreamingResponse(body(), media_type=GEOJSON)


@router.get(
    "/collections/{collectionId}/items/{featureId}",
    operation_id="get_collection_item",
    summary="One feature",
    response_model=Feature,
    openapi_extra={"parameters": [F_PARAMETER]},
    responses={200: {"content": {GEOJSON: {}, HTML: {}}}, 404: {"description": "No such feature"}},
)
async def get_collection_item(
    request: Request, collectionId: str = Path(...), featureId: str = Path(...)  # noqa: N803
) -> Response:
    role = await current_role(request)
    layer = await get_layer(request, collectionId, role)
    fmt = negotiate(request)
    unknown = set(request.query_params) - {"f"}
    if unknown:
        raise InvalidParameter(f"Unknown query parameter(s): {', '.join(sorted(unknown))}.")
    fid: Any = featureId
    if "\x00" in featureId:  # PostgreSQL text cannot hold NUL, so no such feature can exist
        raise NotFound(f"There is no such feature in '{layer.id}'.")
    if layer.id_schema.get("type") == "integer":
        try:
            fid = int(featureId)
        except ValueError:
            raise NotFound(f"There is no feature '{featureId}' in '{layer.id}'.") from None
        if not -(2**63) <= fid < 2**63:
            raise NotFound(f"There is no feature '{featureId}' in '{layer.id}'.")
    text = await repo.fetch_feature(request.app.state.read_pool, layer, role, fid)
    if text is None:
        raise NotFound(f"There is no feature '{featureId}' in '{layer.id}'.")
    path = f"/collections/{layer.id}/items/{featureId}"
    links = self_links(request, path, GEOJSON, "This feature") + [
        link(url_for(request, f"/collections/{layer.id}"), "collection", JSON, layer.title)]
    if fmt is OutputType.html:
        feat = orjson.loads(text)
        return html_response(request, "item.html", layer=layer, feature=feat, links=links)
    body = text[:-1] + ',"links":' + orjson.dumps(links).decode() + "}"
    return Response(body, media_type=GEOJSON)
