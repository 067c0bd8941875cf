"""Content negotiation (``f=`` first, then ``Accept``), links, and HTML rendering with Jinja2."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import orjson
from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PackageLoader, pass_context, select_autoescape

from app import i18n
from app.errors import InvalidParameter
from app.observability import csp_nonce
from app.processes.styles import legend

GEOJSON = "application/geo+json"
JSON = "application/json"
HTML = "text/html"
OPENAPI_JSON = "application/vnd.oai.openapi+json;version=3.0"
CSV = "text/csv"
SCHEMA_JSON = "application/schema+json"
FLATGEOBUF = "application/flatgeobuf"
PARQUET = "application/vnd.apache.parquet"


class OutputType(StrEnum):
    json = "json"
    html = "html"
    csv = "csv"
    fgb = "fgb"
    parquet = "parquet"


_F_VALUES = {"json": OutputType.json, "geojson": OutputType.json, "html": OutputType.html}
# items also come as CSV and in the bulk formats (FlatGeobuf, GeoParquet)
_F_WITH_CSV = {**_F_VALUES, "csv": OutputType.csv, "fgb": OutputType.fgb, "parquet": OutputType.parquet}
_BULK_MEDIA = {FLATGEOBUF: OutputType.fgb, PARQUET: OutputType.parquet, "application/x-parquet": OutputType.parquet}


def _accept(header: str) -> list[tuple[str, float, int]]:
    return i18n.weighted(header)


def negotiate(request: Request, csv: bool = False) -> OutputType:
    """``f`` wins; otherwise the best ``Accept`` match between JSON flavours and HTML (and CSV where
    offered); JSON by default."""
    f = request.query_params.get("f")
    values = _F_WITH_CSV if csv else _F_VALUES
    if f is not None:
        try:
            return values[f.lower()]
        except KeyError:
            offered = ", ".join(dict.fromkeys(v.value for v in values.values()))
            raise InvalidParameter(f"The format f={f} is not offered here; this resource is offered as {offered} "
                                   "(f=json, f=html …, or the Accept header).") from None
    header = request.headers.get("accept")
    if not header:
        return OutputType.json
    best: tuple[float, int, OutputType] | None = None
    for media, q, order in _accept(header):
        if q <= 0:
            continue
        if media in (HTML, "application/xhtml+xml"):
            kind = OutputType.html
        elif csv and media == CSV:
            kind = OutputType.csv
        elif csv and media in _BULK_MEDIA:
            kind = _BULK_MEDIA[media]
        elif media in (JSON, GEOJSON, OPENAPI_JSON.split(";")[0], "application/*", "*/*", "application/problem+json"):
            kind = OutputType.json
        else:
            continue
        # prefer higher q; on ties, explicit types listed first; wildcards lose against explicit types
        rank = (q - (0.001 if "*" in media else 0.0), -order, kind)
        if best is None or rank[:2] > best[:2]:
            best = rank
    return best[2] if best else OutputType.json


# --------------------------------------------------------------------------------------------- links
def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def url_for(request: Request, path: str, params: Mapping[str, Any] | None = None) -> str:
    query = f"?{urlencode(params, doseq=True)}" if params else ""
    return f"{base_url(request)}{path}{query}"


def link(href: str, rel: str, type_: str, title: str | None = None, **extra: Any) -> dict[str, Any]:
    out = {"href": href, "rel": rel, "type": type_}
    if title:
        out["title"] = title
    out.update(extra)
    return out


def self_links(request: Request, path: str, json_type: str, title: str, keep: Iterable[str] = (),
               csv: bool = False) -> list[dict]:
    """``self`` for the negotiated format plus ``alternate`` for the other one (``csv``: the path offers CSV too)."""
    params = {k: v for k, v in request.query_params.multi_items() if k != "f" and (not keep or k in keep)}
    fmt = negotiate(request, csv=csv)
    json_link = url_for(request, path, {**params, "f": "json"})
    html_link = url_for(request, path, {**params, "f": "html"})
    if fmt is OutputType.html:
        return [link(html_link, "self", HTML, title), link(json_link, "alternate", json_type, title + " (JSON)")]
    return [link(json_link, "self", json_type, title), link(html_link, "alternate", HTML, title + " (HTML)")]


# --------------------------------------------------------------------------------------------- responses
def json_response(body: Any, media_type: str = JSON, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=media_type, headers=headers)


def templates(extra_dir: str | None) -> Environment:
    loaders: list[Any] = []
    if extra_dir:
        loaders.append(FileSystemLoader(Path(extra_dir)))
    loaders.append(PackageLoader("app", "templates"))
    env = Environment(loader=ChoiceLoader(loaders), autoescape=select_autoescape(["html"]), enable_async=False,
                      extensions=["jinja2.ext.i18n"])
    env.install_gettext_callables(i18n.gettext, i18n.ngettext, newstyle=True)  # the language of each request
    env.globals["languages"] = i18n.LANGUAGES
    env.filters["t"] = _data_text  # titles and descriptions from the data, where the catalogue has them
    env.filters["code"] = _code_label  # a code list's label
    env.filters["tojson_attr"] = lambda v: orjson.dumps(v).decode()
    env.filters["num"] = human_number
    env.globals["legend_rows"] = legend
    env.globals["csp_nonce"] = csp_nonce.get  # the inline scripts' nonce of the Content-Security-Policy
    env.globals["code_list"] = lambda layer_id, prop: PROPERTY_CODE_LISTS.get((layer_id, prop))
    return env


# Properties whose values are codes of a code list (app/models/codes.py CODE_LABELS): pages show their labels
PROPERTY_CODE_LISTS = {
    ("projects", "type"): "project_type", ("projects", "status"): "project_status",
    ("projects", "addresses_needs"): "need", ("facilities", "class"): "facility_class",
    ("households", "status"): "household_status", ("households", "main_cause"): "cause",
    ("households", "other_causes"): "cause", ("households", "reported_needs"): "need",
    ("admin-units", "level"): "admin_level", ("admin-poverty", "level"): "admin_level",
}


# The language filters depend on the request's language: marked as needing the template context, so Jinja never
# folds ``"Poverty rate"|t`` into a constant when it compiles a template (in the language of its first request).
@pass_context
def _data_text(_ctx: Any, text: str | None) -> str | None:
    return i18n.data_text(text)


@pass_context
def _code_label(_ctx: Any, code: Any, code_list: str) -> str:
    if isinstance(code, list | tuple):  # a list of codes (causes, needs)
        return "、".join(i18n.code_label(code_list, c) for c in code) if i18n.current() == "zh-CN" else \
            ", ".join(i18n.code_label(code_list, c) for c in code)
    return i18n.code_label(code_list, code)


def human_number(value: Any) -> Any:
    """A value as a person reads it on an HTML page (JSON keeps full precision): floats to three significant digits
    (0.07500000298023224 → 0.075; 1234.5 → 1,235), whole floats as integers; other values as they are."""
    if isinstance(value, bool) or not isinstance(value, float):
        return value
    if not math.isfinite(value):
        return ""
    if value.is_integer() and abs(value) < 1e15:
        return f"{int(value):,}" if abs(value) >= 10_000 else str(int(value))
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return np.format_float_positional(value, precision=3, unique=False, fractional=False, trim="-")


def here(request: Request) -> str:
    """The page's own path and query (where the language switch comes back to)."""
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def html_response(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    env: Environment = request.app.state.templates
    settings = request.app.state.settings
    lang = i18n.activate_for(request)
    page = env.get_template(template).render(
        base=base_url(request), title=settings.api.title, basemap=settings.api.basemap_url,
        basemap_attribution=settings.api.basemap_attribution, lang=lang, here=here(request), **context,
    )
    return HTMLResponse(page, status_code=status, headers={"Content-Language": lang,
                                                           "Vary": "Accept, Accept-Language, Cookie"})


def respond(request: Request, body: Any, template: str, media_type: str = JSON, **context: Any) -> Response:
    """``body`` as JSON, or rendered with ``template`` (as ``page``) when the caller negotiated HTML."""
    if negotiate(request) is OutputType.html:
        return html_response(request, template, page=body, **context)
    return json_response(body, media_type)


# --------------------------------------------------------------------------------------------- OpenAPI
_JSON_FLAVOURS = (GEOJSON, SCHEMA_JSON, "application/problem+json")
_TEXT = (HTML, CSV)


def document_media_types(doc: dict[str, Any]) -> dict[str, Any]:
    """Every media type an answer is declared in gets its schema: the JSON flavours a route actually sends
    (GeoJSON, JSON Schema) the schema of its JSON answer, HTML and CSV a string."""
    for item in doc.get("paths", {}).values():
        for op in item.values():
            if not isinstance(op, dict):
                continue
            for answer in (op.get("responses") or {}).values():
                content = answer.get("content") or {}
                schema = (content.get(JSON) or {}).get("schema")
                for media, entry in content.items():
                    if entry.get("schema"):
                        continue
                    if media in _JSON_FLAVOURS and schema:
                        entry["schema"] = schema
                    elif media in _TEXT or media.startswith("text/"):
                        entry["schema"] = {"type": "string"}
    return doc
