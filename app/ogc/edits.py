"""OGC API - Features Part 4: create, replace, update (JSON merge patch) and delete features.

For administrators, on the editable collections (villages, projects, facilities, households). Each
request is one transaction: the feature row is locked, ``If-Match`` is compared with its current
ETag (412 when stale), the change is validated (here against the collection's schema, then by the
database's constraints and triggers), and the audit row is written with the feature before and
after. Nothing is written when any step fails.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import replace
from typing import Any, Literal

import orjson
import shapely
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from shapely.geometry import shape as to_shape
from shapely.validation import explain_validity
from sqlalchemy import Text, bindparam, func

from app.auth import current_role, require
from app.errors import DomainError, InvalidData, UnsupportedMediaType
from app.layers.catalog import Layer, Prop
from app.layers.crs import CRS84_DEF, Crs, content_crs_header, parse_crs
from app.models.codes import Role
from app.ogc.features import Feature, current_catalog, feature_id, get_layer
from app.ogc.render import GEOJSON, url_for
from app.repositories import edits as repo
from app.repositories import features as features_repo

router = APIRouter(tags=["Editing"])

_F4 = "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/"
CONFORMANCE: tuple[str, ...] = (_F4 + "create-replace-delete", _F4 + "update", _F4 + "features")
MERGE_PATCH = "application/merge-patch+json"
MAX_BODY = 5 * 1024 * 1024  # bytes


class MethodNotAllowed(DomainError):
    status, code, title = 405, "MethodNotAllowed", "Method not allowed"


async def _writable(request: Request, collection_id: str) -> tuple[Layer, Role, str]:
    role = await current_role(request)
    layer = await get_layer(request, collection_id, role)
    require(role, Role.admin, "editing features")
    assert role is not None
    if layer.editable is None:
        raise MethodNotAllowed(f"The collection '{layer.id}' cannot be edited through the API.")
    return layer, role, getattr(request.state, "actor", "unknown")


async def _json_body(request: Request, media_types: tuple[str, ...]) -> Any:
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if ctype not in media_types:
        raise UnsupportedMediaType(f"Send the body as {' or '.join(media_types)} (got {ctype or 'none'}).")
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise InvalidData(f"The body is larger than {MAX_BODY // (1024 * 1024)} MiB.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidData(f"The body is not valid JSON: {exc}.") from None


def _content_crs(request: Request, supported: tuple[str, ...]) -> Crs:
    raw = request.headers.get("content-crs")
    if raw is None:
        return CRS84_DEF
    return parse_crs(raw.strip().strip("<>"), supported, "Content-Crs")


# --------------------------------------------------------------------------------------------- validation
def writable_props(layer: Layer) -> dict[str, tuple[Prop, str, bool]]:
    """Property name → (prop, column, on the linked table)."""
    assert layer.editable is not None
    return layer.writable()


def _bad(name: str, value: Any, expected: str) -> InvalidData:
    shown = orjson.dumps(value).decode()
    shown = shown if len(shown) <= 60 else shown[:57] + "…"
    return InvalidData(f"Property '{name}': {shown} is not {expected}.")


def convert(prop: Prop, value: Any) -> Any:
    """A JSON value checked against the property's schema and converted for the database."""
    if value is None:
        return None
    s = prop.schema
    kind, fmt = s.get("type"), s.get("format")
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(prop.name, value, "an integer")
        return value
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _bad(prop.name, value, "a finite number")
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise _bad(prop.name, value, "true or false")
        return value
    if kind == "array":
        items = s.get("items", {})
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _bad(prop.name, value, "a list of strings")
        bad = [v for v in value if "enum" in items and v not in items["enum"]]
        if bad:
            raise _bad(prop.name, bad, f"among {', '.join(items['enum'])}")
        return value
    if kind == "object":
        if not isinstance(value, dict):
            raise _bad(prop.name, value, "an object")
        return value
    if not isinstance(value, str):
        raise _bad(prop.name, value, "a string")
    if "enum" in s and value not in s["enum"]:
        raise _bad(prop.name, value, f"one of {', '.join(s['enum'])}")
    if fmt == "date":
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise _bad(prop.name, value, "a date (YYYY-MM-DD)") from None
    if fmt == "date-time":
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            raise _bad(prop.name, value, "an RFC 3339 date-time") from None
    return value


def geometry_sql(layer: Layer, geometry: Any, crs: Crs) -> Any:
    """A validated GeoJSON geometry as a PostGIS expression in storage CRS (bound, not inlined)."""
    edit = layer.editable
    assert edit is not None
    if geometry is None:
        return None
    if not isinstance(geometry, dict):
        raise InvalidData("geometry must be a GeoJSON geometry object or null.")
    try:
        geom = to_shape(geometry)
    except (ValueError, TypeError, AttributeError, IndexError, KeyError, shapely.errors.ShapelyError) as exc:
        raise InvalidData(f"geometry is not valid GeoJSON ({exc}).") from None
    if edit.geometry_types and geom.geom_type not in edit.geometry_types:
        raise InvalidData(f"'{layer.id}' takes {' or '.join(edit.geometry_types)} geometries, not {geom.geom_type}.")
    if geom.is_empty:
        raise InvalidData("geometry is empty.")
    coords = shapely.get_coordinates(geom)
    if not all(math.isfinite(c) for c in coords.ravel()):
        raise InvalidData("geometry coordinates must be finite numbers.")
    if not geom.is_valid:
        raise InvalidData(f"geometry is invalid: {explain_validity(geom)}.")
    if crs.geographic:
        lon, lat = (coords[:, 1], coords[:, 0]) if crs.lat_first else (coords[:, 0], coords[:, 1])
        if (abs(lon) > 180).any() or (abs(lat) > 90).any():
            raise InvalidData("geometry coordinates are outside longitude −180…180 / latitude −90…90"
                              + (" (EPSG:4326 is latitude first)" if crs.lat_first else "") + ".")
    gj = bindparam(None, orjson.dumps(shapely.geometry.mapping(geom)).decode(), type_=Text, unique=True)
    g = func.ST_Force2D(func.ST_SetSRID(func.ST_GeomFromGeoJSON(gj), crs.srid))
    if crs.lat_first:
        g = func.ST_FlipCoordinates(g)
    if crs.srid != 4326:
        g = func.ST_Transform(g, 4326)
    return g


def build_change(layer: Layer, props: Any, geometry: Any, has_geometry: bool, crs: Crs,
                 replace_all: bool) -> repo.Change:
    if props is None:
        props = {}
    if not isinstance(props, dict):
        raise InvalidData("properties must be an object.")
    writable = writable_props(layer)
    unknown = sorted(set(props) - set(writable))
    if unknown:
        raise InvalidData(f"Unknown or read-only properties: {', '.join(unknown)}. "
                          f"Writable: {', '.join(writable)}.")
    main: dict[str, Any] = {}
    linked: dict[str, Any] = {}
    for name, (prop, column, on_linked) in writable.items():
        if name in props:
            value = convert(prop, props[name])
        elif replace_all:
            value = repo.DEFAULT
        else:
            continue
        (linked if on_linked else main)[column] = value
    geom = geometry_sql(layer, geometry, crs) if has_geometry else None
    return repo.Change(main, linked, geom, has_geometry)


def with_defaults(layer: Layer, change: repo.Change, request: Request) -> repo.Change:
    """What a create or replace may leave out: ``valid_from`` is today, ``source`` the name of the key writing."""
    edit = layer.editable
    assert edit is not None
    main = dict(change.main)
    columns = edit.table.c
    if "valid_from" in columns and main.get("valid_from") in (None, repo.DEFAULT):
        main["valid_from"] = dt.date.today()
    if "source" in columns and main.get("source") in (None, repo.DEFAULT):
        main["source"] = f"API ({getattr(request.state, 'key_name', None) or 'unnamed key'})"
    return replace(change, main=main)


async def _check_required(request: Request, layer: Layer, change: repo.Change) -> None:
    edit = layer.editable
    assert edit is not None
    async with request.app.state.engine.connect() as conn:
        need = await repo.required_columns(conn, edit.table)
        need_linked = await repo.required_columns(conn, edit.linked) if edit.linked is not None else set()
    names = {(col, on_linked): name for name, (_, col, on_linked) in writable_props(layer).items()}
    missing = []
    for col in sorted(need - {edit.id_column}):
        if col == edit.geom_column:
            if not change.geometry_given or change.geometry is None:
                missing.append("geometry")
        elif change.main.get(col) is None or change.main.get(col) is repo.DEFAULT:
            missing.append(names.get((col, False), col))
    fixed = {c for c, _ in edit.linked_fixed} | {c for c, _ in edit.linked_copy} | {edit.linked_id}
    for col in sorted(need_linked - fixed):
        if change.linked.get(col) is None or change.linked.get(col) is repo.DEFAULT:
            missing.append(names.get((col, True), col))
    if missing:
        raise InvalidData(f"Missing required values: {', '.join(missing)}.")


def _feature_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or body.get("type") != "Feature":
        raise InvalidData('The body must be a GeoJSON Feature ({"type": "Feature", ...}).')
    if "geometry" not in body:
        raise InvalidData("A Feature has a geometry member (null if it has none).")
    return body


def _written(request: Request, layer: Layer, fid: Any, written: repo.Written, status: int) -> Response:
    assert written.feature is not None and written.etag is not None
    request.app.state.catalog.invalidate()  # extents follow the edit from the next request on
    headers = {"ETag": f'"{written.etag}"', "Content-Crs": content_crs_header(CRS84_DEF)}
    if status == 201:
        headers["Location"] = url_for(request, f"/collections/{layer.id}/items/{fid}")
    return Response(written.feature, status_code=status, media_type=GEOJSON, headers=headers)


_EDIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Invalid feature"}, 401: {"description": "Authentication required"},
    403: {"description": "Administrators only"}, 404: {"description": "No such collection or feature"},
    405: {"description": "Collection not editable"}, 409: {"description": "Conflict (duplicate id, references)"},
    412: {"description": "If-Match does not match the current ETag"}, 415: {"description": "Wrong media type"},
}
class FeatureInput(BaseModel):
    """A GeoJSON Feature to create or replace. On create, ``id`` may be left out: the server assigns one in the
    collection's id scheme. The collection's ``schema`` (``/collections/{id}/schema``) says which properties are
    required and which are read-only."""

    model_config = ConfigDict(extra="allow")
    type: Literal["Feature"]
    id: str | int | None = None
    geometry: dict[str, Any] | None = Field(description="A GeoJSON geometry (CRS84 unless Content-Crs says "
                                            "otherwise), or null")
    properties: dict[str, Any] | None = None


class FeaturePatch(BaseModel):
    """An RFC 7396 JSON merge patch of a feature: the members given replace (properties: merge into) the current
    ones; a property set to null is cleared."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["Feature"] | None = None
    id: str | int | None = None
    geometry: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None


BODY_MODELS = (FeatureInput, FeaturePatch)


def _body(model: type[BaseModel], *media_types: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"required": True, "content": {m: {"schema": ref} for m in media_types}}


_FEATURE_BODY = _body(FeatureInput, GEOJSON, "application/json")
_IF_MATCH = {"name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"},
             "description": "ETag of the feature as last read; 412 if it has changed since."}
_CONTENT_CRS = {"name": "Content-Crs", "in": "header", "required": False, "schema": {"type": "string"},
                "description": "CRS of the body's geometry, e.g. <http://www.opengis.net/def/crs/EPSG/0/3857>; "
                "default CRS84."}


@router.post(
    "/collections/{collectionId}/items",
    operation_id="create_item",
    response_model=Feature,
    summary="Add a feature (administrators)",
    description="Body: a GeoJSON Feature. Without `id`, the server assigns one in the collection's scheme (the "
    "next number of the region's ids; for villages the township's code and the next number; for households a new "
    "pseudonym). `valid_from` defaults to today and `source` to the name of the API key; "
    "`/collections/{collectionId}/schema` says which properties are required. Returns 201 with `Location` and "
    "`ETag`.",
    status_code=201,
    openapi_extra={"requestBody": _FEATURE_BODY, "parameters": [_CONTENT_CRS]},
    responses={201: {"content": {GEOJSON: {}}, "description": "Created"}, **_EDIT_RESPONSES},
)
async def create_item(request: Request, collectionId: str = Path(...)) -> Response:  # noqa: N803
    layer, role, actor = await _writable(request, collectionId)
    catalog = await current_catalog(request)
    body = _feature_body(await _json_body(request, (GEOJSON, "application/json")))
    raw_id = body.get("id")
    fid = None  # none given: the server assigns one in the collection's scheme
    if raw_id is not None:
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or str(raw_id) == "":
            raise InvalidData("'id' is a string or an integer; leave it out and the server assigns one.")
        fid = feature_id(layer, str(raw_id))
    change = build_change(layer, body.get("properties"), body.get("geometry"), True,
                          _content_crs(request, catalog.crs), replace_all=False)
    change = with_defaults(layer, change, request)
    await _check_required(request, layer, change)
    written = await repo.Writer(request.app.state.engine, layer, actor, role).create(fid, change)
    return _written(request, layer, written.fid, written, 201)


@router.put(
    "/collections/{collectionId}/items/{featureId}",
    operation_id="replace_item",
    response_model=Feature,
    summary="Replace a feature (administrators)",
    description="Body: the whole GeoJSON Feature; properties left out are reset to their defaults (or null).",
    openapi_extra={"requestBody": _FEATURE_BODY, "parameters": [_IF_MATCH, _CONTENT_CRS]},
    responses={200: {"content": {GEOJSON: {}}, "description": "Replaced"}, **_EDIT_RESPONSES},
)
async def replace_item(request: Request, collectionId: str = Path(...),  # noqa: N803
                       featureId: str = Path(...)) -> Response:  # noqa: N803
    layer, role, actor = await _writable(request, collectionId)
    catalog = await current_catalog(request)
    fid = feature_id(layer, featureId)
    body = _feature_body(await _json_body(request, (GEOJSON, "application/json")))
    if "id" in body and str(body["id"]) != str(fid):
        raise InvalidData(f"The body's id '{body['id']}' differs from the URL's '{featureId}'.")
    change = build_change(layer, body.get("properties"), body.get("geometry"), True,
                          _content_crs(request, catalog.crs), replace_all=True)
    change = with_defaults(layer, change, request)
    await _check_required(request, layer, change)
    written = await repo.Writer(request.app.state.engine, layer, actor, role).modify(
        "replace", fid, change, request.headers.get("if-match"))
    return _written(request, layer, fid, written, 200)


@router.patch(
    "/collections/{collectionId}/items/{featureId}",
    operation_id="update_item",
    response_model=Feature,
    summary="Update part of a feature (administrators, JSON merge patch)",
    description="Body (RFC 7396): `{\"properties\": {...}, \"geometry\": {...}}`; a null property clears it; "
    "object-valued properties are merged.",
    openapi_extra={"requestBody": _body(FeaturePatch, MERGE_PATCH, "application/json"),
                   "parameters": [_IF_MATCH, _CONTENT_CRS]},
    responses={200: {"content": {GEOJSON: {}}, "description": "Updated"}, **_EDIT_RESPONSES},
)
async def update_item(request: Request, collectionId: str = Path(...),  # noqa: N803
                      featureId: str = Path(...)) -> Response:  # noqa: N803
    layer, role, actor = await _writable(request, collectionId)
    catalog = await current_catalog(request)
    fid = feature_id(layer, featureId)
    body = await _json_body(request, (MERGE_PATCH, "application/json", GEOJSON))
    if not isinstance(body, dict):
        raise InvalidData("A merge patch is a JSON object.")
    unknown = set(body) - {"type", "id", "properties", "geometry", "links"}
    if unknown:
        raise InvalidData(f"Unknown members: {', '.join(sorted(unknown))}.")
    if "id" in body and str(body["id"]) != str(fid):
        raise InvalidData("The feature id cannot be changed.")
    props = body.get("properties") or {}
    if not isinstance(props, dict):
        raise InvalidData("properties must be an object.")
    objects = [n for n, (p, _, _) in writable_props(layer).items() if p.schema.get("type") == "object"
               and isinstance(props.get(n), dict)]
    if objects:  # merge object-valued properties into their current value (RFC 7396 is recursive)
        current = await features_repo.fetch_feature(request.app.state.read_pool.primary, layer, role, fid)
        if current is not None:
            now = orjson.loads(current[0])["properties"]
            props = {**props, **{n: repo.merge_patch(now.get(n), props[n]) for n in objects}}
    change = build_change(layer, props, body.get("geometry"), "geometry" in body,
                          _content_crs(request, catalog.crs), replace_all=False)
    if change.geometry_given and change.geometry is None:
        await _check_required(request, layer, repo.Change({}, {}, None, True))
    written = await repo.Writer(request.app.state.engine, layer, actor, role).modify(
        "update", fid, change, request.headers.get("if-match"))
    return _written(request, layer, fid, written, 200)


@router.delete(
    "/collections/{collectionId}/items/{featureId}",
    operation_id="delete_item",
    summary="Delete a feature (administrators)",
    description="Villages still referenced by households, projects or facilities are not deleted (409). "
    "Deleting a household deletes its members and beneficiary records with it.",
    status_code=204,
    openapi_extra={"parameters": [_IF_MATCH]},
    responses={204: {"description": "Deleted"}, **_EDIT_RESPONSES},
)
async def delete_item(request: Request, collectionId: str = Path(...),  # noqa: N803
                      featureId: str = Path(...)) -> Response:  # noqa: N803
    layer, role, actor = await _writable(request, collectionId)
    fid = feature_id(layer, featureId)
    await repo.Writer(request.app.state.engine, layer, actor, role).delete(fid, request.headers.get("if-match"))
    request.app.state.catalog.invalidate()
    return Response(status_code=204)
