"""Schemathesis checks of our own, loaded with ``SCHEMATHESIS_HOOKS=fuzz_hooks`` by tests/test_fuzz.py.

Every error answer must be an RFC 9457 problem document (``application/problem+json`` with ``type``, ``title``,
``status`` equal to the HTTP status, ``detail``), or an HTML error page when HTML was asked for.
"""

from __future__ import annotations

import json

import schemathesis


def _header(headers: object, name: str) -> str:
    value = None
    if isinstance(headers, dict):
        for k, v in headers.items():
            if k.lower() == name:
                value = v
                break
    if isinstance(value, list):
        value = value[0] if value else None
    return value or ""


@schemathesis.check
def problem_details(ctx, response, case):  # noqa: ANN001, ANN201 (schemathesis' check signature)
    """Error answers are problem documents."""
    status = response.status_code
    if status < 400:
        return None
    ctype = _header(response.headers, "content-type").split(";")[0].strip()
    if ctype == "text/html":
        return None  # the HTML rendering of a problem, for a browser that asked for HTML
    if ctype != "application/problem+json":
        raise AssertionError(f"{status} answered as {ctype!r}, not application/problem+json")
    body = json.loads(response.content)
    for key in ("type", "title", "detail"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise AssertionError(f"problem document without a {key!r} string: {body}")
    if body.get("status") != status:
        raise AssertionError(f"problem status {body.get('status')} differs from the HTTP status {status}")
    if status in (429, 503) and not _header(response.headers, "retry-after"):
        raise AssertionError(f"{status} without Retry-After")
    return None
