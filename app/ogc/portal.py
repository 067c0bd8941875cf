"""The portal: ``/portal``, a bilingual web application for the people who decide, built only on this API.

The page is a shell (its texts in the page's language); everything it shows comes from the public API by the
browser: ``/regions/{id}/overview`` for the figures, the collections' vector tiles for the maps,
``/collections/{id}/classes`` for the legends, ``/processes`` for the analysis forms, ``/jobs`` for their progress.
Sign-in exchanges an API key for an httpOnly, SameSite=Strict cookie (app/auth.py), so the same requests then carry
the analyst's or administrator's role.

``/portal/report`` is a township's (or any unit's) printable report: map, figures and tables on A4, with the Excel
workbook of the same tables (``/regions/{id}/overview?f=xlsx``).
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import text

from app import i18n
from app.auth import SESSION_COOKIE, csrf_token, current_role, verified
from app.db import translated_errors
from app.errors import Forbidden, InvalidParameter
from app.ogc.features import current_catalog, find_layer
from app.ogc.overview import FIGURES, history_blank, history_columns, overview_document
from app.ogc.render import base_url, html_response
from app.repositories import regions as regions_repo

router = APIRouter(tags=["Portal"], include_in_schema=False)
SESSION_DAYS = 1  # the cookie's lifetime; the key's own expiry and revocation end it sooner
MAX_FORM = 4096
# the village-form indicators a village's card shows (properties of the villages collection)
CARD_INDICATORS = ("km_to_township", "paved_road", "clinic", "broadband", "unsafe_water_households")


# The year a region opens on: its default year when the figures have it, else the latest.
_LATEST = text("SELECT s.region_id, coalesce(max(s.year) FILTER (WHERE s.year = r.default_year), max(s.year)) "
               "FROM admin_stat s JOIN region r ON r.region_id = s.region_id GROUP BY 1")


async def _regions(request: Request) -> list[dict[str, Any]]:
    """The regions with their extent and the registry year to open on: the default, else the latest (so the page
    asks for its figures, classes and tiles
    at once instead of one after the other)."""
    await current_catalog(request)  # the public figures in step with the registry
    async with translated_errors(), request.app.state.engine.connect() as conn:
        rows = await regions_repo.regions(conn)
        latest = dict((await conn.execute(_LATEST)).all())
    return [{"id": r["region_id"], "title": r["name"], "year": latest.get(r["region_id"]),
             "bbox": list(r["counts"]["bbox"]) if r["counts"].get("bbox") and r["counts"]["bbox"][0] is not None
             else None} for r in rows]


async def _session(request: Request) -> dict[str, Any] | None:
    """Who is signed in by the portal's cookie (role, key name) and the page's CSRF token; None for visitors."""
    key = request.cookies.get(SESSION_COOKIE)
    if not key:
        return None
    role = await current_role(request)
    if role is None:
        return None
    return {"role": role.value, "name": getattr(request.state, "key_name", None), "csrf": csrf_token(key)}


def _same_origin(request: Request) -> None:
    """A form posted from another site is refused (login CSRF). Browsers say where a request comes from in
    Sec-Fetch-Site; without it, the Origin (or Referer) must be ours. (Our pages send no referrer, so a browser's
    form post says ``Origin: null``: that header alone proves nothing either way.)"""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        if site not in ("same-origin", "none"):
            raise Forbidden("The sign-in form is accepted only from this service's own pages.")
        return
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin and origin != "null":
        o, ours = urlsplit(origin), urlsplit(base_url(request))
        if (o.scheme, o.netloc) != (ours.scheme, ours.netloc):
            raise Forbidden("The sign-in form is accepted only from this service's own pages.")


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM:
        raise InvalidParameter("The form is too large.")
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


def _process_texts() -> dict[str, str]:
    """The analyses' titles, descriptions, input help and legend labels in the page's language (the form and the
    legends are built from the English process descriptions and styles of the API; the data catalogue has their
    Chinese)."""
    from app.ogc.processes import _inputs_description
    from app.processes.catalogue import PROCESSES
    from app.processes.styles import legend_texts

    if i18n.current() == i18n.DEFAULT:
        return {}
    texts = legend_texts()
    for p in PROCESSES.values():
        texts |= {p.title, p.description}
        for entry in _inputs_description(p).values():
            texts |= {entry["title"], entry["description"]} - {""}
    return {t: i18n.data_text(t) for t in sorted(texts) if i18n.data_text(t) != t}


@router.get("/portal")
async def portal(request: Request, region: str | None = Query(None)) -> Response:
    regions = await _regions(request)
    session = await _session(request)
    chosen = region if region in {r["id"] for r in regions} else (regions[0]["id"] if regions else None)
    failed = request.query_params.get("signin") == "failed"
    i18n.activate_for(request)
    year = next((r["year"] for r in regions if r["id"] == chosen), None)
    # the first answers the page needs, fetched while MapLibre's script is still being parsed (the URLs are the
    # ones portal.js builds, parameter for parameter, so the browser hands it the preloaded answers)
    preload = [] if chosen is None or year is None else [
        f"/regions/{quote(chosen)}/overview?" + urlencode({"year": year}),
        "/collections/admin-poverty/classes?" + urlencode({"property": "poverty_rate", "method": "quantiles", "k": 5,
                                                          "level": 4, "year": year, "region": chosen})]
    villages = await find_layer(request, "villages")
    indicators = [[name, i18n.data_text(villages.prop(name).description) if villages and villages.prop(name) else name]
                  for name in CARD_INDICATORS]
    return html_response(request, "portal.html", regions=regions, region=chosen, session=session,
                         signin_failed=failed, process_texts=_process_texts(), preload=preload,
                         card_indicators=indicators)


@router.post("/portal/session")
async def sign_in(request: Request) -> Response:
    """Exchange an API key for the session cookie; back to the portal (with a message when the key is refused)."""
    _same_origin(request)
    key = (await _form(request)).get("key", "").strip()
    target = base_url(request) + "/portal"
    if not key:
        return RedirectResponse(target + "?signin=failed#account", status_code=303)
    # verified like an Authorization header (the same cache, the same refusal of revoked or expired keys)
    if await verified(request, key) is None:
        return RedirectResponse(target + "?signin=failed#account", status_code=303)
    out = RedirectResponse(target, status_code=303)
    out.set_cookie(SESSION_COOKIE, key, max_age=SESSION_DAYS * 86400, httponly=True, samesite="strict",
                   secure=request.url.scheme == "https", path="/")
    return out


@router.post("/portal/session/end")
async def sign_out(request: Request) -> Response:
    """Sign out: the cookie is cleared (CSRF-checked, so another site cannot sign a person out)."""
    key = request.cookies.get(SESSION_COOKIE)
    if key and not hmac.compare_digest((await _form(request)).get("csrf", ""), csrf_token(key)):
        raise Forbidden("Signing out needs the page's CSRF token.")
    out = RedirectResponse(base_url(request) + "/portal", status_code=303)
    out.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return out


@router.get("/portal/report")
async def report(request: Request, region: str = Query(...), unit: str | None = Query(None),
                 year: int | None = Query(None, ge=1900, le=2200)) -> Response:
    """A unit's printable report (A4): the page loads the overview and the map like the portal does."""
    regions = {r["id"]: r for r in await _regions(request)}
    if region not in regions:
        raise InvalidParameter(f"There is no region '{region}'. Regions: {', '.join(regions) or 'none yet'}.")
    doc = await overview_document(request, region, unit, year, links=False)
    return html_response(request, "report.html", page=doc, region_info=regions[region], figures=FIGURES,
                         history_columns=history_columns(doc), history_blank=history_blank)
