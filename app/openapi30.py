"""Down-convert FastAPI's OpenAPI 3.1 document to OpenAPI 3.0.3.

OGC API - Features Part 1 (``/conf/oas30``) and clients such as GDAL and OWSLib expect OpenAPI 3.0;
FastAPI only emits 3.1. No maintained library does this conversion for FastAPI output, so the few
3.1-only constructs FastAPI produces are rewritten here: ``anyOf [X, null]`` and type lists become
``nullable``, ``const`` becomes a one-value ``enum``, ``examples`` becomes ``example``, numeric
``exclusiveMinimum``/``exclusiveMaximum`` become the boolean form, and a nullable ``enum`` lists null (as OAS 3.0.3
requires for null to be valid).
"""

from __future__ import annotations

import copy
from typing import Any

_NAMED = frozenset({"properties", "patternProperties", "$defs", "definitions"})


def _is_null(s: Any) -> bool:
    return isinstance(s, dict) and s.get("type") == "null" and len(s) == 1


def _schema(s: Any) -> Any:
    if isinstance(s, list):
        return [_schema(x) for x in s]
    if not isinstance(s, dict):
        return s
    # keys of "properties" (and of definition maps) are names, not keywords: only their values are schemas
    s = {k: ({name: _schema(sub) for name, sub in v.items()} if k in _NAMED and isinstance(v, dict) else _schema(v))
         for k, v in s.items()}
    for key in ("anyOf", "oneOf"):
        options = s.get(key)
        if isinstance(options, list) and any(_is_null(o) for o in options):
            rest = [o for o in options if not _is_null(o)]
            del s[key]
            if len(rest) == 1:
                only = rest[0]
                if "$ref" in only:
                    s["allOf"] = [only]
                else:
                    s = {**only, **s}
            else:
                s[key] = rest
            s["nullable"] = True
    if isinstance(s.get("type"), list):
        types = [t for t in s["type"] if t != "null"]
        if len(types) < len(s["type"]):
            s["nullable"] = True
        s["type"] = types[0] if len(types) == 1 else types
        if isinstance(s["type"], list):  # several non-null types: no 3.0 equivalent but anyOf
            s["anyOf"] = [{"type": t} for t in s.pop("type")]
    if "const" in s:
        s["enum"] = [s.pop("const")]
    if isinstance(s.get("examples"), list):
        examples = s.pop("examples")
        if examples:
            s["example"] = examples[0]
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(s.get(bound), (int, float)) and not isinstance(s.get(bound), bool):
            s[flag] = s.pop(bound)
            s[bound] = True
    if s.get("nullable") and isinstance(s.get("enum"), list) and None not in s["enum"]:
        s["enum"] = [*s["enum"], None]  # OAS 3.0.3: an enum admits null only when it lists it
    s.pop("$schema", None)
    s.pop("contentMediaType", None)
    return s


def _walk(node: Any) -> Any:
    """Rewrite every ``schema`` object and the component schemas; leave the rest untouched."""
    if isinstance(node, list):
        return [_walk(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k == "schema":
            out[k] = _schema(v)
        elif k == "schemas" and isinstance(v, dict):
            out[k] = {name: _schema(sch) for name, sch in v.items()}
        else:
            out[k] = _walk(v)
    return out


def to_openapi30(doc: dict[str, Any]) -> dict[str, Any]:
    doc = _walk(copy.deepcopy(doc))
    doc["openapi"] = "3.0.3"
    doc.pop("webhooks", None)
    doc.get("info", {}).pop("summary", None)
    doc.get("info", {}).get("license", {}).pop("identifier", None)
    return doc
