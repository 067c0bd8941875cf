"""What a portal needs beyond the features: a unit's overview figures, and class breaks for choropleths.

* ``/regions/{regionId}/overview``: the public figures of one administrative unit and year (registry figures as
  the ``admin-poverty`` collection publishes them, after suppression; projects by type and status; facilities by
  class), each with its period and source, and the same figures for the units one level down. JSON, HTML and
  Excel (``f=xlsx``, the tables of a report).
* ``/collections/{collectionId}/classes``: class breaks of a numeric property over the features the items query
  selects (quantiles, Fisher-Jenks natural breaks or equal intervals, computed by mapclassify), with the count in
  each class — the legend of a choropleth that matches the data.
"""

from __future__ import annotations

import io
import math
from typing import Any, Literal

import mapclassify
import numpy as np
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Double, cast, select

from app import i18n
from app.auth import current_role
from app.db import translated_errors
from app.errors import InvalidParameter, NotFound
from app.layers.query import PageLimits, Params
from app.layers.query import items_query as build_items_query
from app.ogc.common import Link
from app.ogc.features import current_catalog, get_layer, only_params
from app.ogc.render import HTML, JSON, link, respond, self_links, url_for
from app.repositories import overview as repo
from app.repositories.features import compile_stmt, shape_and_values, where_clauses
from app.repositories.regions import known_regions
from app.repositories.stats import ADMIN_MEASURES, FLOW_MEASURES, MEASURES, VILLAGE_LEVEL

router = APIRouter(tags=["Regions"])
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

FIGURES = (  # (id, title) in the order an office reads them
    ("registered_households", "Registered households"),
    ("poor_households", "Poor households"),
    ("poor_persons", "Poor persons"),
    ("poverty_rate", "Poverty rate"),
    ("exited_households", "Households that exited poverty"),
    ("monitored_households", "Households monitored as at risk"),
    ("reached_households", "Households reached by projects"),
    ("reached_persons", "Persons reached by projects"),
    ("population", "Population"),
    ("villages", "Villages"),
)
HISTORY = (  # the columns of a unit's figures over the years, as an office reads them
    ("registered_households", "Registered households"),
    ("poor_households", "Poor households"),
    ("entered_households", "Entered the registry"),
    ("exits", "Exits from poverty"),
    ("returns", "Returns to poverty"),
    ("monitored_households", "Households monitored as at risk"),
    ("income_median", "Median income / poverty line"),
)
SOURCE = "Poor-household registry (建档立卡), public aggregates with small counts withheld"


class Figure(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    title: str
    value: float | int | None
    withheld: bool
    period: str
    source: str


class HistoryYear(BaseModel):
    """The unit's public figures in one registry year (null: withheld, or not defined for the first year)."""
    model_config = ConfigDict(extra="allow")
    year: int
    suppressed: bool
    poverty_rate: float | None
    registered_households: int | None
    poor_households: int | None
    poor_persons: int | None
    exited_households: int | None = None  # not published for villages
    monitored_households: int | None = None  # not published for villages
    reached_households: int | None = None  # not published for villages
    reached_persons: int | None = None  # not published for villages
    entered_households: int | None
    exits: int | None
    returns: int | None
    income_p25: float | None
    income_median: float | None
    income_p75: float | None


class Overview(BaseModel):
    model_config = ConfigDict(extra="allow")
    region: str
    unit: dict[str, Any]
    year: int
    years: list[int]
    figures: list[Figure]
    history: list[HistoryYear]
    children: list[dict[str, Any]]
    projects: dict[str, Any]
    facilities: dict[str, Any]
    links: list[Link]


class Classes(BaseModel):
    model_config = ConfigDict(extra="allow")
    collection: str
    property: str
    method: str
    k: int
    count: int
    nulls: int
    min: float | None
    max: float | None
    breaks: list[float]
    counts: list[int]


def _unit_doc(u: dict[str, Any]) -> dict[str, Any]:
    return {"code": u["code"], "name": u["name"], "name_en": u.get("name_en"), "level": u["level"],
            "levelName": i18n.code_labels("admin_level").get(str(u["level"]), {})}


def _figures(request: Request, row: dict[str, Any]) -> list[dict[str, Any]]:
    period = f"{row['year']} (registry as of {row['snapshot'].isoformat()})"
    item = url_for(request, f"/collections/admin-poverty/items/{row['code']}-{row['year']}")
    out = []
    for fid, title in FIGURES:
        value = row.get(fid)
        withheld = value is None and fid not in ("population",) and bool(row.get("suppressed"))
        out.append({"id": fid, "title": title, "value": value, "withheld": withheld, "period": period,
                    "source": SOURCE if fid not in ("population", "villages") else "Village forms (贫困村信息采集表)",
                    "href": item})
    return out


def history_columns(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The columns of HISTORY the unit's history carries (a village's has no monitored households)."""
    return [c for c in HISTORY if doc["history"] and c[0] in doc["history"][0]]


def history_blank(index: int, fid: str) -> str:
    """What a null of the history means: the flows of the first year are not defined (no year before), any
    other null is withheld (or, for income, a group under 20 households)."""
    return "" if index == 0 and fid in ("entered_households", *FLOW_MEASURES) else i18n.gettext("withheld")


def _tally(rows: list[dict[str, Any]], key: str, code_list: str) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        e = out.setdefault(r[key], {"code": r[key], "label": i18n.code_labels(code_list).get(r[key], {}), "count": 0,
                                    "budget": 0.0, "capacity": 0})
        e["count"] += int(r["n"])
        e["budget"] += float(r["budget"])
        e["capacity"] += int(r["capacity"])
    return sorted(out.values(), key=lambda e: -e["count"])


async def overview_document(request: Request, region: str, unit: str | None, year: int | None, links: bool = True
                    ) -> dict[str, Any]:
    async with translated_errors(), request.app.state.engine.connect() as conn:
        row = await repo.unit_figures(conn, region, unit, year)
        if row is None:
            known = await known_regions(conn)
    if row is None:
        if region not in {r for r, _ in known}:
            raise NotFound(f"There is no region '{region}'. Regions: "
                           f"{', '.join(r for r, _ in known) or 'none yet'}.")
        raise NotFound(f"The region '{region}' has no figures for unit {unit or '(top)'} and year {year or '(latest)'}"
                       " (a unit of the region and a registry year it holds; see /regions/" + region + ").")
    children = []
    for c in row["children"]:
        children.append({"code": c["code"], "name": c["name"], "name_en": c["name_en"], "level": c["level"],
                         "suppressed": c["suppressed"], "poverty_rate": c["poverty_rate"],
                         "population": c["population"], "villages": c["villages"],
                         **{m: c[m] for m in MEASURES}})
    projects = row["projects"]
    path = f"/regions/{region}/overview"
    links = self_links(request, path, JSON, "Overview") if links else []
    links.append(link(url_for(request, path, {**{k: v for k, v in request.query_params.items() if k != "f"},
                                                "f": "xlsx"}), "alternate", XLSX, "Tables (Excel)"))
    links.append(link(url_for(request, f"/regions/{region}"), "up", JSON, "The region"))
    return {
        "region": region, "unit": _unit_doc(row), "year": row["year"], "years": row["years"],
        "snapshot": row["snapshot"].isoformat(),
        "ancestors": [_unit_doc(a) for a in row["ancestors"]],
        "figures": _figures(request, row),
        # villages carry the registry's stocks and flows, not the figures published from townships up
        "history": [{k: v for k, v in h.items() if row["level"] < VILLAGE_LEVEL or k not in ADMIN_MEASURES}
                    for h in row["history"]],
        "children": children,
        "projects": {"total": sum(int(p["n"]) for p in projects),
                     "budget": sum(float(p["budget"]) for p in projects),
                     "capacity": sum(int(p["capacity"]) for p in projects),
                     "byStatus": _tally(projects, "status", "project_status"),
                     "byType": _tally(projects, "type", "project_type"),
                     "period": f"started by the end of {row['year']}",
                     "source": "Project records (/collections/projects)"},
        "facilities": {"total": sum(int(f["n"]) for f in row["facilities"]),
                       "byClass": [{"code": f["class"], "label": i18n.code_labels("facility_class").get(f["class"], {}),
                                    "count": int(f["n"])} for f in row["facilities"]],
                       "period": "as recorded", "source": "Facility records (/collections/facilities)"},
        "links": links,
    }


def _xlsx(doc: dict[str, Any], lang: str) -> bytes:
    """The overview's tables as a workbook: figures, the units one level down, projects, facilities."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    zh = lang == "zh-CN"

    def label(pair: dict[str, str], code: str) -> str:
        return pair.get("zh-CN" if zh else "en") or code

    wb = Workbook()
    ws = wb.active
    ws.title = "Figures" if not zh else "主要指标"
    unit = doc["unit"]
    ws.append([f"{unit['name']} ({unit['code']}), {doc['year']}"])
    ws["A1"].font = Font(bold=True, size=13)
    ws.append([])
    ws.append([i18n.gettext(h) for h in ("Figure", "Value", "Period", "Source")])
    for f in doc["figures"]:
        ws.append([i18n.data_text(f["title"]), f["value"] if f["value"] is not None else
                   i18n.gettext("withheld"), f["period"], f["source"]])
    ws2 = wb.create_sheet("Units" if not zh else "下级单位")
    ws2.append(["code", i18n.gettext("Name"), *(i18n.data_text(t) for _, t in FIGURES)])
    for c in doc["children"]:
        ws2.append([c["code"], c["name"], *(c.get(fid) for fid, _ in FIGURES)])
    ws3 = wb.create_sheet("Projects" if not zh else "项目")
    ws3.append([i18n.gettext("Type"), i18n.gettext("Projects"), i18n.gettext("Budget"), i18n.gettext("Capacity")])
    for p in doc["projects"]["byType"]:
        ws3.append([label(p["label"], p["code"]), p["count"], p["budget"], p["capacity"]])
    ws3.append([])
    ws3.append([i18n.gettext("Status"), i18n.gettext("Projects"), i18n.gettext("Budget"), i18n.gettext("Capacity")])
    for p in doc["projects"]["byStatus"]:
        ws3.append([label(p["label"], p["code"]), p["count"], p["budget"], p["capacity"]])
    ws4 = wb.create_sheet("Facilities" if not zh else "设施")
    ws4.append([i18n.gettext("Class"), i18n.gettext("Facilities")])
    for f in doc["facilities"]["byClass"]:
        ws4.append([label(f["label"], f["code"]), f["count"]])
    wsh = wb.create_sheet("History" if not zh else "历年变化")
    columns = history_columns(doc)
    wsh.append([i18n.gettext("Year"), *(i18n.data_text(t) for _, t in columns)])
    for i, h in enumerate(doc["history"]):
        wsh.append([h["year"], *(h[fid] if h[fid] is not None else history_blank(i, fid) for fid, _ in columns)])
    for sheet in wb.worksheets:
        for cell in sheet[3 if sheet is ws else 1]:
            cell.font = Font(bold=True)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


@router.get("/regions/{regionId}/overview", operation_id="get_region_overview",
            summary="The public figures of an administrative unit and year, for an overview or a report",
            description="Registry figures (as the admin-poverty collection publishes them, small groups withheld), "
            "projects by type and status, facilities by class, each with its period and source, and the figures of "
            "the units one level down. `history` gives the unit's figures in every registry year, with the "
            "households that entered the registry, exited and returned to poverty since the year before, and "
            "quartiles of net income per person relative to the poverty line (null where withheld). `unit`: a "
            "code of the region's administrative units (default: its top unit); `year`: a registry year "
            "(default: the region's default year when it has figures, else the latest). `f=xlsx` gives the "
            "tables as an Excel workbook.",
            response_model=Overview,
            responses={200: {"content": {HTML: {}, XLSX: {}}}, 404: {"description": "No such region, unit or year"}})
async def get_region_overview(request: Request, regionId: str = Path(...),  # noqa: N803
                              unit: str | None = Query(None, description="Code of an administrative unit"),
                              year: int | None = Query(None, ge=1900, le=2200, description="Registry year")
                              ) -> Response:
    only_params(request, {"unit", "year", "f"})
    f = (request.query_params.get("f") or "").lower()
    xlsx = f == "xlsx" or (not f and XLSX in (request.headers.get("accept") or ""))
    await current_catalog(request)  # brings the public figures in step with the registry
    doc = await overview_document(request, regionId, unit, year, links=not xlsx)
    if xlsx:
        lang = i18n.activate_for(request)
        name = f"{doc['unit']['code']}-{doc['year']}.xlsx"
        return Response(_xlsx(doc, lang), media_type=XLSX,
                        headers={"Content-Disposition": f'attachment; filename="{name}"', "Content-Language": lang,
                                 "Vary": "Accept, Accept-Language, Cookie"})
    return respond(request, doc, "overview.html", history_columns=history_columns(doc), history_blank=history_blank)


# --------------------------------------------------------------------------------------------------- classes
Method = Literal["quantiles", "natural-breaks", "equal-interval"]
MAX_VALUES = 1_000_000  # values read to classify (a whole country's villages fit many times over)
FISHER_JENKS_MAX = 2_000  # Fisher-Jenks is O(k·n²): above this, it runs on evenly spaced order statistics
_NOT_FOR_CLASSES = frozenset({"limit", "offset", "sortby", "crs", "bbox-crs", "cursor", "skipGeometry", "properties"})


def fisher_jenks(values: np.ndarray, k: int) -> np.ndarray:
    """Upper bounds of the k classes that minimise the within-class sum of squared deviations (Fisher 1958; Jenks'
    natural breaks), by dynamic programming over the sorted values with prefix sums, one numpy pass per class
    count and class end. Hand-written because mapclassify.FisherJenks runs in pure Python without numba (20 s
    for 4,000 values here, where this takes a fraction of a second); tests/test_portal_figures.py checks that both
    give the same breaks."""
    x = np.sort(np.asarray(values, dtype=float))
    n = len(x)
    s1 = np.concatenate([[0.0], np.cumsum(x)])
    s2 = np.concatenate([[0.0], np.cumsum(x * x)])

    def ssd(i: np.ndarray | int, j: int) -> np.ndarray:  # of x[i..j] (inclusive), i an array of starts
        cnt = j - i + 1
        tot = s1[j + 1] - s1[i]
        return (s2[j + 1] - s2[i]) - tot * tot / cnt

    cost = s2[1:] - s1[1:] ** 2 / np.arange(1, n + 1)  # one class over x[0..j], for every j
    back = np.zeros((k, n), dtype=int)
    for m in range(1, k):
        new = np.full(n, np.inf)
        for j in range(m, n):
            starts = np.arange(m, j + 1)  # the last class is x[start..j]; the first m classes end at start - 1
            total = cost[starts - 1] + ssd(starts, j)
            best = int(np.argmin(total))
            new[j], back[m, j] = total[best], starts[best]
        cost = new
    bounds, j = [], n - 1
    for m in range(k - 1, 0, -1):
        start = back[m, j]
        bounds.append(x[j])
        j = start - 1
    bounds.append(x[j])
    return np.array(bounds[::-1])


def classify(values: np.ndarray, method: str, k: int) -> tuple[list[float], list[int]]:
    """Upper bounds of the classes (the last is the maximum) and their counts, by mapclassify."""
    distinct = np.unique(values)
    k = max(1, min(k, len(distinct)))
    if k == 1:
        return [float(distinct[-1])], [int(len(values))]
    if method == "quantiles":
        bins = mapclassify.Quantiles(values, k=k).bins
    elif method == "equal-interval":
        bins = mapclassify.EqualInterval(values, k=k).bins
    else:
        sample = np.sort(values)
        if len(sample) > FISHER_JENKS_MAX:  # deterministic, unlike FisherJenksSampled's random sample
            sample = sample[np.linspace(0, len(sample) - 1, FISHER_JENKS_MAX).round().astype(int)]
        bins = fisher_jenks(sample, k)
        bins[-1] = values.max()
    bins = np.unique(np.asarray(bins, dtype=float))
    counts = np.bincount(np.searchsorted(bins, values, side="left"), minlength=len(bins))[:len(bins)]
    return [float(b) for b in bins], [int(c) for c in counts]


@router.get("/collections/{collectionId}/classes", operation_id="get_collection_classes",
            summary="Class breaks of a numeric property (for a choropleth's legend)",
            description="The features the items query selects (`bbox`, `datetime`, `filter`, equality filters on "
            "properties) are classified on `property` by mapclassify: `quantiles`, `natural-breaks` (Fisher-Jenks; "
            f"on {FISHER_JENKS_MAX} evenly spaced order statistics when there are more values) or "
            "`equal-interval`. `breaks` are the upper bounds of the classes (the last is the maximum; a value v is "
            "in the first class whose bound is ≥ v); `counts` the features in each. Null values are counted apart.",
            response_model=Classes, tags=["Data"],
            responses={400: {"description": "Not a numeric property, or a bad parameter"},
                       401: {"description": "Authentication required"}, 404: {"description": "No such collection"}})
async def get_collection_classes(
    request: Request, collectionId: str = Path(...),  # noqa: N803
    property: str = Query(..., description="A numeric property"),  # noqa: A002
    method: Method = Query("quantiles"),  # noqa: B008 (FastAPI's declaration, as in every route)
    k: int = Query(5, ge=1, le=12, description="Number of classes"),
) -> Response:
    role = await current_role(request)
    layer = await get_layer(request, collectionId, role)
    refused = sorted(set(request.query_params) & _NOT_FOR_CLASSES)
    if refused:
        raise InvalidParameter(f"{', '.join(refused)}: not a parameter of the classes (they cover every feature "
                               "the filters select).")
    prop = layer.prop(property)
    if prop is None or prop.schema.get("type") not in ("number", "integer"):
        numeric = [p.name for p in layer.props if p.schema.get("type") in ("number", "integer")]
        raise InvalidParameter(f"'{property}' is not a numeric property of '{layer.id}'. Numeric properties: "
                               f"{', '.join(numeric) or 'none'}.")
    params = Params((key, v) for key, v in request.query_params.multi_items()
                    if key not in ("property", "method", "k", "f"))
    q = build_items_query(params, await current_catalog(request), layer, role, PageLimits(1, 1))
    shape, values = shape_and_values(layer, role, q)
    value = cast(prop.expr, Double)
    stmt = compile_stmt(select(value.label("v")).select_from(layer.source).where(*where_clauses(shape, role))
                        .limit(MAX_VALUES + 1))
    async with translated_errors():
        rows = await request.app.state.read_pool.fetch(stmt.sql, *stmt.args(values))
    if len(rows) > MAX_VALUES:
        raise InvalidParameter(f"More than {MAX_VALUES:,} features match: narrow the selection (bbox, filter).")
    raw = [r["v"] for r in rows]
    data = np.asarray([v for v in raw if v is not None and math.isfinite(v)], dtype=float)
    breaks, counts = classify(data, method, k) if len(data) else ([], [])
    body = {"collection": layer.id, "property": property, "method": method, "k": len(breaks),
            "count": int(len(data)), "nulls": len(raw) - int(len(data)),
            "min": float(data.min()) if len(data) else None, "max": float(data.max()) if len(data) else None,
            "breaks": breaks, "counts": counts,
            "links": self_links(request, f"/collections/{layer.id}/classes", JSON, "Classes")[:1]}
    return respond(request, body, "classes.html")
