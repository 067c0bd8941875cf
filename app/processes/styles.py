"""How result layers are drawn: a style description each spatial output declares, resolved against the layer's
values when it is published, and written out as MapLibre GL style JSON and as QGIS QML, so the HTML pages, a portal
and QGIS show the same classes in the same colours.

A description is plain JSON (stored with the layer in ``published_layer.style``)::

    {"property": "class", "kind": "categories", "title": "Gi* class",
     "classes": [{"value": "hot-99", "label": "Hot spot, 99 %", "color": "#b2182b"}, …],
     "other": {"label": "Other", "color": "#bdbdbd"}}

    {"property": "access", "kind": "graduated", "title": "Accessibility", "colors": ["#ffffcc", …],
     "breaks": [0.1, 0.2, …]}            # upper bounds of all classes but the last; filled in from the data

Colours are ColorBrewer schemes (Cynthia Brewer, Pennsylvania State University; Apache-2.0 style licence),
written here by value: they are colour-blind safe and print in grey.
"""

from __future__ import annotations

import math
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

Style = dict[str, Any]

NOT_SIGNIFICANT = "#d9d9d9"
# ColorBrewer sequential and diverging schemes (5 classes)
YLGNBU = ["#ffffcc", "#a1dab4", "#41b6c4", "#2c7fb8", "#253494"]
YLORRD = ["#ffffb2", "#fecc5c", "#fd8d3c", "#f03b20", "#bd0026"]
PURPLES = ["#f2f0f7", "#cbc9e2", "#9e9ac8", "#756bb1", "#54278f"]
QUALITATIVE = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]


def categories(prop: str, title: str, classes: list[tuple[Any, str, str]], other: str = "Other") -> Style:
    return {"property": prop, "kind": "categories", "title": title,
            "classes": [{"value": v, "label": label, "color": color} for v, label, color in classes],
            "other": {"label": other, "color": "#bdbdbd"}}


def graduated(prop: str, title: str, colors: list[str], breaks: list[float] | None = None) -> Style:
    """Classes by value; ``breaks`` None: quantiles of the layer's values (set when the layer is published)."""
    return {"property": prop, "kind": "graduated", "title": title, "colors": colors, "breaks": breaks}


def distinct(prop: str, title: str) -> Style:
    """One colour per value found in the layer (set when the layer is published)."""
    return {"property": prop, "kind": "distinct", "title": title}


LISA = categories("cluster", "Local Moran cluster (significant)", [
    ("HH", "High–high: high values among high", "#d7191c"), ("HL", "High–low: high among low", "#fdae61"),
    ("LH", "Low–high: low among high", "#abd9e9"), ("LL", "Low–low: low values among low", "#2c7bb6"),
    ("not-significant", "Not significant", NOT_SIGNIFICANT)])
GI_STAR = categories("class", "Getis-Ord Gi* class", [
    ("hot-99", "Hot spot, 99 % confidence", "#b2182b"), ("hot-95", "Hot spot, 95 %", "#ef8a62"),
    ("hot-90", "Hot spot, 90 %", "#fddbc7"), ("not-significant", "Not significant", "#f7f7f7"),
    ("cold-90", "Cold spot, 90 %", "#d1e5f0"), ("cold-95", "Cold spot, 95 %", "#67a9cf"),
    ("cold-99", "Cold spot, 99 % confidence", "#2166ac")])
BIVARIATE = categories("cluster", "Poor density against nearby projects (significant)", [
    ("HL", "High poverty, few projects around: candidate zone", "#d7191c"),
    ("HH", "High poverty, many projects around", "#fdae61"), ("LL", "Low poverty, few projects", "#abd9e9"),
    ("LH", "Low poverty, many projects", "#2c7bb6"), ("not-significant", "Not significant", NOT_SIGNIFICANT)])
# the ten coordination bands (methodology: coupling coordination), red (imbalance) to green (coordination)
D_BANDS = categories("d_class", "Coupling coordination degree D", [
    (1, "0.0–0.1 extreme imbalance 极度失调", "#a50026"), (2, "0.1–0.2 serious imbalance 严重失调", "#d73027"),
    (3, "0.2–0.3 moderate imbalance 中度失调", "#f46d43"), (4, "0.3–0.4 mild imbalance 轻度失调", "#fdae61"),
    (5, "0.4–0.5 verge of imbalance 濒临失调", "#fee08b"), (6, "0.5–0.6 barely coordinated 勉强协调", "#d9ef8b"),
    (7, "0.6–0.7 primary coordination 初级协调", "#a6d96a"), (8, "0.7–0.8 intermediate coordination 中级协调",
                                                             "#66bd63"),
    (9, "0.8–0.9 good coordination 良好协调", "#1a9850"), (10, "0.9–1.0 quality coordination 优质协调", "#006837")])
# needs: the living-need index LN in four levels (a need is active from 0.5 by default)
NEED_LEVELS = graduated("ln", "Living-need index LN", ["#fee5d9", "#fcae91", "#fb6a4a", "#cb181d"],
                        [0.25, 0.5, 0.75])
COVERED = categories("covered", "Within reach of an open site", [
    (True, "Covered", "#1a9850"), (False, "Not covered", "#d73027")])
SITE_KIND = categories("kind", "Site", [("candidate", "New site", "#d95f02"), ("existing", "Existing site",
                                                                                  "#1b9e77")])


FIXED = (LISA, GI_STAR, BIVARIATE, D_BANDS, NEED_LEVELS, COVERED, SITE_KIND)


def legend_texts() -> set[str]:
    """The titles and class labels of the fixed styles (legends in the portal show them in its language)."""
    return {s["title"] for s in FIXED} | {c["label"] for s in FIXED for c in s.get("classes", [])}


def resolve(style: Style | None, values: list[Any] | np.ndarray | None) -> Style | None:
    """The style with what depends on the data filled in: quantile breaks of graduated styles, the classes of
    distinct ones (at most eight colours; the rest are 'other')."""
    if style is None:
        return None
    out = dict(style)
    if style["kind"] == "graduated" and style.get("breaks") is None:
        nums = np.asarray([v for v in (values if values is not None else []) if _finite(v)], dtype=float)
        k = len(style["colors"])
        if len(nums):
            qs = np.unique(np.round(np.quantile(nums, [i / k for i in range(1, k)]), 12))
            out["breaks"] = [float(q) for q in qs]
        else:
            out["breaks"] = []
        out["colors"] = style["colors"][: len(out["breaks"]) + 1]
    elif style["kind"] == "distinct":
        plain = {v.item() if isinstance(v, np.generic) else v for v in (values if values is not None else [])
                 if v is not None}
        numeric = all(_finite(v) for v in plain)  # numbers (e.g. minutes of isochrones): in order, as 15 not 15.0
        seen = sorted(plain) if numeric else sorted(plain, key=str)
        out = categories(style["property"], style["title"],
                         [(v, f"{v:g}" if numeric else str(v), QUALITATIVE[i])
                          for i, v in enumerate(seen[: len(QUALITATIVE)])])
    return out


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def legend(style: Style) -> list[dict[str, Any]]:
    """(label, colour) rows in drawing order, graduated classes with their bounds."""
    if style["kind"] == "categories":
        return [{"label": c["label"], "color": c["color"]} for c in style["classes"]]
    breaks, colors = style.get("breaks") or [], style["colors"]
    bounds = [None, *breaks, None]
    rows = []
    for i, color in enumerate(colors):
        lo, hi = bounds[i], bounds[i + 1]
        label = f"≤ {_num(hi)}" if lo is None and hi is not None else f"> {_num(lo)}" if hi is None and lo is not None \
            else "all" if lo is None else f"{_num(lo)} – {_num(hi)}"
        rows.append({"label": label, "color": color})
    return rows


def _num(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


# --------------------------------------------------------------------------------------------- MapLibre
def _color_expression(style: Style) -> Any:
    prop = ["get", style["property"]]
    if style["kind"] == "categories":
        expr: list[Any] = ["match", ["to-string", prop]]
        for c in style["classes"]:
            expr += [_key(c["value"]), c["color"]]
        return [*expr, style["other"]["color"]]
    colors, breaks = style["colors"], style.get("breaks") or []
    if not breaks:
        return colors[0]
    # MapLibre's step takes lower bounds; a value equal to a break belongs to the lower class, as in the legend
    expr = ["step", ["to-number", prop, 0], colors[0]]
    for b, color in zip(breaks, colors[1:], strict=False):
        expr += [math.nextafter(b, math.inf), color]
    return expr


def _key(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


DEFAULT_COLOR = "#b5352b"  # the HTML pages' colour for layers without a declared style


def maplibre(style: Style | None, layer_id: str, tilejson_url: str, geometry_type: str,
             title: str | None = None) -> dict[str, Any]:
    """A MapLibre GL style (version 8) drawing the collection's vector tiles (source layer = collection id), by the
    declared style's classes, or in one colour for collections that declare none."""
    color = _color_expression(style) if style else DEFAULT_COLOR
    outline = "#555555" if style else DEFAULT_COLOR
    kind = geometry_type.removeprefix("Multi")
    common = {"source": layer_id, "source-layer": layer_id}
    layers: list[dict[str, Any]]
    if kind == "Polygon":
        layers = [{"id": f"{layer_id}-fill", "type": "fill", **common,
                   "paint": {"fill-color": color, "fill-opacity": 0.75 if style else 0.25,
                             "fill-outline-color": outline}}]
    elif kind == "LineString":
        layers = [{"id": f"{layer_id}-line", "type": "line", **common,
                   "paint": {"line-color": color, "line-width": 1.5}}]
    else:
        layers = [{"id": f"{layer_id}-circle", "type": "circle", **common,
                   "paint": {"circle-color": color, "circle-radius": 4, "circle-stroke-color": "#555555",
                             "circle-stroke-width": 0.5}}]
    doc: dict[str, Any] = {"version": 8, "name": (style or {}).get("title") or title or layer_id,
                           "sources": {layer_id: {"type": "vector", "url": tilejson_url}}, "layers": layers}
    if style:
        doc["metadata"] = {"tpa:legend": legend(style), "tpa:property": style["property"]}
    return doc


# --------------------------------------------------------------------------------------------- QGIS
def _symbol(i: int, color: str, kind: str) -> str:
    r, g, b = (int(color[j:j + 2], 16) for j in (1, 3, 5))
    rgba = f"{r},{g},{b},255"
    if kind == "Polygon":
        layer = (f'<layer class="SimpleFill"><Option type="Map"><Option name="color" value="{rgba}" type="QString"/>'
                 '<Option name="outline_color" value="85,85,85,255" type="QString"/>'
                 '<Option name="outline_width" value="0.2" type="QString"/></Option></layer>')
        return f'<symbol name="{i}" type="fill" alpha="0.8">{layer}</symbol>'
    if kind == "LineString":
        layer = (f'<layer class="SimpleLine"><Option type="Map"><Option name="line_color" value="{rgba}" '
                 'type="QString"/><Option name="line_width" value="0.5" type="QString"/></Option></layer>')
        return f'<symbol name="{i}" type="line" alpha="1">{layer}</symbol>'
    layer = (f'<layer class="SimpleMarker"><Option type="Map"><Option name="color" value="{rgba}" type="QString"/>'
             '<Option name="outline_color" value="85,85,85,255" type="QString"/>'
             '<Option name="size" value="2.4" type="QString"/></Option></layer>')
    return f'<symbol name="{i}" type="marker" alpha="1">{layer}</symbol>'


def qml(style: Style, geometry_type: str) -> str:
    """A QGIS layer style (QML): a categorized or graduated renderer on the style's property."""
    kind = geometry_type.removeprefix("Multi")
    attr = quoteattr(style["property"])
    rows = legend(style) + ([style["other"]] if style["kind"] == "categories" else [])
    symbols = "".join(_symbol(i, r["color"], kind) for i, r in enumerate(rows))
    if style["kind"] == "categories":
        cats = "".join(f'<category value={quoteattr(_key(c["value"]))} symbol="{i}" label={quoteattr(c["label"])} '
                       'render="true"/>' for i, c in enumerate(style["classes"]))
        cats += f'<category value="" symbol="{len(style["classes"])}" label={quoteattr(style["other"]["label"])} ' \
                'render="true"/>'
        renderer = (f'<renderer-v2 type="categorizedSymbol" attr={attr} enableorderby="0"><categories>{cats}'
                    f'</categories><symbols>{symbols}</symbols></renderer-v2>')
    else:
        breaks = style.get("breaks") or []
        bounds = [-1e308, *breaks, 1e308]
        ranges = "".join(f'<range lower="{bounds[i]!r}" upper="{bounds[i + 1]!r}" symbol="{i}" '
                         f'label={quoteattr(r["label"])} render="true"/>' for i, r in enumerate(rows))
        renderer = (f'<renderer-v2 type="graduatedSymbol" attr={attr} graduatedMethod="GraduatedColor">'
                    f'<ranges>{ranges}</ranges><symbols>{symbols}</symbols></renderer-v2>')
    return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            f'<qgis version="3.22" styleCategories="Symbology">{renderer}</qgis>\n')
