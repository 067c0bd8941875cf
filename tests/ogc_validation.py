"""Validate responses against the official OGC API - Features schemas (tests/ogc_schemas/).

The OpenAPI 3.0 Schema Objects are translated to JSON Schema 2020-12 at load time: ``nullable`` adds
``null``, boolean ``exclusiveMinimum``/``Maximum`` become numbers, and features may have
``"geometry": null`` (RFC 7946 §3.2; the Part 1 1.1 draft does the same). Absolute
schemas.opengis.net references are mapped to the local copies (no network).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

ROOT = Path(__file__).resolve().parent / "ogc_schemas"
BASE = "https://ogc.invalid/"
ALIASES = {
    "http://schemas.opengis.net/ogcapi/features/part1/1.0/openapi/": "part1-1.0.1/",
    "https://schemas.opengis.net/ogcapi/features/part1/1.0/openapi/": "part1-1.0.1/",
}


def _translate(node: Any) -> Any:
    if isinstance(node, list):
        return [_translate(x) for x in node]
    if not isinstance(node, dict):
        return node
    node = {k: _translate(v) for k, v in node.items() if k not in ("example", "examples")}
    if node.pop("nullable", False):
        if isinstance(node.get("type"), str):
            node["type"] = [node["type"], "null"]
        else:
            node = {"anyOf": [node, {"type": "null"}]}
    for bound, base in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if node.get(bound) is True:
            node[bound] = node.pop(base)
        elif node.get(bound) is False:
            node.pop(bound)
    if node.get("type") == "null" and "anyOf" not in node:
        node["type"] = "null"
    return node


@cache
def _load(uri: str) -> Resource:
    rel = uri
    for prefix, local in ALIASES.items():
        if uri.startswith(prefix):
            rel = local + uri[len(prefix):]
    if rel.startswith(BASE):
        rel = rel[len(BASE):]
    data = _translate(yaml.safe_load((ROOT / rel).read_text(encoding="utf-8")))
    if rel.endswith("featureGeoJSON.yaml"):
        data["properties"]["geometry"] = {"anyOf": [data["properties"]["geometry"], {"type": "null"}]}
    return Resource.from_contents(data, default_specification=DRAFT202012)


@cache
def _registry() -> Registry:
    return Registry(retrieve=_load)


@cache
def _validator(schema_path: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": BASE + schema_path}, registry=_registry())


def validate(instance: Any, schema_path: str) -> None:
    """Raise jsonschema.ValidationError unless ``instance`` matches e.g. 'part1-1.0.1/schemas/link.yaml'."""
    _validator(schema_path).validate(instance)


def validate_problem(body: Any) -> None:
    """An OGC 1.0 exception (code, description) that is also an RFC 9457 problem document."""
    validate(body, "part1-1.0.1/schemas/exception.yaml")
    assert {"type", "title", "status", "detail"} <= set(body)
