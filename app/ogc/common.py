"""OGC API Common resources: landing page, conformance declaration, API definition (OpenAPI 3.0)."""

from __future__ import annotations

from enum import StrEnum

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from app import i18n
from app.errors import InvalidParameter
from app.observability import csp_nonce
from app.ogc.render import (
    HTML,
    JSON,
    OPENAPI_JSON,
    OutputType,
    json_response,
    link,
    negotiate,
    respond,
    self_links,
    url_for,
)

router = APIRouter(tags=["Capabilities"])


class Conformance(StrEnum):
    core = "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core"
    oas30 = "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30"
    html = "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/html"
    geojson = "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson"


CONFORMANCE: tuple[str, ...] = (Conformance.core, Conformance.oas30, Conformance.html, Conformance.geojson)


class Link(BaseModel):
    href: str
    rel: str
    type: str | None = None
    title: str | None = None


class LandingPage(BaseModel):
    title: str
    description: str
    links: list[Link]


class ConformanceDeclaration(BaseModel):
    conformsTo: list[str] = Field(description="URIs of the conformance classes the server implements")


def conformance_classes(request: Request) -> list[str]:
    """Sorted, de-duplicated union of the enabled modules' lists (never mutated in place)."""
    return sorted({str(c) for c in request.app.state.conformance})


@router.get(
    "/",
    operation_id="get_landing_page",
    summary="Landing page",
    response_model=LandingPage,
    responses={200: {"content": {HTML: {}}}},
)
async def get_landing_page(request: Request) -> Response:
    settings = request.app.state.settings
    links = self_links(request, "/", JSON, "This document") + [
        link(url_for(request, "/api"), "service-desc", OPENAPI_JSON, "The API definition (OpenAPI 3.0)"),
        link(url_for(request, "/api.html"), "service-doc", HTML, "The API documentation"),
        link(url_for(request, "/conformance"), "conformance", JSON, "Conformance classes implemented"),
        link(url_for(request, "/collections"), "data", JSON, "The feature collections"),
        link(url_for(request, "/conformance"), "http://www.opengis.net/def/rel/ogc/1.0/conformance", JSON,
             "Conformance classes implemented"),
        link(url_for(request, "/collections"), "http://www.opengis.net/def/rel/ogc/1.0/data", JSON,
             "The feature collections"),
        link(url_for(request, "/tiles"), "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector", JSON,
             "Vector tiles of the whole dataset (OGC API - Tiles)"),
        link(url_for(request, "/tileMatrixSets"), "http://www.opengis.net/def/rel/ogc/1.0/tiling-schemes", JSON,
             "The tiling schemes (tile matrix sets)"),
        link(url_for(request, "/processes"), "http://www.opengis.net/def/rel/ogc/1.0/processes", JSON,
             "The analyses offered (OGC API - Processes)"),
        link(url_for(request, "/jobs"), "http://www.opengis.net/def/rel/ogc/1.0/job-list", JSON, "Your jobs"),
        link(url_for(request, "/regions"), "related", JSON, "The regions held (ids, levels, periods)"),
        link(url_for(request, "/docs/methodology"), "describedby", HTML, "The method: every indicator and analysis"),
    ]
    body = {"title": settings.api.title, "description": settings.api.description, "links": links}
    return respond(request, body, "landing.html")


@router.get("/language", include_in_schema=False)
async def set_language(request: Request) -> Response:
    """The language switch of the HTML pages: remember the choice (a cookie for a year) and go back to the page."""
    lang = request.query_params.get("set", "")
    if lang not in i18n.LANGUAGES:
        raise InvalidParameter(f"set: one of {', '.join(i18n.LANGUAGES)}.")
    target = request.query_params.get("next") or "/"
    if not target.startswith("/") or target.startswith("//") or "\\" in target:  # only this site's own pages
        target = "/"
    response = RedirectResponse(str(request.base_url).rstrip("/") + target, status_code=303)
    response.set_cookie(i18n.COOKIE, lang, max_age=365 * 24 * 3600, path="/", samesite="lax",
                        secure=request.url.scheme == "https")
    return response


@router.get(
    "/conformance",
    operation_id="get_conformance",
    summary="Conformance classes implemented by this server",
    response_model=ConformanceDeclaration,
    responses={200: {"content": {HTML: {}}}},
)
async def get_conformance(request: Request) -> Response:
    body = {"conformsTo": conformance_classes(request),
            "links": self_links(request, "/conformance", JSON, "Conformance")}
    return respond(request, body, "conformance.html")


@router.get(
    "/api",
    operation_id="get_api",
    summary="The API definition (OpenAPI 3.0)",
    responses={200: {"content": {OPENAPI_JSON: {}, HTML: {}}}},
)
async def get_api(request: Request) -> Response:
    if negotiate(request) is OutputType.html:
        return await get_api_html(request)
    return json_response(request.app.state.openapi30(), media_type=OPENAPI_JSON)


@router.get("/api.html", operation_id="get_api_html", summary="Interactive API documentation",
            response_class=HTMLResponse)
async def get_api_html(request: Request) -> HTMLResponse:
    page = get_swagger_ui_html(
        openapi_url=url_for(request, "/api", {"f": "json"}),
        title=f"{request.app.state.settings.api.title} — API",
        swagger_js_url=url_for(request, "/static/vendor/swagger-ui/swagger-ui-bundle.js"),
        swagger_css_url=url_for(request, "/static/vendor/swagger-ui/swagger-ui.css"),
        swagger_favicon_url=url_for(request, "/static/favicon.svg"),
    )
    # Swagger UI's start-up script is inline: it gets the page's Content-Security-Policy nonce
    body = bytes(page.body).replace(b"<script>", f'<script nonce="{csp_nonce.get()}">'.encode())
    return HTMLResponse(body, status_code=page.status_code)
