"""OGC API - Features Part 1: collections, items and single features.

GeoJSON is produced by PostGIS (one text value per feature) and spliced into the response; pages up
to ``STREAM_ABOVE`` features are sent in one piece, larger ones are streamed from a server-side cursor
so memory stays bounded whatever the page size.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from importlib import metadata
from typing import Any, Literal, TypeVar

import orjson
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from app.auth import SIGN_IN, RoleDep, current_role, require
from app.errors import DatabaseUnavailable, DomainError, InvalidParameter, NotFound, Unauthorized
from app.ingest import bulk
from app.layers.catalog import Catalog, Layer, Prop
from app.layers.cql2 import GEOMETRY_NAME, ID_NAME, queryable_names
from app.layers.crs import CRS84, content_crs_header
from app.layers.query import Cursor, ItemsQuery, PageLimits, Params, crs_param
from app.layers.query import items_query as build_items_query
from app.models.codes import Role
from app.ogc.common import Conformance, Link
from app.ogc.render import (
    CSV,
    FLATGEOBUF,
    GEOJSON,
    HTML,
    JSON,
    PARQUET,
    SCHEMA_JSON,
    OutputType,
    html_response,
    json_response,
    link,
    negotiate,
    respond,
    self_links,
    url_for,
)
from app.repositories import features as repo

log = logging.getLogger(__name__)
T = TypeVar("T")
SERVICE_VERSION = metadata.version("tpa-gis")
NOT_MODIFIED = {"description": "Not modified: If-None-Match named the current ETag (JSON answers; the ETag is weak "
                "and changes with the data, the caller's role and the query)"}

router = APIRouter(tags=["Data"])

_F3 = "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/"
_CQL2 = "http://www.opengis.net/spec/cql2/1.0/conf/"
CONFORMANCE: tuple[str, ...] = (
    Conformance.core, Conformance.geojson, Conformance.html, Conformance.oas30,
    "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
    _F3 + "filter", _F3 + "features-filter", _F3 + "queryables", _F3 + "queryables-query-parameters",
    _CQL2 + "cql2-text", _CQL2 + "cql2-json", _CQL2 + "basic-cql2", _CQL2 + "advanced-comparison-operators",
    _CQL2 + "case-insensitive-comparison", _CQL2 + "basic-spatial-functions", _CQL2 + "basic-spatial-functions-plus",
    _CQL2 + "spatial-functions", _CQL2 + "temporal-functions", _CQL2 + "array-functions",
    _CQL2 + "property-property", _CQL2 + "arithmetic",
)
GREGORIAN = "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"
STREAM_ABOVE = 1000  # rows


class SpatialExtent(BaseModel):
    bbox: list[list[float]]
    crs: str = CRS84


class TemporalExtent(BaseModel):
    interval: list[list[str | None]]
    trs: str = GREGORIAN


class CollectionExtent(BaseModel):
    spatial: SpatialExtent | None = None
    temporal: TemporalExtent | None = None


class Collection(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    title: str | None = None
    description: str | None = None
    links: list[Link]
    itemType: str = "feature"  # noqa: N815
    extent: CollectionExtent | None = None
    crs: list[str] | None = None
    storageCrs: str | None = None  # noqa: N815
    keywords: list[str] | None = None
    attribution: str | None = None
    accessRole: str | None = Field(None, description="Role a key needs to read the collection (none: public)")  # noqa: N815


class Collections(BaseModel):
    model_config = ConfigDict(extra="allow")
    links: list[Link]
    collections: list[Collection]


class Feature(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["Feature"] = "Feature"
    id: str | int | None = None
    geometry: dict[str, Any] | None
    properties: dict[str, Any] | None
    links: list[Link] | None = None


class FeatureCollection(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[Feature]
    numberMatched: int | None = None  # noqa: N815
    numberReturned: int | None = None  # noqa: N815
    timeStamp: str | None = None  # noqa: N815
    links: list[Link] | None = None


async def _catalogue_read(read: Awaitable[T], what: str) -> T:
    """A read of the catalogue; an unexpected failure is logged with its cause and answered 503."""
    try:
        return await read
    except DomainError:
        raise
    except Exception:
        log.exception("%s could not be read", what)
        raise DatabaseUnavailable("The layer catalogue cannot be read: the database is not reachable.") from None


async def current_catalog(request: Request, force: bool = False) -> Catalog:
    """The catalogue, kept in step with the data (``LiveCatalog``); ``force``: as of now."""
    return await _catalogue_read(request.app.state.catalog.current(force), "the layer catalogue")


async def find_layer(request: Request, collection_id: str) -> Layer | None:
    """A collection by id (``LiveCatalog.find``): listed, or a result read by its URL."""
    return await _catalogue_read(request.app.state.catalog.find(collection_id), f"the collection {collection_id}")


async def get_layer(request: Request, collection_id: str, role: Role | None) -> Layer:
    layer = await find_layer(request, collection_id)
    if layer is not None and layer.hidden_from(role, getattr(request.state, "actor", None)):
        if role is None:  # someone's restricted results: sign in, then the owner (or an admin) reads them
            raise Unauthorized(f"The collection '{collection_id}' holds restricted results: {SIGN_IN}")
        layer = None  # other users' results are answered as if they did not exist
    if layer is None:
        raise NotFound(f"There is no collection '{collection_id}'.")
    require(role, layer.required_role, f"the collection '{collection_id}'")
    return layer


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def collection_document(request: Request, layer: Layer, crs: tuple[str, ...], top: bool = False) -> dict[str, Any]:
    path = f"/collections/{layer.id}"
    if top:
        links = self_links(request, path, JSON, layer.title)
    else:
        links = [link(url_for(request, path), "self", JSON, layer.title),
                 link(url_for(request, path, {"f": "html"}), "alternate", HTML, layer.title)]
    links += [
        link(url_for(request, path + "/items", {"f": "json"}), "items", GEOJSON, f"{layer.title} (GeoJSON)"),
        link(url_for(request, path + "/items", {"f": "html"}), "items", HTML, f"{layer.title} (HTML)"),
        link(url_for(request, path + "/items", {"f": "csv"}), "items", CSV, f"{layer.title} (CSV)"),
        link(url_for(request, path + "/queryables"), QUERYABLES_REL, SCHEMA_JSON, "Queryables"),
        link(url_for(request, path + "/schema"), SCHEMA_REL, SCHEMA_JSON, "Schema of the features"),
    ]
    if layer.license:
        links.append(link(layer.license, "license", HTML, "Licence"))
    if layer.geom is not None:
        links += [link(url_for(request, path + "/tiles"), TILESETS_REL, JSON, "Vector tiles"),
                  link(url_for(request, path + "/styles/default", {"f": "mapbox"}), "stylesheet", MAPBOX_STYLE,
                       "Style (MapLibre GL, on the vector tiles)")]
    if layer.style:
        links.append(link(url_for(request, path + "/styles/default", {"f": "qml"}), "stylesheet", QML,
                          "Style (QGIS QML)"))
    for rid in layer.extent.regions:
        links.append(link(url_for(request, f"/regions/{rid}"), "related", JSON, f"Region {rid}"))
    if layer.context and layer.context.get("job"):
        links.append(link(url_for(request, f"/jobs/{layer.context['job']}"), "related", JSON,
                          "The job that computed this result"))
    doc: dict[str, Any] = {
        "id": layer.id,
        "title": layer.title,
        "description": layer.description,
        "links": links,
        "itemType": "feature",
        "crs": list(crs) if layer.geom is not None else [CRS84],
        "storageCrs": CRS84,
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
    if layer.style:
        doc["style"] = dict(layer.style)
    if layer.context:
        doc["result"] = {k: layer.context.get(k) for k in ("process", "process_title", "job", "output", "inputs",
                                                           "owner", "created")}
    return doc


@router.get(
    "/collections",
    operation_id="get_collections",
    summary="The feature collections the caller may read",
    response_model=Collections,
    responses={200: {"content": {HTML: {}}}, 304: NOT_MODIFIED},
)
async def get_collections(request: Request, role: RoleDep) -> Response:
    catalog = await current_catalog(request)

    def body() -> dict[str, Any]:
        return {
            "links": self_links(request, "/collections", JSON, "Collections"),
            "collections": [collection_document(request, lyr, catalog.crs)
                            for lyr in catalog.visible(role, getattr(request.state, "actor", None))],
            "crs": list(catalog.crs),
        }

    if negotiate(request) is OutputType.html:
        return respond(request, body(), "collections.html")
    etag = document_etag(request, role, sorted(catalog.versions.items()))
    return conditional(request, etag, role is None, lambda h: json_response(body(), headers=h))


@router.get(
    "/collections/{collectionId}",
    operation_id="get_collection",
    summary="One feature collection",
    response_model=Collection,
    responses={200: {"content": {HTML: {}}}, 304: NOT_MODIFIED, 404: {"description": "No such collection"}},
)
async def get_collection(request: Request, role: RoleDep, collectionId: str = Path(...)) -> Response:  # noqa: N803
    layer = await get_layer(request, collectionId, role)
    catalog = await current_catalog(request)
    if negotiate(request) is OutputType.html:
        return respond(request, collection_document(request, layer, catalog.crs, top=True), "collection.html",
                       layer=layer)
    etag = document_etag(request, role, sorted(catalog.versions.items()), layer.extent)
    return conditional(request, etag, is_public(layer),
                        lambda h: json_response(collection_document(request, layer, catalog.crs, top=True),
                                                headers=h))


def items_query(request: Request, catalog: Catalog, layer: Layer, role: Role | None,
                output: str = "geojson", html: bool = False) -> ItemsQuery:
    """The items query of a request; ``html``: a page for a person (html_default_limit, at most html_max_limit);
    output ``wkb`` (the bulk formats): the whole selection by default, up to bulk_max_limit."""
    api = request.app.state.settings.api
    if html:
        limits = PageLimits(api.html_default_limit, api.html_max_limit)
    elif output == "wkb":
        limits = PageLimits(api.bulk_max_limit, api.bulk_max_limit)
    else:
        limits = PageLimits(api.default_limit, api.max_limit)
    return build_items_query(Params(request.query_params.multi_items()), catalog, layer, role, limits, output)


def _page_links(
    request: Request, layer: Layer, q: ItemsQuery, first: list | None, last: list | None,
    more_after: bool, more_before: bool,
) -> list[dict[str, Any]]:
    path = f"/collections/{layer.id}/items"
    keep = {k: v for k, v in request.query_params.multi_items() if k not in ("f", "offset", "cursor")}
    fmt = negotiate(request, csv=True)
    ftype, fparam = {OutputType.html: (HTML, "html"), OutputType.csv: (CSV, "csv"),
                     OutputType.fgb: (FLATGEOBUF, "fgb"), OutputType.parquet: (PARQUET, "parquet")}.get(
        fmt, (GEOJSON, "json"))
    links = self_links(request, path, GEOJSON, f"{layer.title} items", csv=True)
    links.append(link(url_for(request, f"/collections/{layer.id}"), "collection", JSON, layer.title))
    if more_after and last is not None:
        token = Cursor(tuple(last), True).encode()
        links.append(link(url_for(request, path, {**keep, "cursor": token, "f": fparam}), "next", ftype, "Next page"))
    if more_before:
        if q.cursor is None and q.offset:
            prev = {**keep, "f": fparam}
            if q.offset - q.limit > 0:
                prev["offset"] = q.offset - q.limit
            links.append(link(url_for(request, path, prev), "prev", ftype, "Previous page"))
        elif first is not None:
            token = Cursor(tuple(first), False).encode()
            links.append(link(url_for(request, path, {**keep, "cursor": token, "f": fparam}), "prev", ftype,
                              "Previous page"))
    return links


def _matched_header(matched: int | None) -> dict[str, str]:
    return {} if matched is None else {"OGC-NumberMatched": str(matched)}


def _envelope_tail(matched: int | None, returned: int, links: list[dict[str, Any]]) -> bytes:
    """The collection's members after the features; ``numberMatched`` only when known (it is optional)."""
    counts = {"numberReturned": returned} if matched is None else {"numberMatched": matched, "numberReturned": returned}
    tail = orjson.dumps({**counts, "timeStamp": _now(), "links": links})
    return b"]," + tail[1:]


def _q(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "style": "form", "explode": False,
            "description": description, "schema": schema}


F_PARAMETER = _q("f", "Output format", {"type": "string", "enum": ["json", "html"]})
CRS_PARAMETER = _q("crs", "CRS of the returned geometries (one of the collection's `crs` URIs); default CRS84. "
                   "EPSG:4326 and EPSG:4490 are written latitude first.", {"type": "string", "format": "uri"})
ITEMS_PARAMETERS = [
    _q("limit", "Page size. Values above the server maximum (10,000 unless TPA_API_MAX_LIMIT says otherwise) are "
       "capped, not refused (OGC API - Features, /req/core/fc-limit-response-1).",
       {"type": "integer", "minimum": 1, "default": 10}),
    _q("bbox", "minx,miny,maxx,maxy (or 6 numbers) in `bbox-crs` (CRS84 by default; minx > maxx crosses the "
       "antimeridian). Comma-separated, or the parameter repeated once per number. Features without a geometry "
       "match every bbox.", {"type": "array", "minItems": 4, "maxItems": 6, "items": {"type": "number"}}),
    _q("bbox-crs", "CRS of `bbox` (one of the collection's `crs` URIs).", {"type": "string", "format": "uri"}),
    _q("datetime", "Instant or interval (a/b, ../b, a/..), RFC 3339.", {"type": "string"}),
    _q("filter", "CQL2 filter (see `filter-lang`) over the collection's queryables.", {"type": "string"}),
    _q("filter-lang", "Encoding of `filter`: cql2-text (when not given) or cql2-json.",
       {"type": "string", "enum": ["cql2-text", "cql2-json"]}),
    _q("filter-crs", "CRS of geometry literals in `filter`; default CRS84.", {"type": "string", "format": "uri"}),
    _q("sortby", "Sort keys, comma-separated (or repeated), `+name` ascending (default) or `-name` descending; the "
       "id breaks ties.",
       {"type": "array", "items": {"type": "string", "pattern": "^[+-]?[A-Za-z0-9_]+$"}}),
    _q("properties", "Properties to return (comma-separated, or repeated); empty returns none.",
       {"type": "array", "items": {"type": "string"}}),
    _q("skipGeometry", "Leave geometries out (null).", {"type": "boolean", "default": False}),
    CRS_PARAMETER,
    _q("offset", "Features to skip (prefer the next links).", {"type": "integer", "minimum": 0}),
    _q("cursor", "Opaque paging token from a next/prev link.", {"type": "string"}),
    _q("f", "Output format: GeoJSON, HTML, CSV (geometry as WKT), or for downloads FlatGeobuf (fgb) and GeoParquet "
       "1.1 (parquet): these two return the whole selection by default, up to TPA_API_BULK_MAX_LIMIT (1,000,000) "
       "features, with the count and paging links in the OGC-NumberMatched and Link headers.",
       {"type": "string", "enum": ["json", "html", "csv", "fgb", "parquet"]}),
]
HEAD = b'{"type":"FeatureCollection","features":['


@router.get(
    "/collections/{collectionId}/items",
    operation_id="get_collection_items",
    summary="Features of a collection",
    description="Features in id order (or `sortby`). Besides the parameters below, every filterable property of "
    "the collection can be used as an equality filter (e.g. `?status=poor`). `next`/`prev` links page by key "
    "(`cursor`). Geometries are in `crs` (stated by the `Content-Crs` header).",
    response_model=FeatureCollection,
    openapi_extra={"parameters": ITEMS_PARAMETERS},
    responses={200: {"content": {GEOJSON: {}, HTML: {}, CSV: {},
                                 FLATGEOBUF: {"schema": {"type": "string", "format": "binary"}},
                                 PARQUET: {"schema": {"type": "string", "format": "binary"}}}}, 304: NOT_MODIFIED,
               400: {"description": "Invalid parameter"},
               401: {"description": "Authentication required"}, 403: {"description": "Role too low"},
               404: {"description": "No such collection"}},
)
async def get_collection_items(request: Request, collectionId: str = Path(...)) -> Response:  # noqa: N803
    # Query parameters are parsed from request.query_params (items_query) and documented through
    # openapi_extra: FastAPI's per-parameter validation costs more than the whole database round trip.
    role = await current_role(request)
    layer = await get_layer(request, collectionId, role)
    fmt = negotiate(request, csv=True)
    output = {OutputType.csv: "csv", OutputType.fgb: "wkb", OutputType.parquet: "wkb"}.get(fmt, "geojson")
    q = items_query(request, await current_catalog(request), layer, role, output, html=fmt is OutputType.html)
    if fmt is OutputType.html and not q.crs.is_storage:
        raise InvalidParameter("The HTML map shows CRS84 only; ask for f=json or f=csv with crs.")
    headers = {"Content-Crs": content_crs_header(q.crs)}
    pool = request.app.state.read_pool
    cache = request.app.state.count_cache
    if fmt is OutputType.csv:
        return await _streamed_items(request, layer, role, q, headers)
    if fmt in (OutputType.fgb, OutputType.parquet):
        return await _bulk_items(request, layer, role, q, headers, bulk.FORMATS[fmt.value])
    if fmt is OutputType.json and q.limit <= STREAM_ABOVE and request.headers.get("if-none-match"):
        # the tables' version first (one small query): a client that holds this page gets 304 without the page
        held = document_etag(request, role, await repo.current_version(pool, layer))
        if etag_matches(request.headers.get("if-none-match"), held):
            return Response(status_code=304, headers=validators(held, is_public(layer)))
    if fmt is OutputType.html or q.limit <= STREAM_ABOVE:
        page = await repo.fetch_page(pool, layer, role, q)
        matched = await repo.number_matched(pool, cache, layer, role, q, page.version)
        links = _page_links(request, layer, q, page.first_key, page.last_key, page.more_after, page.more_before)
        if fmt is OutputType.html:
            feats = orjson.loads(f"[{page.body}]")
            return html_response(request, "items.html", layer=layer, features=feats, matched=matched, links=links,
                                 geojson=map_features(feats, layer.style))
        body = HEAD + page.body.encode() + _envelope_tail(matched, page.returned, links)
        etag = document_etag(request, role, page.version)
        return conditional(request, etag, is_public(layer),
                            lambda h: Response(body, media_type=GEOJSON, headers={**headers, **h}))
    return await _streamed_items(request, layer, role, q, headers)


def map_features(features: list[dict[str, Any]], style: dict[str, Any] | None) -> dict[str, Any]:
    """What the page's map needs of the features: geometry, id, name (tooltip) and the styled property. The table
    shows the rest; a page of 500 results was several times larger with every property embedded twice."""
    keep = {"name"} | ({style["property"]} if style and style.get("property") else set())
    return {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": f.get("id"), "geometry": f.get("geometry"),
         "properties": {k: v for k, v in (f.get("properties") or {}).items() if k in keep}} for f in features]}


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@") and not _NUMBER.match(value):
        return "'" + value  # no formulas when the file is opened in a spreadsheet
    return value


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _csv_lines(records: list[Any], with_geometry: bool) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for r in records:
        values = list(r.values())[:-1]  # the last column is the sort key
        writer.writerow([_csv_value(v) for v in values])
    return out.getvalue().encode()


def _csv_header(layer: Layer, q: ItemsQuery) -> bytes:
    out = io.StringIO()
    names = ["id"] + [p.name for p in repo.selected_props(layer, q.properties)]
    if layer.geom is not None and not q.skip_geometry:
        names.append("wkt")
    csv.writer(out, lineterminator="\r\n").writerow(names)
    return out.getvalue().encode()


async def _streamed_items(request: Request, layer: Layer, role: Role | None, q: ItemsQuery,
                          headers: dict[str, str]) -> Response:
    pool = request.app.state.read_pool
    cache = request.app.state.count_cache
    version = await repo.current_version(pool, layer)
    matched = await repo.number_matched(pool, cache, layer, role, q, version)
    stream = repo.stream_page(pool, layer, role, q)
    first_batch = await anext(stream, None)  # errors surface here, before the response starts
    csv_out = q.output == "csv"
    forward = q.cursor is None or q.cursor.forward

    async def body() -> AsyncIterator[bytes]:
        yield _csv_header(layer, q) if csv_out else HEAD
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
                if csv_out:
                    yield _csv_lines([r[0] for r in rows], layer.geom is not None)
                else:
                    yield (b"," if n else b"") + b",".join(r[0].encode() for r in rows)
                n += len(rows)
            batch = await anext(stream, None)
        if not csv_out:
            links = _page_links(request, layer, q, orjson.loads(first) if first else None,
                                orjson.loads(last) if last else None, more if forward else True,
                                (q.cursor is not None or q.offset > 0) if forward else more)
            yield _envelope_tail(matched, n, links)

    if not csv_out:
        return StreamingResponse(body(), media_type=GEOJSON, headers=headers)
    # CSV has no envelope: the count and, for pages up to STREAM_ABOVE rows (read whole first), the
    # paging links travel in headers (OGC-NumberMatched, RFC 8288 Link). Larger pages are streamed.
    headers = {**headers, **_matched_header(matched),
               "Content-Disposition": f'inline; filename="{layer.id}.csv"'}
    if q.limit > STREAM_ABOVE:
        return StreamingResponse(body(), media_type=CSV + "; charset=utf-8", headers=headers)
    records: list[Any] = []
    more = False
    batch = first_batch
    while batch is not None:
        records += batch[0]
        more = batch[1]
        batch = await anext(stream, None)
    first = orjson.loads(records[0][1]) if records else None
    last = orjson.loads(records[-1][1]) if records else None
    links = _page_links(request, layer, q, first, last, more if forward else True,
                        (q.cursor is not None or q.offset > 0) if forward else more)
    headers["Link"] = ", ".join(f'<{lk["href"]}>; rel="{lk["rel"]}"; type="{lk["type"]}"' for lk in links
                                if lk["rel"] in ("next", "prev", "collection"))
    content = _csv_header(layer, q) + _csv_lines([r[0] for r in records], layer.geom is not None)
    return Response(content, media_type=CSV + "; charset=utf-8", headers=headers)


async def _bulk_items(request: Request, layer: Layer, role: Role | None, q: ItemsQuery, headers: dict[str, str],
                      fmt: bulk.BulkFormat) -> Response:
    """FlatGeobuf or GeoParquet: written to a temporary file from the streaming cursor (bounded memory), then sent.
    Count and paging links travel in headers (OGC-NumberMatched, Link), as for CSV."""
    with_geometry = layer.geom is not None and not q.skip_geometry
    if fmt.name == "fgb" and not with_geometry:
        raise InvalidParameter("FlatGeobuf holds features with geometry; this selection has none (use f=parquet or "
                               "f=csv).")
    q = replace(q, crs=replace(q.crs, lat_first=False))  # both formats are x/y (easting, longitude first)
    pool = request.app.state.read_pool
    version = await repo.current_version(pool, layer)
    matched = await repo.number_matched(pool, request.app.state.count_cache, layer, role, q, version)
    table = bulk.BulkTable(layer, repo.selected_props(layer, q.properties), with_geometry, q.crs, fmt)
    state: dict[str, Any] = {}
    path = await bulk.write(table, repo.stream_page(pool, layer, role, q), state)
    forward = q.cursor is None or q.cursor.forward
    more = bool(state.get("more"))
    links = _page_links(request, layer, q, orjson.loads(state["first"]) if "first" in state else None,
                        orjson.loads(state["last"]) if "last" in state else None, more if forward else True,
                        (q.cursor is not None or q.offset > 0) if forward else more)
    headers = {**headers, **_matched_header(matched), "OGC-NumberReturned": str(state.get("n", 0)),
               "Content-Disposition": f'attachment; filename="{layer.id}{fmt.suffix}"',
               "Link": ", ".join(f'<{lk["href"]}>; rel="{lk["rel"]}"; type="{lk["type"]}"' for lk in links
                                 if lk["rel"] in ("next", "prev", "collection"))}
    return StreamingResponse(bulk.chunks(path), media_type=fmt.media_type, headers=headers)


def only_params(request: Request, allowed: set[str] | frozenset[str]) -> None:
    """400 for a query parameter the resource does not take, naming those it does."""
    unknown = sorted(set(request.query_params) - set(allowed))
    if unknown:
        raise InvalidParameter(f"Unknown query parameter(s): {', '.join(unknown)}. "
                               f"Allowed: {', '.join(sorted(allowed))}.")


def feature_id(layer: Layer, raw: str) -> Any:
    """The id in the collection's type, or a 404 for ids that cannot exist."""
    if "\x00" in raw:  # PostgreSQL text cannot hold NUL, so no such feature can exist
        raise NotFound(f"There is no such feature in '{layer.id}'.")
    if layer.id_schema.get("type") == "integer":
        try:
            fid = int(raw)
        except ValueError:
            raise NotFound(f"There is no feature '{raw}' in '{layer.id}'.") from None
        if not -(2**63) <= fid < 2**63:
            raise NotFound(f"There is no feature '{raw}' in '{layer.id}'.")
        return fid
    return raw


def etag_matches(header: str | None, etag: str) -> bool:
    if header is None:
        return False
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or f'"{etag}"' in tags or f'W/"{etag}"' in tags


def document_etag(request: Request, role: Role | None, *parts: Any) -> str:
    """A weak validator of a JSON document: what it is built from (the tables' versions, the caller's role and
    identity, the query, the address it was asked at, the service's version). ``timeStamp`` is left out: weak."""
    h = hashlib.blake2b(digest_size=12)
    for part in (SERVICE_VERSION, request.url.path, request.url.query, str(request.base_url),
                 role.value if role else "", getattr(request.state, "actor", None) or "", *parts):
        h.update(str(part).encode())
        h.update(b"\0")
    return h.hexdigest()


def validators(etag: str, public: bool) -> dict[str, str]:
    """The ETag, and who may keep the answer: shared caches (``public``: a public layer, or what anyone is shown) or
    only the caller's own (``private``: restricted layers, and what depends on who asks). Either way a cache
    revalidates each time (``no-cache``): the data may change at any moment and a 304 is cheap."""
    return {"ETag": f'W/"{etag}"', "Cache-Control": "public, no-cache" if public else "private, no-cache"}


def is_public(layer: Layer) -> bool:
    return layer.required_role is None and layer.owner is None


def conditional(request: Request, etag: str, public: bool, build: Callable[[dict[str, str]], Response]
                ) -> Response:
    """304 when the caller holds this version (If-None-Match), else the document with its ETag. HTML pages are not
    validated: each carries a fresh script nonce that a 304 would pair with an old page."""
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=validators(etag, public))
    return build(validators(etag, public))


@router.get(
    "/collections/{collectionId}/items/{featureId}",
    operation_id="get_collection_item",
    summary="One feature",
    description="The feature with its `ETag` (use it in `If-Match` when editing). Geometry in `crs`.",
    response_model=Feature,
    openapi_extra={"parameters": [F_PARAMETER, CRS_PARAMETER]},
    responses={200: {"content": {GEOJSON: {}, HTML: {}}}, 304: {"description": "Not modified (If-None-Match)"},
               404: {"description": "No such feature"}},
)
async def get_collection_item(
    request: Request, collectionId: str = Path(...), featureId: str = Path(...)  # noqa: N803
) -> Response:
    role = await current_role(request)
    layer = await get_layer(request, collectionId, role)
    fmt = negotiate(request)
    only_params(request, {"f", "crs"})
    crs = crs_param(Params(request.query_params.multi_items()), await current_catalog(request), layer, "crs")
    if fmt is OutputType.html and not crs.is_storage:
        raise InvalidParameter("The HTML map shows CRS84 only; ask for f=json with crs.")
    fid = feature_id(layer, featureId)
    found = await repo.fetch_feature(request.app.state.read_pool, layer, role, fid, crs)
    if found is None:
        raise NotFound(f"There is no feature '{featureId}' in '{layer.id}'.")
    text, etag = found
    headers = {"ETag": f'"{etag}"', "Content-Crs": content_crs_header(crs)}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    path = f"/collections/{layer.id}/items/{featureId}"
    links = self_links(request, path, GEOJSON, "This feature") + [
        link(url_for(request, f"/collections/{layer.id}"), "collection", JSON, layer.title)]
    if fmt is OutputType.html:
        feat = orjson.loads(text)
        return html_response(request, "item.html", layer=layer, feature=feat, links=links)
    body = text[:-1] + ',"links":' + orjson.dumps(links).decode() + "}"
    return Response(body, media_type=GEOJSON, headers=headers)


# --------------------------------------------------------------------------------------------- styles
MAPBOX_STYLE = "application/vnd.mapbox.style+json"
TILESETS_REL = "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector"
QML = "application/vnd.qgis.qml"
STYLE_FORMATS = {"mapbox": MAPBOX_STYLE, "qml": QML, "json": JSON}


@router.get(
    "/collections/{collectionId}/styles/default",
    operation_id="get_collection_style",
    summary="How the collection is drawn: MapLibre GL style JSON (f=mapbox), QGIS QML (f=qml) or the description",
    description="f=mapbox (every collection with geometry): a MapLibre style drawing the collection's vector tiles, "
    "in the class colours of an analysis result (LISA and Gi* classes, coupling bands, need levels, coverage) as the "
    "HTML map and legend show them, or in one colour. f=qml and f=json (the style description: property, classes or "
    "breaks): collections that declare style classes.",
    responses={200: {"content": {MAPBOX_STYLE: {"schema": {"type": "object"}}, QML: {"schema": {"type": "string"}},
                                 JSON: {"schema": {"type": "object"}}}},
               404: {"description": "No such collection, no geometry, or (qml, json) no declared style"}},
    openapi_extra={"parameters": [_q("f", "mapbox (default), qml or json", {"type": "string",
                                                                           "enum": list(STYLE_FORMATS)})]},
)
async def get_collection_style(request: Request, collectionId: str = Path(...)) -> Response:  # noqa: N803
    from app.processes import styles

    layer = await _schema_request(request, collectionId)
    f = request.query_params.get("f", "mapbox")
    if f not in STYLE_FORMATS:
        raise InvalidParameter(f"The format f={f} is not offered here; this resource is offered as "
                               f"{', '.join(STYLE_FORMATS)}.")
    if layer.geom is None:
        raise NotFound(f"The collection '{layer.id}' has no geometry to draw.")
    if f == "mapbox":  # every collection: drawn from its vector tiles
        tilejson = url_for(request, f"/collections/{layer.id}/tiles/WebMercatorQuad/tilejson.json")
        return Response(orjson.dumps(styles.maplibre(dict(layer.style) if layer.style else None, layer.id, tilejson,
                                                     layer.geometry_type, layer.title)), media_type=MAPBOX_STYLE)
    if not layer.style:
        raise NotFound(f"The collection '{layer.id}' declares no style classes (f=mapbox draws it in one colour).")
    if f == "qml":
        return Response(styles.qml(dict(layer.style), layer.geometry_type), media_type=QML,
                        headers={"Content-Disposition": f'attachment; filename="{layer.id}.qml"'})
    return Response(orjson.dumps(layer.style), media_type=JSON)


# --------------------------------------------------------------------------------------------- queryables
QUERYABLES_REL = "http://www.opengis.net/def/rel/ogc/1.0/queryables"
_GEOMETRY_FORMATS = {
    "Point": "geometry-point", "MultiPoint": "geometry-multipoint", "LineString": "geometry-linestring",
    "MultiLineString": "geometry-multilinestring", "Polygon": "geometry-polygon",
    "MultiPolygon": "geometry-multipolygon", "GeometryCollection": "geometry-geometrycollection",
}


def queryables_document(request: Request, layer: Layer) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for name in queryable_names(layer):
        if name == GEOMETRY_NAME and layer.geom is not None:
            fmt = _GEOMETRY_FORMATS.get(layer.geometry_type, "geometry-any")
            props[name] = {"title": "Geometry", "format": fmt,
                           "description": "The feature's geometry (for analysts, households are displaced points)."}
            continue
        if name == ID_NAME and layer.prop(ID_NAME) is None:
            props[name] = {"title": "Feature id", **layer.id_schema}
            continue
        prop = layer.prop(name)
        assert prop is not None
        props[name] = {"title": prop.description or prop.name, **prop.schema}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": url_for(request, f"/collections/{layer.id}/queryables"),
        "type": "object",
        "title": layer.title,
        "properties": props,
        "additionalProperties": False,
    }


class Queryables(BaseModel):
    """A JSON Schema (2020-12) of the properties of a collection: the queryables of filters, or the schema of its
    features (``/schema``: required and read-only ones marked)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    schema_uri: str = Field(alias="$schema")
    id_uri: str = Field(alias="$id")
    type: Literal["object"] = "object"
    title: str | None = None
    properties: dict[str, dict[str, Any]]
    required: list[str] | None = None


SCHEMA_REL = "http://www.opengis.net/def/rel/ogc/1.0/schema"
SERVER_DEFAULTS = {"valid_from": "today", "source": "the name of the API key writing"}


async def schema_document(request: Request, layer: Layer) -> dict[str, Any]:
    """The JSON Schema of the collection's features (OGC API - Features Part 5, draft; as pygeoapi serves it):
    every property with its type, ``x-ogc-role`` for the id, the primary geometry and the temporal properties,
    ``readOnly`` for what an edit cannot set, and ``required`` for what a create must give."""
    writable = layer.writable()
    temporal: dict[str, str] = {}
    if layer.temporal is not None:
        names = {id(p.expr): p.name for p in layer.props}
        start, end = layer.temporal.start, layer.temporal.end
        if end is None or end is start:
            temporal[names.get(id(start), "")] = "primary-instant"
        else:
            temporal[names.get(id(start), "")] = "primary-interval-start"
            temporal[names.get(id(end), "")] = "primary-interval-end"
    props: dict[str, Any] = {"id": {"title": "Feature id", **layer.id_schema, "x-ogc-role": "id"}}
    if layer.editable is not None:
        props["id"]["description"] = "Assigned by the server when a new feature comes without one"
    if layer.geom is not None:
        props["geometry"] = {"title": "Geometry", "format": _GEOMETRY_FORMATS.get(layer.geometry_type, "geometry-any"),
                             "x-ogc-role": "primary-geometry"}
        if layer.editable is None:
            props["geometry"]["readOnly"] = True
    for p in layer.props:
        entry: dict[str, Any] = {"title": p.description or p.name, **p.schema}
        if p.name in temporal:
            entry["x-ogc-role"] = temporal[p.name]
        if p.name not in writable:
            entry["readOnly"] = True
        if p.name in SERVER_DEFAULTS and p.name in writable:
            entry["description"] = f"Default: {SERVER_DEFAULTS[p.name]}"
        props[p.name] = entry
    doc: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": url_for(request, f"/collections/{layer.id}/schema"),
        "type": "object",
        "title": layer.title,
        "description": layer.description,
        "properties": props,
    }
    if layer.editable is not None:
        doc["required"] = await _required(request, layer, writable)
    return doc


async def _required(request: Request, layer: Layer, writable: dict[str, tuple[Prop, str, bool]]) -> list[str]:
    """What a create must give: NOT NULL columns without a default, less what the server fills in."""
    from app.repositories.edits import required_columns

    edit = layer.editable
    assert edit is not None
    by_column = {(col, linked): name for name, (_, col, linked) in writable.items()}
    fixed = {c for c, _ in edit.linked_fixed} | {c for c, _ in edit.linked_copy} | {edit.linked_id}
    async with request.app.state.engine.connect() as conn:
        need = {(c, False) for c in await required_columns(conn, edit.table)}
        if edit.linked is not None:
            need |= {(c, True) for c in await required_columns(conn, edit.linked) if c not in fixed}
    out = []
    for col, linked in sorted(need):
        if not linked and col == edit.id_column:
            continue  # assigned by the server
        if not linked and col == edit.geom_column:
            out.append("geometry")
        elif (name := by_column.get((col, linked))) is not None and name not in SERVER_DEFAULTS:
            out.append(name)
    return sorted(set(out))


@router.get(
    "/collections/{collectionId}/schema",
    operation_id="get_collection_schema",
    summary="The schema of the collection's features (JSON Schema 2020-12; required and read-only properties)",
    response_model=Queryables,
    responses={200: {"content": {SCHEMA_JSON: {}, HTML: {}}}, 404: {"description": "No such collection"}},
    openapi_extra={"parameters": [F_PARAMETER]},
)
async def get_collection_schema(request: Request, collectionId: str = Path(...)) -> Response:  # noqa: N803
    layer = await _schema_request(request, collectionId)
    return _schema_answer(request, layer, await schema_document(request, layer), "schema.html")


async def _schema_request(request: Request, collection_id: str) -> Layer:
    """The collection of a JSON Schema resource (queryables, schema), which takes no parameter but ``f``."""
    layer = await get_layer(request, collection_id, await current_role(request))
    only_params(request, {"f"})
    return layer


def _schema_answer(request: Request, layer: Layer, doc: dict[str, Any], template: str) -> Response:
    if negotiate(request) is OutputType.html:
        return html_response(request, template, layer=layer, page=doc)
    return Response(orjson.dumps(doc), media_type=SCHEMA_JSON)


@router.get(
    "/collections/{collectionId}/queryables",
    operation_id="get_queryables",
    summary="The properties a filter may use (JSON Schema 2020-12)",
    response_model=Queryables,
    responses={200: {"content": {SCHEMA_JSON: {}, HTML: {}}}, 404: {"description": "No such collection"}},
    openapi_extra={"parameters": [F_PARAMETER]},
)
async def get_queryables(request: Request, collectionId: str = Path(...)) -> Response:  # noqa: N803
    layer = await _schema_request(request, collectionId)
    return _schema_answer(request, layer, queryables_document(request, layer), "queryables.html")
