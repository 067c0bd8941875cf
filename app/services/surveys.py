"""Household surveys: read a survey file, check it whole, store it in one transaction (all or nothing).

A survey file is a table (CSV or XLSX, read like every other import, encodings such as GBK detected; or Parquet)
with one row per responding household: ``hh_id``, ``area_code`` (a village or other admin unit of the region),
``weight`` (design weight, > 0), ``income_pc`` (income or consumption per person), optionally ``stratum``, ``psu``
and ``size``; every other column becomes a covariate (numbers stay numbers). The survey's own household ids are
kept; they must not be registry ids or names.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from app.analysis.spatial import AnalysisError
from app.errors import InvalidParameter
from app.ingest.readers import open_source, text_of

REQUIRED = ("hh_id", "area_code", "weight", "income_pc")
OPTIONAL = ("stratum", "psu", "size")


def _records(path: Path) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]]]:
    """The columns and (line, row) of a survey file, through the imports' own reader (``open_source``);
    Parquet, which it does not read, through pandas."""
    if path.suffix.lower() == ".parquet":
        import pandas as pd

        frame = pd.read_parquet(path)
        rows = ((i, {k: (v.item() if hasattr(v, "item") else v) for k, v in rec.items()})
                for i, rec in enumerate(frame.to_dict("records"), start=2))
        return [str(c) for c in frame.columns], rows
    src = open_source(path)
    return src.columns, ((line, dict(zip(src.columns, row, strict=False)))
                         for batch in src.batches(50_000) for line, row in zip(batch.lines, batch.rows, strict=True))


def _number(value: Any) -> float | None:
    """A cell as a number (None when blank); ValueError when it is not one."""
    text = text_of(value)
    return None if text is None else float(text)


def _covariate(value: Any) -> Any:
    """A further column's cell: numbers stay (or become) numbers, blanks None, other text as it is."""
    if text_of(value) is None:
        return None
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
    return value


def read_survey(path: Path) -> list[dict[str, Any]]:
    """The rows of a survey file, checked; every problem is reported at once (up to 20)."""
    try:
        columns, records = _records(path)
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise AnalysisError(f"{path.name}: the columns {', '.join(missing)} are missing (needed: "
                                f"{', '.join(REQUIRED)}).")
        problems: list[str] = []
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        for i, rec in records:
            hh = text_of(rec["hh_id"])
            hh = hh.strip() if hh else None
            if not hh:
                problems.append(f"line {i}: no hh_id")
            elif hh in seen:
                problems.append(f"line {i}: hh_id {hh} appears twice")
            seen.add(hh or "")
            try:
                weight = _number(rec["weight"])
                income = _number(rec["income_pc"])
                size_ = _number(rec.get("size"))
                if weight is None or income is None:
                    raise ValueError
                size = None if size_ is None else int(size_)
            except (TypeError, ValueError, OverflowError):
                problems.append(f"line {i}: weight, income_pc and size must be numbers")
                continue
            if not weight > 0 or not math.isfinite(weight):
                problems.append(f"line {i}: weight must be above 0")
            if not math.isfinite(income):
                problems.append(f"line {i}: income_pc must be a number")
            if size is not None and size <= 0:
                problems.append(f"line {i}: size must be above 0")
            area = text_of(rec["area_code"])
            if area is None:
                problems.append(f"line {i}: no area_code")
            props = {k: _covariate(v) for k, v in rec.items() if k not in REQUIRED and k not in OPTIONAL}
            rows.append({"hh_id": hh, "area_code": area, "stratum": text_of(rec.get("stratum")),
                         "psu": text_of(rec.get("psu")), "weight": weight, "size": size, "income_pc": income,
                         "properties": props})
    except (OSError, InvalidParameter) as exc:
        raise AnalysisError(f"cannot read {path.name}: {exc}") from None
    if problems:
        more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
        raise AnalysisError(f"{path.name}: " + "; ".join(problems[:20]) + more + ". Nothing was written.")
    if not rows:
        raise AnalysisError(f"{path.name}: no households.")
    return rows


async def store_survey(conn: Any, survey: dict[str, Any], rows: list[dict[str, Any]]) -> int:
    """Replace the survey (same id) with these households, in the caller's transaction or in one of its own; area
    codes must be admin units of the survey's region."""
    async with conn.transaction():
        known = {r[0] for r in await conn.fetch("SELECT code FROM admin_unit WHERE region_id = $1",
                                                survey["region_id"])}
        if not known:
            raise AnalysisError(f"There is no region '{survey['region_id']}' (or it has no administrative units).")
        unknown = sorted({r["area_code"] for r in rows} - known)
        if unknown:
            raise AnalysisError(f"{len(unknown)} area code(s) are not units of the region "
                                f"{survey['region_id']}, e.g. {', '.join(unknown[:5])}. Nothing was written.")
        await conn.execute("DELETE FROM survey WHERE survey_id = $1", survey["survey_id"])
        await conn.execute(
            "INSERT INTO survey (survey_id, region_id, title, year, design, source) VALUES ($1, $2, $3, $4, $5, $6)",
            survey["survey_id"], survey["region_id"], survey["title"], survey["year"], survey.get("design"),
            survey["source"])
        await conn.executemany(
            "INSERT INTO survey_household (survey_id, hh_id, area_code, stratum, psu, weight, size, income_pc, "
            "properties) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)",
            [(survey["survey_id"], r["hh_id"], r["area_code"], r["stratum"], r["psu"], r["weight"], r["size"],
              r["income_pc"], orjson.dumps(r["properties"], default=str).decode()) for r in rows])
    return len(rows)
