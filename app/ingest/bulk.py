"""Bulk downloads of a collection's items: FlatGeobuf and GeoParquet 1.1, written with bounded memory.

Rows come from the same server-side cursor as the GeoJSON and CSV pages (``stream_page`` with output ``wkb``: the
properties typed, the geometry as WKB from PostGIS). They are gathered into Arrow record batches of ``BATCH_ROWS``;
GeoParquet is written by pyarrow's ParquetWriter one row group per batch, FlatGeobuf by GDAL (pyogrio's
``write_arrow``) reading an Arrow stream fed batch by batch from a worker thread. Both formats put their index or
footer at the end, so the file is written to a temporary file first and then sent in chunks and deleted: memory holds
one batch whatever the size of the download.

Coordinates are x/y (easting or longitude first) whatever the CRS's axis order, as both formats prescribe; the CRS is
written into the file (PROJJSON in GeoParquet's ``geo`` metadata, WKT in FlatGeobuf).
"""

from __future__ import annotations

import asyncio
import os
import queue
import tempfile
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from pyproj import CRS

from app.layers.catalog import Layer, Prop
from app.layers.crs import Crs

BATCH_ROWS = 20_000
CHUNK = 1 << 20
GEOMETRY = "geometry"


@dataclass(frozen=True)
class BulkFormat:
    name: str
    media_type: str
    suffix: str


FORMATS = {
    "fgb": BulkFormat("fgb", "application/flatgeobuf", ".fgb"),
    "parquet": BulkFormat("parquet", "application/vnd.apache.parquet", ".parquet"),
}
_GDAL_TYPES = {"Point", "LineString", "Polygon", "MultiPoint", "MultiLineString", "MultiPolygon", "GeometryCollection"}


def _arrow_type(schema: dict[str, Any]) -> pa.DataType:
    kind, fmt = schema.get("type"), schema.get("format")
    if kind == "integer":
        return pa.int64()
    if kind == "number":
        return pa.float64()
    if kind == "boolean":
        return pa.bool_()
    if kind == "string" and fmt == "date":
        return pa.date32()
    if kind == "string" and fmt == "date-time":
        return pa.timestamp("us", tz="UTC")
    return pa.string()  # strings, enumerations; arrays and objects as JSON text


def _plain(value: Any, kind: pa.DataType) -> Any:
    if value is None:
        return None
    if pa.types.is_string(kind):
        if isinstance(value, (list, dict)):
            return orjson.dumps(value).decode()
        return value if isinstance(value, str) else str(value)
    if pa.types.is_floating(kind) and isinstance(value, Decimal):
        return float(value)
    if pa.types.is_integer(kind) and not isinstance(value, int):
        return int(value)
    return value


class BulkTable:
    """The Arrow layout of a download: id, the selected properties, the geometry (WKB) and, for GeoParquet 1.1, the
    ``bbox`` covering column that lets readers skip row groups."""

    def __init__(self, layer: Layer, props: tuple[Prop, ...], with_geometry: bool, crs: Crs, fmt: BulkFormat) -> None:
        self.layer, self.props, self.with_geometry, self.crs, self.fmt = layer, props, with_geometry, crs, fmt
        id_type = pa.int64() if layer.id_schema.get("type") == "integer" else pa.string()
        fields = [pa.field("id", id_type)]
        names = {"id"}
        for p in props:
            name = p.name if p.name not in names and p.name != GEOMETRY else f"{p.name}_"
            names.add(name)
            fields.append(pa.field(name, _arrow_type(p.schema)))
        if with_geometry:
            fields.append(pa.field(GEOMETRY, pa.binary()))
            if fmt.name == "parquet":
                corners = [(k, pa.float64()) for k in ("xmin", "ymin", "xmax", "ymax")]
                fields.append(pa.field("bbox", pa.struct(corners)))
        metadata = {b"geo": orjson.dumps(self.geo_metadata())} if with_geometry and fmt.name == "parquet" else None
        self.schema = pa.schema(fields, metadata=metadata)

    @property
    def geometry_types(self) -> list[str]:
        return [self.layer.geometry_type] if self.layer.geometry_type in _GDAL_TYPES else []

    def geo_metadata(self) -> dict[str, Any]:
        column: dict[str, Any] = {
            "encoding": "WKB", "geometry_types": self.geometry_types,
            "covering": {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}},
        }
        if not (self.crs.srid == 4326 and self.crs.uri.endswith("CRS84")):
            column["crs"] = CRS.from_epsg(self.crs.srid).to_json_dict()  # absent means OGC:CRS84
        return {"version": "1.1.0", "primary_column": GEOMETRY, "columns": {GEOMETRY: column}}

    def batch(self, records: list[Any]) -> pa.RecordBatch:
        arrays = []
        for i, field in enumerate(self.schema):
            if field.name == "bbox":
                geoms = shapely.from_wkb(arrays[-1].to_numpy(zero_copy_only=False))
                bounds = shapely.bounds(geoms)
                missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
                arrays.append(pa.StructArray.from_arrays(
                    [pa.array(bounds[:, j], mask=missing) for j in range(4)], names=["xmin", "ymin", "xmax", "ymax"],
                    mask=pa.array(missing)))
                continue
            arrays.append(pa.array([_plain(r[i], field.type) for r in records], type=field.type))
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


async def _batches(table: BulkTable, rows: AsyncIterator[tuple[list[tuple[Any, str]], bool]],
                   state: dict[str, Any]) -> AsyncIterator[pa.RecordBatch]:
    """Record batches of BATCH_ROWS rows from the cursor's (records, more) pieces; ``state`` keeps the count, the
    first and last sort keys and whether more rows follow (for the paging links)."""
    pending: list[Any] = []
    async for chunk, more in rows:
        state["more"] = more
        if chunk:
            state.setdefault("first", chunk[0][1])
            state["last"] = chunk[-1][1]
            state["n"] = state.get("n", 0) + len(chunk)
            pending += [r for r, _ in chunk]
        if len(pending) >= BATCH_ROWS:
            yield table.batch(pending)
            pending = []
    if pending:
        yield table.batch(pending)


async def write_parquet(table: BulkTable, batches: AsyncIterator[pa.RecordBatch], path: str) -> None:
    writer = pq.ParquetWriter(path, table.schema, compression="zstd")
    try:
        async for batch in batches:
            await asyncio.to_thread(writer.write_batch, batch)
    finally:
        writer.close()


async def write_fgb(table: BulkTable, batches: AsyncIterator[pa.RecordBatch], path: str) -> None:
    """GDAL's FlatGeobuf writer consumes an Arrow stream in a thread; this coroutine feeds it one batch at a time (a
    queue of two batches: the writer never holds more)."""
    import pyogrio.raw

    feed: queue.Queue[pa.RecordBatch | None] = queue.Queue(maxsize=2)

    def stream() -> Iterable[pa.RecordBatch]:
        while (batch := feed.get()) is not None:
            yield batch

    reader = pa.RecordBatchReader.from_batches(table.schema, stream())
    gtype = table.geometry_types[0] if table.geometry_types else "Unknown"
    writer = asyncio.ensure_future(asyncio.to_thread(
        pyogrio.raw.write_arrow, reader, path, layer=table.layer.id, driver="FlatGeobuf", geometry_name=GEOMETRY,
        geometry_type=gtype, crs=CRS.from_epsg(table.crs.srid).to_wkt(),
        # no packed R-tree: GDAL's writer holds the index data of every feature in memory to build it (measured: +171
        # MB for 1,000,000 points, +6 MB without); without it the file streams, in query order. A reader that wants
        # the index adds it with ogr2ogr.
        layer_options={"SPATIAL_INDEX": "NO"}))

    async def put(item: pa.RecordBatch | None) -> None:
        while True:
            if writer.done():  # the writer failed: stop feeding, raise its error
                await writer
                raise RuntimeError("the FlatGeobuf writer stopped early")
            try:
                feed.put_nowait(item)
                return
            except queue.Full:
                await asyncio.sleep(0.01)

    try:
        async for batch in batches:
            await put(batch)
    finally:
        if not writer.done():
            await put(None)
    await writer


async def write(table: BulkTable, rows: AsyncIterator[tuple[list[tuple[Any, str]], bool]], state: dict[str, Any],
                directory: str | None = None) -> str:
    """Write the rows to a temporary file in the table's format; its path (the caller deletes it)."""
    fd, path = tempfile.mkstemp(prefix="tpa-bulk-", suffix=table.fmt.suffix, dir=directory)
    os.close(fd)
    os.unlink(path)  # GDAL creates the file itself; pyarrow opens it by name
    try:
        batches = _batches(table, rows, state)
        if table.fmt.name == "parquet":
            await write_parquet(table, batches, path)
        else:
            await write_fgb(table, batches, path)
    except BaseException:
        if os.path.exists(path):
            os.unlink(path)
        raise
    return path


async def chunks(path: str) -> AsyncIterator[bytes]:
    """The file in CHUNK-sized pieces; deleted once sent (or when the client goes away)."""
    try:
        with open(path, "rb") as fh:
            while piece := await asyncio.to_thread(fh.read, CHUNK):
                yield piece
    finally:
        os.unlink(path)

