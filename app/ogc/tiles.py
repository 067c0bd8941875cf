"""OGC API - Tiles 1.0: vector tiles (Mapbox Vector Tiles) of every collection, and of the dataset.

* ``/tileMatrixSets``: the tiling schemes (WebMercatorQuad, WorldCRS84Quad, CGCS2000Quad);
* ``/collections/{id}/tiles[/{tms}]``: the collection's tilesets and their metadata (limits from the data extent);
  ``…/{tms}/{z}/{row}/{col}``: a tile, with ``properties``, ``filter`` (CQL2), ``datetime`` and the equality
  filters of the items; ``…/{tms}/tilejson.json``: TileJSON 3.0 (WebMercatorQuad);
* ``/tiles[/{tms}]``: the dataset tileset, one MVT layer per collection (``collections=`` selects them).

Access is the features API's: restricted collections need a key, households are shown to analysts at their
displaced points, result layers of other users do not exist. Every tile carries a weak ETag from the versions of
the tables it reads (304 on ``If-None-Match``), ``Cache-Control`` public for public layers and private otherwise.
An empty tile inside the limits is answered 204 (the OGC recommendation); outside the limits, 404.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from app.auth import current_role
from app.errors import InvalidParameter, NotFound
from app.layers.catalog import Layer
from app.layers.query import ItemsQuery, PageLimits, Params, datetime_query, variant
from app.layers.query import items_query as build_items_query
from app.layers.tms import TileGrid, center_zoom, grids
from app.models.codes import Role
from app.ogc.common import Link
from app.ogc.features import (
    NOT_MODIFIED,
    current_catalog,
    document_etag,
    etag_matches,
    get_layer,
    is_public,
    only_params,
    validators,
)
from app.ogc.render import HTML, JSON, link, respond, url_for
from app.repositories import features as features_repo
from app.repositories import tiles as repo
from app.repositories.cache import TileCache

router = APIRouter(tags=["Tiles"])

_T = "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/"
CONFORMANCE: tuple[str, ...] = (
    _T + "core", _T + "tileset", _T + "tilesets-list", _T + "geodata-tilesets", _T + "dataset-tilesets",
    _T + "collections-selection", _T + "datetime", _T + "oas30", _T + "html", _T + "mvt",
    "http://www.opengis.net/spec/tms/2.0/conf/tilematrixset", "http://www.opengis.net/spec/tms/2.0/conf/json-tilematrixset",
)
MVT = "application/vnd.mapbox-vector-tile"
OCTETS = "application/octet-stream"
TILEJSON = "application/json"
REL_TILESETS = "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector"
REL_SCHEME = "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme"
REL_SCHEMES = "http://www.opengis.net/def/rel/ogc/1.0/tiling-schemes"
TEMPLATE = "{tileMatrix}/{tileRow}/{tileCol}"
# items parameters that make no sense for a tile (its bbox is the tile; it holds every matching feature)
_NOT_FOR_TILES = frozenset({"bbox", "bbox-crs", "limit", "offset", "cursor", "sortby", "crs", "skipGeometry"})
_DATASET_PARAMS = frozenset({"f", "collections", "datetime"})
TILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The tile (Mapbox Vector Tile; as application/octet-stream to callers whose Accept asks for "
                         "that and not for MVT)",
          "content": {MVT: {"schema": {"type": "string", "format": "binary"}},
                      OCTETS: {"schema": {"type": "string", "format": "binary"}}}},
    204: {"description": "No feature falls in this tile"},
    304: NOT_MODIFIED,
    400: {"description": "Invalid parameter"},
    401: {"description": "Authentication required"},
    403: {"description": "Role too low"},
    404: {"description": "No such collection, tile matrix set, or tile outside the limits"},
}


def _q(name: str, description: str, schema: dict[str, Any], required: bool = False, **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "style": "form", "explode": False,
            "description": description, "schema": schema, **extra}


_TMS_ID = {"type": "string", "enum": ["WebMercatorQuad", "WorldCRS84Quad", "CGCS2000Quad"]}
F_DOC = _q("f", "Output format", {"type": "string", "enum": ["json", "html"]})
F_MVT = _q("f", "Output format (Mapbox Vector Tile)", {"type": "string", "enum": ["mvt"]})
DATETIME = _q("datetime", "Only features valid at this instant or in this interval (RFC 3339; a/b, ../b, a/..).",
              {"type": "string"})
TILE_PARAMETERS = [
    F_MVT, DATETIME,
    _q("properties", "Properties to put in the tile (comma-separated); default all, empty none. The feature id is "
       "always there: the MVT feature id where the collection's ids are integers, else the property `id`.",
       {"type": "array", "items": {"type": "string"}}),
    _q("filter", "CQL2 filter over the collection's queryables (as for the items).", {"type": "string"}),
    _q("filter-lang", "cql2-text (when not given) or cql2-json.", {"type": "string",
                                                                   "enum": ["cql2-text", "cql2-json"]}),
    _q("filter-crs", "CRS of geometry literals in `filter`; default CRS84.", {"type": "string", "format": "uri"}),
]
COLLECTIONS = _q("collections", "Collections to put in the tile, one MVT layer each (comma-separated); default every "
                 "collection with geometry the caller may read.", {"type": "array", "items": {"type": "string"}})


# --------------------------------------------------------------------------------------------- documents (OpenAPI)
class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class TileMatrixSetItem(_Open):
    id: str
    title: str | None = None
    uri: str | None = None
    crs: str | None = None
    links: list[Link]


class TileMatrixSetList(_Open):
    tileMatrixSets: list[TileMatrixSetItem]  # noqa: N815
    links: list[Link] | None = None


class TileMatrixSetDocument(_Open):
    id: str
    title: str | None = None
    uri: str | None = None
    crs: str
    orderedAxes: list[str] | None = None  # noqa: N815
    tileMatrices: list[dict[str, Any]]  # noqa: N815
    links: list[Link] | None = None


class TilesetItem(_Open):
    title: str | None = None
    dataType: str  # noqa: N815
    crs: str
    tileMatrixSetURI: str | None = None  # noqa: N815
    links: list[Link]


class TilesetList(_Open):
    tilesets: list[TilesetItem]
    links: list[Link] | None = None


class TilesetDocument(TilesetItem):
    tileMatrixSetLimits: list[dict[str, Any]] | None = None  # noqa: N815
    layers: list[dict[str, Any]] | None = None
    boundingBox: dict[str, Any] | None = None  # noqa: N815
    centerPoint: dict[str, Any] | None = None  # noqa: N815


class TileJson(_Open):
    tilejson: str
    name: str | None = None
    scheme: str | None = None
    version: str | None = None
    attribution: str | None = None
    tiles: list[str]
    minzoom: int | None = None
    maxzoom: int | None = None
    bounds: list[float] | None = None
    center: list[float] | None = None
    vector_layers: list[dict[str, Any]]


def _grid(tms_id: str) -> TileGrid:
    grid = grids().get(tms_id)
    if grid is None:
        raise NotFound(f"There is no tile matrix set '{tms_id}'. Offered: {', '.join(grids())}.")
    return grid


async def _collection(request: Request, collection_id: str) -> tuple[Role | None, Layer]:
    """The caller's role and the collection, if they may read it and it has geometry."""
    role = await current_role(request)
    return role, _tile_layer(await get_layer(request, collection_id, role))


def _tile_layer(layer: Layer) -> Layer:
    if layer.geom is None:
        raise NotFound(f"The collection '{layer.id}' has no geometry, so no tiles.")
    return layer


# --------------------------------------------------------------------------------------------- tile matrix sets
def _tms_summary(request: Request, grid: TileGrid) -> dict[str, Any]:
    out: dict[str, Any] = {"id": grid.id, "title": grid.title, "crs": grid.crs_uri,
                           "links": [link(url_for(request, f"/tileMatrixSets/{grid.id}"), "self", JSON, grid.title),
                                     link(url_for(request, f"/tileMatrixSets/{grid.id}", {"f": "html"}), "alternate",
                                          HTML, grid.title)]}
    if grid.uri:
        out["uri"] = grid.uri
    return out


@router.get("/tileMatrixSets", operation_id="get_tile_matrix_sets", summary="The tiling schemes offered",
            response_model=TileMatrixSetList,
            openapi_extra={"parameters": [F_DOC]}, responses={200: {"content": {HTML: {}}}})
async def get_tile_matrix_sets(request: Request) -> Response:
    body = {"tileMatrixSets": [_tms_summary(request, g) for g in grids().values()],
            "links": [link(url_for(request, "/tileMatrixSets"), "self", JSON, "Tile matrix sets")]}
    return respond(request, body, "tilematrixsets.html")


@router.get("/tileMatrixSets/{tileMatrixSetId}", operation_id="get_tile_matrix_set",
            summary="A tiling scheme (OGC Two Dimensional Tile Matrix Set 2.0, JSON encoding)",
            response_model=TileMatrixSetDocument,
            openapi_extra={"parameters": [F_DOC]},
            responses={200: {"content": {HTML: {}}}, 404: {"description": "No such tile matrix set"}})
async def get_tile_matrix_set(request: Request,
                              tileMatrixSetId: str = Path(..., json_schema_extra=_TMS_ID)) -> Response:  # noqa: N803
    grid = _grid(tileMatrixSetId)
    doc = grid.document()
    doc["links"] = [link(url_for(request, f"/tileMatrixSets/{grid.id}"), "self", JSON, grid.title)]
    return respond(request, doc, "tilematrixset.html")


# --------------------------------------------------------------------------------------------- tilesets
def _limits(request: Request, grid: TileGrid, layers: list[Layer]) -> tuple[list[dict[str, Any]], Any]:
    boxes = [lyr.extent.bbox for lyr in layers if lyr.extent.bbox]
    bbox = None
    if boxes:
        bbox = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
    return grid.limits(bbox, request.app.state.settings.tiles.max_zoom), bbox


def _layer_description(request: Request, layer: Layer, max_zoom: int) -> dict[str, Any]:
    dims = {"Point": 0, "MultiPoint": 0, "LineString": 1, "MultiLineString": 1, "Polygon": 2, "MultiPolygon": 2}
    props: dict[str, Any] = {} if repo.integer_id(layer) else {"id": {"title": "Feature id", **layer.id_schema}}
    props.update({p.name: {"title": p.description or p.name, **p.schema} for p in layer.props})
    out: dict[str, Any] = {
        "id": layer.id, "title": layer.title, "description": layer.description, "dataType": "vector",
        "featureType": layer.id, "minTileMatrix": "0", "maxTileMatrix": str(max_zoom),
        "propertiesSchema": {"type": "object", "properties": props},
        "links": [link(url_for(request, f"/collections/{layer.id}"), "collection", JSON, layer.title)],
    }
    if layer.geometry_type in dims:
        out["geometryDimension"] = dims[layer.geometry_type]
    return out


def _tileset(request: Request, path: str, grid: TileGrid, layers: list[Layer], title: str,
             keep: dict[str, str]) -> dict[str, Any]:
    limits, bbox = _limits(request, grid, layers)
    max_zoom = request.app.state.settings.tiles.max_zoom
    tiles = url_for(request, f"{path}/{grid.id}/{TEMPLATE}", {**keep, "f": "mvt"}).replace("%7B", "{").replace(
        "%7D", "}")
    doc: dict[str, Any] = {
        "title": title, "dataType": "vector", "crs": grid.crs_uri,
        "links": [
            link(url_for(request, f"{path}/{grid.id}", keep), "self", JSON, title),
            link(url_for(request, f"{path}/{grid.id}", {**keep, "f": "html"}), "alternate", HTML, title),
            link(url_for(request, f"/tileMatrixSets/{grid.id}"), REL_SCHEME, JSON, grid.title),
            link(tiles, "item", MVT, "Mapbox vector tiles", templated=True),
        ],
        "tileMatrixSetLimits": limits,
        "layers": [_layer_description(request, lyr, max_zoom) for lyr in layers],
    }
    if grid.uri:
        doc["tileMatrixSetURI"] = grid.uri
    if grid.id == "WebMercatorQuad":
        doc["links"].append(link(url_for(request, f"{path}/{grid.id}/tilejson.json", keep), "describedby", TILEJSON,
                                 "TileJSON 3.0"))
    if bbox is not None:
        doc["boundingBox"] = {"lowerLeft": [bbox[0], bbox[1]], "upperRight": [bbox[2], bbox[3]],
                              "crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84"}
        cx, cy = grid.center(bbox)
        doc["centerPoint"] = {"coordinates": [cx, cy], "tileMatrix": str(center_zoom(grid, bbox)),
                              "crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84"}
    return doc


def _tilesets_list(request: Request, path: str, title: str, keep: dict[str, str]) -> dict[str, Any]:
    sets = []
    for grid in grids().values():
        entry: dict[str, Any] = {
            "title": f"{title} ({grid.id})", "dataType": "vector", "crs": grid.crs_uri,
            "links": [link(url_for(request, f"{path}/{grid.id}", keep), "self", JSON, f"{title} ({grid.id})"),
                      link(url_for(request, f"/tileMatrixSets/{grid.id}"), REL_SCHEME, JSON, grid.title)]}
        if grid.uri:
            entry["tileMatrixSetURI"] = grid.uri
        sets.append(entry)
    return {"tilesets": sets, "links": [link(url_for(request, path, keep), "self", JSON, title),
                                        link(url_for(request, path, {**keep, "f": "html"}), "alternate", HTML, title)]}


@router.get("/collections/{collectionId}/tiles", operation_id="get_collection_tilesets",
            summary="The collection's vector tilesets, one per tile matrix set", response_model=TilesetList,
            openapi_extra={"parameters": [F_DOC]},
            responses={200: {"content": {HTML: {}}}, 401: {"description": "Authentication required"},
                       404: {"description": "No such collection, or it has no geometry"}})
async def get_collection_tilesets(request: Request, collectionId: str = Path(...)) -> Response:  # noqa: N803
    role, layer = await _collection(request, collectionId)
    only_params(request, {"f"})
    body = _tilesets_list(request, f"/collections/{layer.id}/tiles", f"{layer.title}: vector tiles", {})
    return respond(request, body, "tilesets.html", layers=[layer])


@router.get("/collections/{collectionId}/tiles/{tileMatrixSetId}", operation_id="get_collection_tileset",
            summary="Metadata of the collection's tileset in a tile matrix set (limits from the data extent)",
            response_model=TilesetDocument,
            openapi_extra={"parameters": [F_DOC]},
            responses={200: {"content": {HTML: {}}}, 401: {"description": "Authentication required"},
                       404: {"description": "No such collection or tile matrix set"}})
async def get_collection_tileset(request: Request, collectionId: str = Path(...),  # noqa: N803
                                 tileMatrixSetId: str = Path(..., json_schema_extra=_TMS_ID)) -> Response:  # noqa: N803
    role, layer = await _collection(request, collectionId)
    grid = _grid(tileMatrixSetId)
    only_params(request, {"f"})
    body = _tileset(request, f"/collections/{layer.id}/tiles", grid, [layer], f"{layer.title}: vector tiles", {})
    return respond(request, body, "tileset.html", layers=[layer], grid=grid,
                   style=url_for(request, f"/collections/{layer.id}/styles/default", {"f": "mapbox"}))



def _tile_params(request: Request) -> Params:
    """The tile's query: the items parameters that apply to a tile (refusing the others by name)."""
    pairs = request.query_params.multi_items()
    refused = sorted({k for k, _ in pairs if k in _NOT_FOR_TILES})
    if refused:
        raise InvalidParameter(f"{', '.join(refused)}: not a tile parameter (a tile's area is the tile, and it holds "
                               "every matching feature); use the items for that.")
    _mvt_only(request)
    return Params((k, v) for k, v in pairs if k != "f")


def _mvt_only(request: Request) -> None:
    f = request.query_params.get("f")
    if f is not None and f.lower() != "mvt":
        raise InvalidParameter(f"The format f={f} is not offered here; tiles are offered as mvt "
                               "(application/vnd.mapbox-vector-tile).")


def _tile_numbers(grid: TileGrid, z: str, ri: int, ci: int) -> tuple[int, int, int]:
    """The tile matrix (a path segment: digits) as a number; 404 outside the tile matrix set."""
    try:
        zi = int(z)
    except ValueError:
        raise InvalidParameter("tileMatrix, tileRow and tileCol are integers.") from None
    if not 0 <= zi <= grid.tms.maxzoom:
        raise NotFound(f"{grid.id} has tile matrices 0 to {grid.tms.maxzoom}, not {z}.")
    width, height = grid.matrix_size(zi)
    if not (0 <= ri < height and 0 <= ci < width):
        raise NotFound(f"Tile matrix {zi} of {grid.id} has rows 0-{height - 1} and columns 0-{width - 1}.")
    return zi, ri, ci


def _tile_response(request: Request, body: bytes, etag: str, public: bool) -> Response:
    headers = validators(etag, public)
    if not body:
        return Response(status_code=204, headers=headers)
    accept = request.headers.get("accept", "")
    generic = OCTETS in accept and MVT not in accept  # generic HTTP clients (generated ones) ask for bytes
    return Response(body, media_type=OCTETS if generic else MVT, headers=headers)


@router.get("/collections/{collectionId}/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}",
            operation_id="get_collection_tile", summary="A vector tile of the collection",
            description="The features whose geometry meets the tile (and its buffer), clipped and in tile "
            "coordinates, lines and polygons simplified to the zoom's resolution; at most TPA_TILES_MAX_FEATURES "
            "(10,000) features. `filter`, `datetime`, `properties` and the items' equality filters apply.",
            openapi_extra={"parameters": TILE_PARAMETERS}, responses=TILE_RESPONSES, response_class=Response)
async def get_collection_tile(
    request: Request, collectionId: str = Path(...),  # noqa: N803
    tileMatrixSetId: str = Path(..., json_schema_extra=_TMS_ID),  # noqa: N803
    tileMatrix: str = Path(..., json_schema_extra={"type": "string", "pattern": "^[0-9]+$"}),  # noqa: N803
    tileRow: int = Path(..., ge=0), tileCol: int = Path(..., ge=0),  # noqa: N803
) -> Response:
    role, layer = await _collection(request, collectionId)
    grid = _grid(tileMatrixSetId)
    z, row, col = _tile_numbers(grid, tileMatrix, tileRow, tileCol)
    params = _tile_params(request)
    settings = request.app.state.settings.tiles
    q = build_items_query(params, await current_catalog(request), layer, role, PageLimits(1, 1))
    limits, _ = _limits(request, grid, [layer])
    if not grid.within(limits, z, row, col):
        raise NotFound(f"The tile {z}/{row}/{col} is outside the limits of '{layer.id}' in {grid.id} "
                       "(see its tileset's tileMatrixSetLimits).")
    async def render() -> tuple[bytes, int]:
        return await repo.fetch_tile(request.app.state.read_pool, layer, role, q, repo.Tile(grid, z, row, col),
                                     settings.extent, settings.buffer, settings.max_features)

    async def version() -> int:
        return await features_repo.current_version(request.app.state.read_pool, layer)

    return await _cached_tile(request, role, [layer], version, render)


async def _cached_tile(request: Request, role: Role | None, layers: list[Layer], version: Callable[[], Awaitable[Any]],
                       render: Callable[[], Awaitable[tuple[bytes, Any]]]) -> Response:
    """A tile by its tables' version: 304 when the caller holds it, from the tile cache when it was rendered at this
    version, else rendered (and kept). The version is read first (one small query) only when it can spare the
    rendering: with If-None-Match, or with the cache on."""
    cache: TileCache = request.app.state.tile_cache
    public = all(is_public(lyr) for lyr in layers)
    held = request.headers.get("if-none-match")
    key = (request.url.path, request.url.query, tuple(variant(lyr, role) for lyr in layers))
    current = None
    if held or cache.enabled:
        current = await version()
        etag = document_etag(request, role, [lyr.id for lyr in layers], current)
        if etag_matches(held, etag):
            return Response(status_code=304, headers=validators(etag, public))
        body = cache.get(key, current)
        if body is not None:
            return _tile_response(request, body, etag, public)
    body, rendered = await render()
    if rendered == current:
        cache.put(key, rendered, body)
    return _tile_response(request, body, document_etag(request, role, [lyr.id for lyr in layers], rendered), public)


@router.get("/collections/{collectionId}/tiles/{tileMatrixSetId}/tilejson.json", operation_id="get_collection_tilejson",
            summary="TileJSON 3.0 of the collection's tiles (WebMercatorQuad)", response_model=TileJson,
            description="For MapLibre, Leaflet plug-ins and GDAL. Query parameters (filter, datetime, properties …) "
            "are carried into the tile URLs.",
            openapi_extra={"parameters": TILE_PARAMETERS[1:]},
            responses={401: {"description": "Authentication required"},
                       404: {"description": "No such collection; TileJSON is offered for WebMercatorQuad only"}})
async def get_collection_tilejson(request: Request, collectionId: str = Path(...),  # noqa: N803
                                  tileMatrixSetId: str = Path(..., json_schema_extra=_TMS_ID)) -> Response:  # noqa: N803
    role, layer = await _collection(request, collectionId)
    params = _tile_params(request)
    build_items_query(params, await current_catalog(request), layer, role, PageLimits(1, 1))  # validated here
    return _tilejson(request, f"/collections/{layer.id}/tiles", tileMatrixSetId, [layer], layer.title,
                     dict(params.pairs), layer.attribution)


def _tilejson(request: Request, path: str, tms_id: str, layers: list[Layer], name: str, keep: dict[str, str],
              attribution: str | None) -> Response:
    grid = _grid(tms_id)
    if grid.id != "WebMercatorQuad":
        raise NotFound("TileJSON describes WebMercatorQuad tiles only; use the tileset metadata for other sets.")
    settings = request.app.state.settings.tiles
    _, bbox = _limits(request, grid, layers)
    tiles = url_for(request, f"{path}/{grid.id}/" + "{z}/{y}/{x}", {**keep, "f": "mvt"})
    doc: dict[str, Any] = {
        "tilejson": "3.0.0", "name": name, "scheme": "xyz", "version": "1.0.0",
        "tiles": [tiles.replace("%7B", "{").replace("%7D", "}")],
        "minzoom": 0, "maxzoom": settings.max_zoom,
        "vector_layers": [{"id": lyr.id, "description": lyr.title, "minzoom": 0, "maxzoom": settings.max_zoom,
                           "fields": {**({} if repo.integer_id(lyr) else {"id": "String"}),
                                      **{p.name: repo.mvt_type(p.schema) for p in lyr.props
                                         if "properties" not in keep or p.name in keep["properties"].split(",")}}}
                          for lyr in layers],
    }
    if attribution:
        doc["attribution"] = attribution
    if bbox is not None:
        cx, cy = grid.center(bbox)
        doc["bounds"] = list(bbox)
        doc["center"] = [cx, cy, center_zoom(grid, bbox)]
    return Response(orjson.dumps(doc), media_type=TILEJSON)


# --------------------------------------------------------------------------------------------- dataset tiles
async def _dataset_layers(request: Request, role: Role | None) -> list[Layer]:
    """The selected collections (``collections=``), or every listed collection with geometry the caller may read."""
    only_params(request, _DATASET_PARAMS)
    raw = request.query_params.getlist("collections")
    if raw:
        ids = list(dict.fromkeys(i.strip() for v in raw for i in v.split(",") if i.strip()))
        if not ids:
            raise InvalidParameter("collections: name at least one collection.")
        return [_tile_layer(await get_layer(request, i, role)) for i in ids]
    catalog = await current_catalog(request)
    return [lyr for lyr in catalog.visible(role, getattr(request.state, "actor", None)) if lyr.geom is not None]


def _dataset_keep(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.query_params.items() if k in ("collections", "datetime")}


@router.get("/tiles", operation_id="get_dataset_tilesets", summary="The dataset's vector tilesets (every collection)",
            response_model=TilesetList, openapi_extra={"parameters": [F_DOC, COLLECTIONS]},
            responses={200: {"content": {HTML: {}}}, 404: {"description": "A selected collection does not exist"}})
async def get_dataset_tilesets(request: Request) -> Response:
    role = await current_role(request)
    layers = await _dataset_layers(request, role)
    body = _tilesets_list(request, "/tiles", f"{request.app.state.settings.api.title}: vector tiles",
                          _dataset_keep(request))
    return respond(request, body, "tilesets.html", layers=layers)


@router.get("/tiles/{tileMatrixSetId}", operation_id="get_dataset_tileset",
            summary="Metadata of the dataset tileset: one MVT layer per collection", response_model=TilesetDocument,
            openapi_extra={"parameters": [F_DOC, COLLECTIONS]},
            responses={200: {"content": {HTML: {}}},
                       404: {"description": "No such tile matrix set, or a selected collection does not exist"}})
async def get_dataset_tileset(request: Request,
                              tileMatrixSetId: str = Path(..., json_schema_extra=_TMS_ID)) -> Response:  # noqa: N803
    role = await current_role(request)
    grid = _grid(tileMatrixSetId)
    layers = await _dataset_layers(request, role)
    body = _tileset(request, "/tiles", grid, layers, f"{request.app.state.settings.api.title}: vector tiles",
                    _dataset_keep(request))
    return respond(request, body, "tileset.html", layers=layers, grid=grid, style=None)


@router.get("/tiles/{tileMatrixSetId}/tilejson.json", operation_id="get_dataset_tilejson",
            summary="TileJSON 3.0 of the dataset tiles (WebMercatorQuad)", response_model=TileJson,
            openapi_extra={"parameters": [COLLECTIONS, DATETIME]},
            responses={404: {"description": "TileJSON is offered for WebMercatorQuad only, or a selected collection "
                                            "does not exist"}})
async def get_dataset_tilejson(request: Request,
                               tileMatrixSetId: str = Path(..., json_schema_extra=_TMS_ID)) -> Response:  # noqa: N803
    role = await current_role(request)
    layers = await _dataset_layers(request, role)
    datetime_query(request.query_params.get("datetime"))
    return _tilejson(request, "/tiles", tileMatrixSetId, layers, request.app.state.settings.api.title,
                     _dataset_keep(request), None)


@router.get("/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}", operation_id="get_dataset_tile",
            summary="A vector tile of the dataset: one layer per collection (named by its id)",
            openapi_extra={"parameters": [F_MVT, COLLECTIONS, DATETIME]}, responses=TILE_RESPONSES,
            response_class=Response)
async def get_dataset_tile(
    request: Request, tileMatrixSetId: str = Path(..., json_schema_extra=_TMS_ID),  # noqa: N803
    tileMatrix: str = Path(..., json_schema_extra={"type": "string", "pattern": "^[0-9]+$"}),  # noqa: N803
    tileRow: int = Path(..., ge=0), tileCol: int = Path(..., ge=0),  # noqa: N803
) -> Response:
    role = await current_role(request)
    grid = _grid(tileMatrixSetId)
    z, row, col = _tile_numbers(grid, tileMatrix, tileRow, tileCol)
    _mvt_only(request)
    layers = await _dataset_layers(request, role)
    interval = datetime_query(request.query_params.get("datetime"))
    limits, _ = _limits(request, grid, layers)
    if not grid.within(limits, z, row, col):
        raise NotFound(f"The tile {z}/{row}/{col} is outside the limits of the dataset in {grid.id}.")
    pool = request.app.state.read_pool
    settings = request.app.state.settings.tiles
    tile = repo.Tile(grid, z, row, col)

    async def render() -> tuple[bytes, tuple[int, ...]]:
        parts: list[bytes] = []
        versions = []
        for lyr in layers:  # one MVT layer per collection; MVT layers concatenate into one tile
            body, v = await repo.fetch_tile(pool, lyr, role, ItemsQuery(interval=interval), tile, settings.extent,
                                            settings.buffer, settings.max_features)
            parts.append(body)
            versions.append(v)
        return b"".join(parts), tuple(versions)

    async def version() -> tuple[int, ...]:
        return await repo.current_versions(pool, layers)

    return await _cached_tile(request, role, layers, version, render)

