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


# Analyses are real work: a valid request at the top of a documented range (99,999 permutations, an hour's solver
# limit, an H3 grid at resolution 10) takes minutes, which is what `Prefer: respond-async` is for. Values inside
# their valid range are brought down to small ones before sending, so the fuzzer spends its time on the contract,
# not on computing; values outside the range (the negative cases) are sent as generated.
_AT_MOST = {"permutations": (0, 99_999, 99), "time_limit_s": (0, 3600, 5), "p": (1, 10_000, 20),
            "h3_resolution": (5, 10, 7), "buffer_km": (0, 100, 5),
            # return-risk: a model of 5,000 trees 12 deep validated on 20 years is an hour's work
            "trees": (10, 5000, 10), "depth": (1, 12, 2), "leaves": (2, 1024, 4), "validate_years": (1, 20, 1),
            "until": (2021, 2200, 2021),  # the demo's registry up to 2021: a few seconds to read, not ten
            # small-area estimation: 1,000 bootstrap replicates of 25,000 households are minutes
            "bootstrap": (0, 1000, 10)}


def _smaller(value: object) -> object:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            bounds = _AT_MOST.get(k)
            if bounds and isinstance(v, (int, float)) and not isinstance(v, bool) and bounds[0] <= v <= bounds[1]:
                v = min(v, bounds[2])
            out[k] = _smaller(v)
        return out
    if isinstance(value, list):
        return [_smaller(v) for v in value]
    return value


@schemathesis.hook
def before_call(ctx, case, **kwargs):  # noqa: ANN001, ANN201 (schemathesis' hook signature)
    if case.path.endswith("/execution") and isinstance(case.body, dict):
        case.body = _smaller(case.body)
        inputs = case.body.get("inputs")
        if case.path.endswith("/return-risk/execution") and isinstance(inputs, dict) and "until" not in inputs:
            inputs["until"] = 2021  # without it, every registry year is read
        if case.path.endswith("/isochrones/execution") and isinstance(inputs, dict):
            # isochrones of the demo's 1,200 villages for an hour at 100 m cells take longer than a synchronous
            # execution may (503: execute asynchronously); at most 15 minutes, on cells of 1 km at least
            if isinstance(inputs.get("minutes"), list):
                inputs["minutes"] = [min(m, 15) if isinstance(m, (int, float)) and not isinstance(m, bool) and
                                     0 < m <= 600 else m for m in inputs["minutes"]]
            elif "minutes" not in inputs:
                inputs["minutes"] = [15]
            cell = inputs.get("cell_m")
            if cell is None or (isinstance(cell, (int, float)) and not isinstance(cell, bool) and 5 <= cell <= 5000):
                inputs["cell_m"] = max(cell or 0, 1000)
