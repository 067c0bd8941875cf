"""The demo's household survey: a two-stage sample drawn from the demo registry, as a statistical office would
draw one from its frame, so that small-area estimates can be compared with the registry's own figures.

Design (documented in docs/methodology.md#small-area-estimation and the demo's provenance file):

* strata: the counties; in each, villages are drawn with probability proportional to their registered households
  (systematic PPS, Madow 1949), 10 % of the region's villages allotted to the counties by their households;
* in each village drawn, 8 households by simple random sampling without replacement (all when it has fewer);
* design weight ``1 / (pi_village * pi_household)``; the primary sampling unit is the village.

A household answers with its registry values of the default snapshot (income per person, members, labour, land,
cooperative membership, …): the survey measures what the registry holds, so the registry is the truth the estimates
are checked against.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import text

from app.processes.registry import MEMBER_COUNTS, households_sql, members_sql, snapshot_at

SURVEY_ID = "demo-survey-2020"
VILLAGE_SHARE = 0.10
PER_VILLAGE = 8
# what the survey asks of a household besides its income (names as in the registry input of processes)
ASKED = ("size", "arable_mu", "irrigated_mu", "coop_member", "microcredit", "family_doctor", "water_safe",
         "house_safety_grade", *MEMBER_COUNTS)


def systematic_pps(sizes: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices drawn by systematic PPS and their inclusion probabilities (capped at 1)."""
    total = float(sizes.sum())
    pi = np.minimum(n * sizes / total, 1.0)
    step = total / n
    points = rng.uniform(0, step) + step * np.arange(n)
    chosen = np.unique(np.searchsorted(np.cumsum(sizes), points, side="right"))
    return chosen[chosen < len(sizes)], pi


async def demo_survey(session: Any, region: str, seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The survey's record and its households."""
    at = await snapshot_at(session, region, None)
    result = await session.execute(text(households_sql("h.geom")), {"region": region, "at": at, "statuses": None})
    keys = list(result.keys())
    rows = sorted((dict(zip(keys, r, strict=True)) for r in result.all()), key=lambda p: p["id"])
    members = {r[0]: r[1:] for r in (await session.execute(text(members_sql()), {
        "region": region, "at": at, "year": at.year})).all()}
    rng = np.random.default_rng(seed + 2025)
    by_village: dict[str, list[dict[str, Any]]] = {}
    for p in rows:
        by_village.setdefault(p["village_code"], []).append(p)
    villages = sorted(by_village)
    county = np.array([by_village[v][0]["county_code"] for v in villages])
    size = np.array([len(by_village[v]) for v in villages], dtype=float)
    n_total = max(int(round(VILLAGE_SHARE * len(villages))), 2)
    out: list[dict[str, Any]] = []
    for c in sorted(set(county)):
        idx = np.flatnonzero(county == c)
        n_c = max(int(round(n_total * size[idx].sum() / size.sum())), 2)
        chosen, pi = systematic_pps(size[idx], min(n_c, len(idx)), rng)
        for k in chosen:
            v = villages[idx[k]]
            hh = by_village[v]
            take = min(PER_VILLAGE, len(hh))
            picked = rng.choice(len(hh), take, replace=False)
            weight = 1.0 / (pi[k] * take / len(hh))
            for j in sorted(picked):
                p = hh[j]
                counts = members.get(p["id"], (0,) * len(MEMBER_COUNTS) + (None,))
                p = {**p, **dict(zip(MEMBER_COUNTS, counts, strict=False))}
                props = {k2: p.get(k2) for k2 in ASKED}
                props |= {"township_code": p["township_code"], "county_code": p["county_code"],
                          "village_code": v}
                out.append({"hh_id": f"S{len(out) + 1:05d}", "area_code": v, "stratum": c, "psu": v,
                            "weight": weight, "size": p["size"], "income_pc": float(p["net_income_pc"]),
                            "properties": props})
    survey = {"survey_id": SURVEY_ID, "region_id": region, "title": f"Demo household survey {at.year}",
              "year": at.year, "design": f"two-stage: villages by systematic PPS within counties "
              f"({VILLAGE_SHARE:.0%} of villages), {PER_VILLAGE} households per village by SRS",
              "source": "synthetic: drawn from the demo registry (app/demo/survey.py)"}
    return survey, out
