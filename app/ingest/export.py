"""Share a region in standard forms: one GeoPackage of its public layers, or a pygeoapi configuration.

Both read the public collections exactly as the OGC API publishes them (``app.layers.catalog.builtin_layers``:
same properties, same names), restricted to one region. Restricted collections (households, persons, the
audit trail) are never exported.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
from geoalchemy2 import functions as gfn
from sqlalchemy import Text, cast, func, select, text, type_coerce
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY, ENUM
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.types import NullType

from app.errors import InvalidParameter, NotFound
from app.layers.catalog import Layer, builtin_layers
from app.repositories.regions import region_exists
from app.settings import Settings, libpq_url

GPKG_GEOMETRY = {"Point": "Point", "MultiPolygon": "MultiPolygon", "Geometry": "Unknown"}


def public_layers(settings: Settings) -> list[Layer]:
    return [la for la in builtin_layers(settings.security) if la.required_role is None and la.geom is not None]


def _layer_name(layer: Layer) -> str:
    return layer.id.replace("-", "_")


def _region_of(layer: Layer) -> Any:
    prop = layer.prop("region")
    assert prop is not None, layer.id
    return prop.expr


def _view_expr(expr: Any) -> Any:
    """Enums become text, enum arrays text[], JSON stays JSON: plain types any client reflects."""
    if isinstance(expr.type, ENUM):
        return cast(expr, Text)
    if isinstance(expr.type, ARRAY):
        return cast(expr, ARRAY(Text))
    return expr


def layer_select(layer: Layer, region_id: str, for_view: bool = False) -> Any:
    cols = [layer.id_expr.label("id")]
    for p in layer.props:
        cols.append((_view_expr(p.expr) if for_view else p.expr).label(p.name))
    if layer.open_props is not None:  # the imported attributes, as one JSON column (imported back as they are)
        cols.append(layer.open_props.label("properties"))
    # In a view the column must stay a PostGIS geometry: type_coerce drops GeoAlchemy2's ST_AsEWKB wrapper.
    geom = type_coerce(layer.geom, NullType()) if for_view else gfn.ST_AsBinary(layer.geom)
    cols.append(geom.label("geom"))
    return select(*cols).select_from(layer.source).where(_region_of(layer) == region_id).order_by(layer.id_expr)


async def _check_region(engine: AsyncEngine, region_id: str) -> None:
    async with engine.connect() as conn:
        if not await region_exists(conn, region_id):
            raise NotFound(f"no region {region_id!r}")


# --------------------------------------------------------------------------------------------- GeoPackage
def _column(values: list[Any], schema: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    kind = schema.get("type")
    mask = np.array([v is None for v in values], dtype=bool)
    if kind == "integer":
        arr = np.array([0 if v is None else int(v) for v in values], dtype=np.int64)
    elif kind == "number":
        arr = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    elif kind == "boolean":
        arr = np.array([bool(v) for v in values], dtype=bool)
    else:
        def as_text(v: Any) -> str | None:
            if v is None:
                return None
            if isinstance(v, dict | list):
                return json.dumps(v, ensure_ascii=False, sort_keys=True)
            return v.isoformat() if hasattr(v, "isoformat") else str(v)
        arr = np.array([as_text(v) for v in values], dtype=object)
    return arr, (mask if mask.any() else None)


async def export_geopackage(engine: AsyncEngine, settings: Settings, region_id: str, out: Path) -> dict[str, int]:
    """Write every public layer of the region into one GeoPackage (EPSG:4326); returns features per layer."""
    import pyogrio

    await _check_region(engine, region_id)
    out = Path(out)
    if out.suffix.lower() != ".gpkg":
        raise InvalidParameter("the output file must end in .gpkg")
    if out.exists():
        out.unlink()
    counts: dict[str, int] = {}
    async with engine.connect() as conn:
        for layer in public_layers(settings):
            rows = (await conn.execute(layer_select(layer, region_id))).all()
            names = [p.name for p in layer.props] + (["properties"] if layer.open_props is not None else [])
            fields = ["id", *names]
            schemas = [layer.id_schema, *(p.schema for p in layer.props)]
            schemas += [{"type": "object"}] if layer.open_props is not None else []
            data, masks = [], []
            for i, schema in enumerate(schemas):
                arr, mask = _column([r[i] for r in rows], schema)
                data.append(arr)
                masks.append(mask)
            geometry = np.array([None if r[-1] is None else bytes(r[-1]) for r in rows], dtype=object)
            pyogrio.raw.write(
                str(out), geometry, data, fields, field_mask=masks if any(m is not None for m in masks) else None,
                layer=_layer_name(layer), driver="GPKG", geometry_type=GPKG_GEOMETRY.get(layer.geometry_type,
                                                                                           "Unknown"),
                crs="EPSG:4326", append=out.exists(), encoding="UTF-8",
                layer_options={"DESCRIPTION": layer.description, "IDENTIFIER": layer.title})
            counts[_layer_name(layer)] = len(rows)
    return counts


# --------------------------------------------------------------------------------------------- pygeoapi
def view_schema(region_id: str) -> str:
    return "tpa_pub_" + re.sub(r"[^a-z0-9]", "_", region_id)


async def create_public_views(engine: AsyncEngine, settings: Settings, region_id: str) -> dict[str, str]:
    """(Re)create read-only views of the region's public layers in their own schema; returns view → layer id."""
    schema = view_schema(region_id)
    views: dict[str, str] = {}
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        for layer in public_layers(settings):
            sql = str(layer_select(layer, region_id, for_view=True).compile(
                dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
            name = _layer_name(layer)
            await conn.execute(text(f'DROP VIEW IF EXISTS "{schema}"."{name}"'))
            await conn.execute(text(f'CREATE VIEW "{schema}"."{name}" AS {sql}'))
            views[name] = layer.id
    return views


async def pygeoapi_config(engine: AsyncEngine, settings: Settings, region_id: str, *, server_url: str,
                          port: int) -> str:
    """A pygeoapi configuration publishing the region's public layers with its PostgreSQL provider."""
    import yaml

    await _check_region(engine, region_id)
    views = await create_public_views(engine, settings, region_id)
    layers = {la.id: la for la in public_layers(settings)}
    schema = view_schema(region_id)
    url = urlsplit(libpq_url(settings.db.url))
    async with engine.connect() as conn:
        region = (await conn.execute(text("SELECT name, attribution FROM region WHERE region_id = :r"),
                                     {"r": region_id})).one()
        resources: dict[str, Any] = {}
        for view, layer_id in views.items():
            layer = layers[layer_id]
            box = (await conn.execute(select(func.ST_Extent(layer.geom)).select_from(layer.source)
                                      .where(_region_of(layer) == region_id))).scalar()
            bbox = [float(v) for v in re.findall(r"-?[0-9.]+(?:e-?\d+)?", box)] if box else [-180, -90, 180, 90]
            resources[view] = {
                "type": "collection",
                "title": f"{layer.title} — {region.name}",
                "description": layer.description,
                "keywords": list(layer.keywords) or [layer.id],
                "extents": {"spatial": {"bbox": bbox, "crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84"}},
                "providers": [{
                    "type": "feature",
                    "name": "PostgreSQL",
                    "data": {"host": url.hostname or "127.0.0.1", "port": url.port or 5432,
                             "dbname": unquote(url.path.lstrip("/")), "user": unquote(url.username or "postgres"),
                             "search_path": [schema, "public"]},
                    "id_field": "id",
                    "table": view,
                    "geom_field": "geom",
                }],
            }
    config = {
        "server": {
            "bind": {"host": "127.0.0.1", "port": port},
            "url": server_url,
            "mimetype": "application/json; charset=UTF-8",
            "encoding": "utf-8",
            "languages": ["en-US"],
            "limits": {"default_items": 10, "max_items": 10000},
            "map": {"url": "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
                    "attribution": "&copy; OpenStreetMap contributors"},
        },
        "logging": {"level": "ERROR"},
        "metadata": {
            "identification": {"title": f"tpa-gis: {region.name}", "description": f"Public layers of {region.name}",
                               "keywords": ["poverty", "tpa-gis"], "keywords_type": "theme", "terms_of_service": "",
                               "url": server_url},
            "license": {"name": "See the data provider", "url": server_url},
            "provider": {"name": region.attribution or region.name, "url": server_url},
            "contact": {"name": region.attribution or region.name},
        },
        "resources": resources,
    }
    header = (f"# pygeoapi configuration for region {region_id}, written by `tpa export pygeoapi-config`.\n"
              f"# Layers are views in schema {schema} (public layers only; households and persons are never\n"
              "# exported). No password is written: libpq reads PGPASSWORD or ~/.pgpass when the database needs one.\n")
    return header + yaml.safe_dump(config, allow_unicode=True, sort_keys=False)


