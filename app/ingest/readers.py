"""Read government files in batches: CSV, XLSX, and every vector format GDAL reads (through pyogrio).

A reader exposes the file's column names, its coordinate system when the file declares one, the row count
when it is cheap to know (for progress bars), and an iterator of :class:`Batch` es of bounded size, so that a
registry of millions of rows is never held in memory at once.

Encodings: CSV files and Shapefiles exported in China are often GBK/GB18030 without any marker. A UTF-8 BOM
or a Shapefile ``.cpg`` is trusted; otherwise a sample that decodes as strict UTF-8 is UTF-8, and anything
else is identified with charset-normalizer. GBK and GB2312 are read as GB18030, their superset, so that rare
characters in village names do not fail.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import math
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.errors import InvalidParameter

CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
XLSX_SUFFIXES = {".xlsx", ".xlsm"}
VECTOR_SUFFIXES = {".gpkg", ".shp", ".zip", ".geojson", ".json", ".fgb", ".gml", ".kml", ".sqlite"}
SAMPLE_BYTES = 1 << 20
_CHINESE_LEGACY = {"gbk", "gb2312", "cp936", "hz", "gb18030", "big5"}


@dataclass
class Batch:
    lines: list[int]  # 1-based line numbers (CSV, XLSX) or feature numbers (vector files)
    rows: list[tuple[Any, ...]]  # values in the order of SourceFile.columns
    wkb: list[bytes | None] | None = None  # geometries of vector files, as WKB


@dataclass
class SourceFile:
    path: Path
    kind: str  # csv | xlsx | vector
    columns: list[str]
    encoding: str | None = None
    crs: str | None = None  # as the file declares it (vector formats)
    total: int | None = None
    layer: str | None = None
    geometry_type: str | None = None
    _opts: dict[str, Any] = field(default_factory=dict)

    def batches(self, size: int) -> Iterator[Batch]:
        if self.kind == "csv":
            return _csv_batches(self, size)
        if self.kind == "xlsx":
            return _xlsx_batches(self, size)
        return _vector_batches(self, size)

    def sample(self, n: int = 200) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for batch in self.batches(n):
            out.extend(dict(zip(self.columns, row, strict=False)) for row in batch.rows)
            break
        return out[:n]


def normalise_encoding(name: str | None) -> str | None:
    if not name:
        return None
    try:
        canonical = codecs.lookup(name).name
    except LookupError:
        raise InvalidParameter(f"unknown encoding {name!r}") from None
    return "gb18030" if canonical in _CHINESE_LEGACY - {"big5"} else canonical


def detect_encoding(sample: bytes) -> str:
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        sample.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        if exc.start > len(sample) - 4:  # the sample cut a multi-byte character in half
            try:
                sample[: exc.start].decode("utf-8")
                return "utf-8"
            except UnicodeDecodeError:
                pass
    from charset_normalizer import from_bytes

    best = from_bytes(sample).best()
    if best is None:
        raise InvalidParameter("cannot tell the file's text encoding; set source.encoding in the mapping")
    return normalise_encoding(best.encoding) or "utf-8"


def open_source(path: Path, *, encoding: str | None = None, layer: str | None = None, sheet: str | None = None,
                header_row: int = 1, delimiter: str | None = None) -> SourceFile:
    path = Path(path)
    if not path.exists():
        raise InvalidParameter(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return _open_csv(path, normalise_encoding(encoding), delimiter, header_row)
    if suffix in XLSX_SUFFIXES:
        return _open_xlsx(path, sheet, header_row)
    if suffix in VECTOR_SUFFIXES or path.is_dir():
        return _open_vector(path, normalise_encoding(encoding), layer)
    raise InvalidParameter(
        f"unsupported file type {suffix or path.name!r}: use GeoPackage, Shapefile (plain or zipped), GeoJSON, "
        "FlatGeobuf, CSV or XLSX")


# ------------------------------------------------------------------------------------------------- CSV
def _open_csv(path: Path, encoding: str | None, delimiter: str | None, header_row: int) -> SourceFile:
    with path.open("rb") as fh:
        sample = fh.read(SAMPLE_BYTES)
    enc = encoding or detect_encoding(sample)
    text = sample.decode(enc, errors="ignore")
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(text.split("\n", 20)[0] if text else ",", delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    total = _count_lines(path) - header_row
    with path.open("r", encoding=enc, newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        header: list[str] = []
        for _ in range(header_row):
            header = next(reader, [])
    columns = [c.strip() for c in header]
    if not any(columns):
        raise InvalidParameter(f"{path.name}: no header row")
    _check_unique(columns, path)
    return SourceFile(path, "csv", columns, encoding=enc, total=max(total, 0),
                      _opts={"delimiter": delimiter, "header_row": header_row})


def _count_lines(path: Path) -> int:
    n = 0
    last = b"\n"
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 24):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (0 if last == b"\n" else 1)


def _csv_batches(src: SourceFile, size: int) -> Iterator[Batch]:
    width = len(src.columns)
    with src.path.open("r", encoding=src.encoding, newline="") as fh:
        reader = csv.reader(fh, delimiter=src._opts["delimiter"])
        for _ in range(src._opts["header_row"]):
            next(reader, None)
        lines: list[int] = []
        rows: list[tuple[Any, ...]] = []
        try:
            for row in reader:
                if not row or (len(row) == 1 and not row[0]):
                    continue
                if len(row) != width:
                    row = (row + [""] * width)[:width] if len(row) < width else row
                lines.append(reader.line_num)
                rows.append(tuple(row))
                if len(rows) >= size:
                    yield Batch(lines, rows)
                    lines, rows = [], []
        except UnicodeDecodeError as exc:
            raise InvalidParameter(f"{src.path.name} near line {reader.line_num + 1} is not {src.encoding}: "
                                   f"{exc.reason}; set source.encoding in the mapping") from None
        except csv.Error as exc:
            raise InvalidParameter(f"{src.path.name} line {reader.line_num}: {exc}") from None
        if rows:
            yield Batch(lines, rows)


def _check_unique(columns: list[str], path: Path) -> None:
    seen = set()
    for c in columns:
        if c and c in seen:
            raise InvalidParameter(f"{path.name}: column {c!r} appears twice in the header")
        seen.add(c)


# ------------------------------------------------------------------------------------------------- XLSX
def _open_xlsx(path: Path, sheet: str | None, header_row: int) -> SourceFile:
    import openpyxl

    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise InvalidParameter(f"{path.name} is not a readable XLSX workbook: {exc}") from None
    try:
        if sheet is not None and sheet not in wb.sheetnames:
            raise InvalidParameter(f"{path.name} has no sheet {sheet!r} (sheets: {', '.join(wb.sheetnames)})")
        ws = wb[sheet] if sheet else wb[wb.sheetnames[0]]
        header = next(ws.iter_rows(min_row=header_row, max_row=header_row, values_only=True), ())
        total = (ws.max_row or header_row) - header_row
        title = ws.title
    finally:
        wb.close()
    columns = ["" if c is None else str(c).strip() for c in header]
    while columns and not columns[-1]:
        columns.pop()
    if not any(columns):
        raise InvalidParameter(f"{path.name}: no header in row {header_row}")
    _check_unique(columns, path)
    return SourceFile(path, "xlsx", columns, total=max(total, 0), layer=title,
                      _opts={"sheet": title, "header_row": header_row})


def _xlsx_batches(src: SourceFile, size: int) -> Iterator[Batch]:
    import openpyxl

    wb = openpyxl.load_workbook(src.path, read_only=True, data_only=True)
    try:
        ws = wb[src._opts["sheet"]]
        width = len(src.columns)
        lines: list[int] = []
        rows: list[tuple[Any, ...]] = []
        start = src._opts["header_row"] + 1
        for i, row in enumerate(ws.iter_rows(min_row=start, values_only=True), start=start):
            values = tuple(row[:width]) + (None,) * max(0, width - len(row))
            if all(v is None or (isinstance(v, str) and not v.strip()) for v in values):
                continue
            lines.append(i)
            rows.append(values)
            if len(rows) >= size:
                yield Batch(lines, rows)
                lines, rows = [], []
        if rows:
            yield Batch(lines, rows)
    finally:
        wb.close()


# ------------------------------------------------------------------------------------------------- vector
def _vsi(path: Path) -> str:
    return f"/vsizip/{path}" if path.suffix.lower() == ".zip" else str(path)


def _shapefile_encoding(path: Path) -> str | None:
    """The encoding of a Shapefile without a .cpg file, judged from its .dbf text (GBK exports have none)."""
    if path.suffix.lower() != ".shp" or path.with_suffix(".cpg").exists() or path.with_suffix(".CPG").exists():
        return None
    dbf = next((p for p in (path.with_suffix(".dbf"), path.with_suffix(".DBF")) if p.exists()), None)
    if dbf is None:
        return None
    with dbf.open("rb") as fh:
        sample = fh.read(SAMPLE_BYTES)
    if len(sample) > 32:
        header_len = int.from_bytes(sample[8:10], "little")
        body = sample[header_len:]
        if body and all(b < 0x80 for b in body):
            return None
        return detect_encoding(body)
    return None


def _open_vector(path: Path, encoding: str | None, layer: str | None) -> SourceFile:
    import pyogrio
    from pyogrio.errors import DataLayerError, DataSourceError

    src = _vsi(path)
    try:
        layers = [str(row[0]) for row in pyogrio.list_layers(src)]
        if layer is None and len(layers) > 1:
            raise InvalidParameter(f"{path.name} holds several layers ({', '.join(layers)}): choose one with "
                                   "--layer or source.layer")
        if layer is not None and layer not in layers:
            raise InvalidParameter(f"{path.name} has no layer {layer!r} (layers: {', '.join(layers)})")
        encoding = encoding or _shapefile_encoding(path)
        info = pyogrio.read_info(src, layer=layer, encoding=encoding, force_feature_count=True)
    except (DataSourceError, DataLayerError) as exc:
        raise InvalidParameter(f"cannot read {path.name}: {exc}") from None
    return SourceFile(path, "vector", [str(f) for f in info["fields"]], encoding=encoding or info.get("encoding"),
                      crs=info.get("crs"), total=int(info.get("features") or 0), layer=layer or info.get("layer_name"),
                      geometry_type=info.get("geometry_type"), _opts={"vsi": src, "encoding": encoding})


def _py(value: Any) -> Any:
    """numpy scalars → plain Python; NaN → None."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def _vector_batches(src: SourceFile, size: int) -> Iterator[Batch]:
    import pyogrio

    offset = 0
    while True:
        _meta, _fids, geometry, fields = pyogrio.raw.read(
            src._opts["vsi"], layer=src.layer, encoding=src._opts["encoding"], skip_features=offset,
            max_features=size, datetime_as_string=True, force_2d=True)
        n = len(geometry) if geometry is not None else (len(fields[0]) if fields else 0)
        if n == 0:
            return
        columns = [[_py(v) for v in col] for col in fields]
        rows = list(zip(*columns, strict=True)) if columns else [()] * n
        wkb = list(geometry) if geometry is not None else [None] * n
        yield Batch(list(range(offset + 1, offset + n + 1)), rows, wkb)
        offset += n
        if n < size:
            return


def text_of(value: Any) -> str | None:
    """A cell as text for staging: None/NaN/blank → None; dates ISO; floats without a spurious '.0' loss."""
    if value is None:
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return None
        # Spreadsheets store codes and counts as floats: 211202001001.0 is the code "211202001001".
        return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def read_text_file(path: Path) -> str:
    data = path.read_bytes()
    return data.decode(detect_encoding(data[:SAMPLE_BYTES]))


__all__ = ["Batch", "SourceFile", "open_source", "text_of", "detect_encoding", "read_text_file"]
