"""Regions as a resource: ``/regions`` and ``/regions/{regionId}`` (JSON and HTML).

A region is what a government stands up from its own files (``tpa region create`` and ``tpa import``): its id is
what process inputs take (``{"households": {"region": …}}``) and what the collections' ``region`` property holds.
Each region says what it holds: levels, the periods present for each kind of data, counts, the CRSs offered.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from app.db import translated_errors
from app.errors import NotFound
from app.layers.crs import CRS84, EPSG_URI, supported_uris
from app.ogc.common import Link
from app.ogc.render import HTML, JSON, link, respond, self_links, url_for
from app.repositories import regions as repo

router = APIRouter(tags=["Regions"])
CONFORMANCE: tuple[str, ...] = ()

# Names of levels a region does not name itself (0 country … 5 village)
DEFAULT_LEVELS = {0: "Country", 1: "Province", 2: "Prefecture", 3: "County", 4: "Township", 5: "Village"}
# The collections that hold a region's data, filtered to it
REGION_LAYERS = (("admin-units", "Administrative units"), ("villages", "Villages"),
                 ("village-poverty", "Village poverty (registry aggregates)"), ("projects", "Projects"),
                 ("facilities", "Facilities"), ("households", "Registered households (restricted)"))


class RegionSummary(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    title: str
    country: dict[str, str | None]
    analysisCrs: str  # noqa: N815
    links: list[Link]


class RegionList(BaseModel):
    regions: list[RegionSummary]
    links: list[Link]


class Region(RegionSummary):
    crs: list[str] = Field(description="CRSs the collections offer for this region's data")
    adminLevels: dict[str, str]  # noqa: N815
    periods: dict[str, Any]
    counts: dict[str, Any]


def _levels(row: dict[str, Any]) -> dict[str, str]:
    named = {int(k): v for k, v in (row["metadata"].get("admin_levels") or {}).items()}
    present = {int(k) for k in (row["counts"].get("admin_units") or {})}
    return {str(lv): named.get(lv) or DEFAULT_LEVELS[lv] for lv in sorted(present | set(named))}


def region_document(request: Request, row: dict[str, Any], full: bool = False) -> dict[str, Any]:
    rid = row["region_id"]
    path = f"/regions/{rid}"
    links = self_links(request, path, JSON, row["name"]) if full else [
        link(url_for(request, path), "self", JSON, row["name"]),
        link(url_for(request, path, {"f": "html"}), "alternate", HTML, row["name"])]
    counts = row["counts"]
    doc: dict[str, Any] = {
        "id": rid, "title": row["name"], "description": row["description"],
        "country": {"code": row["country"], "name": row["metadata"].get("country_name")},
        "analysisCrs": EPSG_URI.format(row["analysis_crs"]),
        "counts": {"admin_units": {str(k): v for k, v in sorted((counts.get("admin_units") or {}).items())},
                   **{k: counts.get(k) for k in ("villages", "households", "projects", "facilities")}},
        "links": links,
    }
    if counts.get("bbox") and counts["bbox"][0] is not None:
        doc["extent"] = {"spatial": {"bbox": [list(counts["bbox"])], "crs": CRS84}}
    if not full:
        return doc
    doc.update({
        "codeSystem": row["code_system"],
        "crs": list(supported_uris((row["analysis_crs"],))),
        "adminLevels": _levels(row),
        "povertyLine": {"value": row["poverty_line"], "currency": row["currency"], "per": "person and year",
                        "note": row["poverty_line_note"]},
        # the line below which an exited household's income makes it a candidate for monitoring against return
        # to poverty (防止返贫动态监测): by default 1.5 times the poverty line
        "monitoringLine": {"factor": row["monitoring_line_factor"],
                           "value": round(row["poverty_line"] * row["monitoring_line_factor"], 2),
                           "currency": row["currency"], "per": "person and year"},
        "defaultYear": row["default_year"],
        "attribution": row["attribution"],
        "created": row["created_at"].isoformat() if row["created_at"] else None,
        "periods": row["periods"],
    })
    for lid, title in REGION_LAYERS:
        links.append(link(url_for(request, f"/collections/{lid}/items", {"region": rid}), "items",
                          "application/geo+json", f"{title} of {row['name']}"))
    return doc


@router.get("/regions", operation_id="get_regions", summary="The regions this service holds",
            response_model=RegionList, responses={200: {"content": {HTML: {}}}})
async def get_regions(request: Request) -> Response:
    async with translated_errors(), request.app.state.engine.connect() as conn:
        rows = await repo.regions(conn)
    body = {"regions": [region_document(request, r) for r in rows],
            "links": self_links(request, "/regions", JSON, "Regions")}
    return respond(request, body, "regions.html")


@router.get("/regions/{regionId}", operation_id="get_region", summary="One region: levels, periods, counts, CRSs",
            response_model=Region, responses={200: {"content": {HTML: {}}}, 404: {"description": "No such region"}})
async def get_region(request: Request, regionId: str = Path(...)) -> Response:  # noqa: N803
    async with translated_errors(), request.app.state.engine.connect() as conn:
        rows = await repo.regions(conn, regionId)
        if not rows:
            known = ", ".join(f"{rid} ({name})" for rid, name in await repo.known_regions(conn))
            raise NotFound(f"There is no region '{regionId}'. Regions: {known or 'none yet'}.")
        row = rows[0]
        row["periods"] = await repo.region_periods(conn, regionId)
    return respond(request, region_document(request, row, full=True), "region.html")
