"""Stage 2: household need scores in [0, 1] with the inputs behind each (docs/methodology.md#needs).

Every rule is a transparent formula of registry fields so an official can retrace a score; the rules and their
weights are configurable (``NeedRules``). The scoring is vectorised with numpy over all households.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from app.analysis.spatial import AnalysisError
from app.models.codes import LIVING_NEEDS, PRODUCTION_NEEDS, Need

NEEDS: tuple[str, ...] = tuple(n.value for n in Need)
LIVING: tuple[str, ...] = tuple(n.value for n in LIVING_NEEDS)
PRODUCTION: tuple[str, ...] = tuple(n.value for n in PRODUCTION_NEEDS)
CAPACITY = ("labour_share", "skilled_share", "arable_pc", "coop_credit", "road_quality")

# Household fields the scoring reads (a registry import provides them; an inline table must name them).
FIELDS: dict[str, str] = {
    "size": "members (required, > 0)",
    "net_income_pc": "net income per person per year (L_FOOD)",
    "food_insecure": "self-reported food insecurity (L_FOOD)",
    "clothing_insecure": "survey flag (L_CLOTH)",
    "dropout_children": "members aged 6–15 out of school, not for health reasons (L_EDU)",
    "ill_members": "members with a chronic or major illness (L_HEALTH)",
    "family_doctor": "the household has a contracted family doctor (L_HEALTH, illness_term = without_doctor)",
    "uninsured_members": "members without medical insurance (L_HEALTH)",
    "clinic_min": "minutes to the nearest clinic or hospital (L_HEALTH); else clinic_km at travel_speed_kmh",
    "clinic_km": "km to the nearest clinic or hospital (when clinic_min is absent)",
    "house_safety_grade": "A, B, C or D (L_HOUSE)",
    "water_safe": "safe drinking water (L_WATER)",
    "water_difficulty": "difficult access to water (L_WATER)",
    "main_cause": "main cause of poverty (priors, docs/methodology.md#cause-table)",
    "status": "registry status (the main cause's priors apply to poor, returned and monitored households)",
    "ordinary_labour": "members with ordinary labour capacity (P_JOB)",
    "skilled_labour": "skilled members (P_JOB, P_SKILL)",
    "arable_mu": "arable land in mu (P_LAND)",
    "irrigated_mu": "irrigated land in mu (P_IRRIG)",
    "coop_member": "member of a cooperative (P_INDUSTRY)",
    "microcredit": "has microcredit (P_CAPITAL)",
    "access_road": "dirt, gravel, cement or asphalt (P_ROAD)",
    "market_km": "km to the nearest market (P_MARKET)",
}


@dataclass
class NeedRules:
    """The rules' parameters (defaults: docs/methodology.md#needs and ``indicator_def``)."""

    poverty_line: float
    health_weights: tuple[float, float, float] = (0.5, 0.3, 0.2)  # illness, uninsured, clinic distance
    clinic_free_min: float = 30.0  # clip((clinic_min − 30)/30, 0, 1)
    clinic_span_min: float = 30.0
    travel_speed_kmh: float = 30.0
    house_grades: dict[str, float] = field(default_factory=lambda: {"A": 0.0, "B": 0.0, "C": 0.7, "D": 1.0})
    road_quality: dict[str, float] = field(default_factory=lambda: {
        "dirt": 0.0, "gravel": 1 / 3, "cement": 2 / 3, "asphalt": 1.0})
    arable_target_mu: float = 1.4  # arable land per person at which P_LAND = 0
    market_far_km: float = 20.0  # P_MARKET = clip(market_km / 20, 0, 1)
    cause_prior: float = 0.5  # a need listed for the main cause gets at least this
    threshold: float = 0.5  # a need is active when its score reaches this
    living_index: str = "max"  # LN = max(L_*) (binding constraint) or mean (ranking)
    # L_HEALTH's illness term: any ill member (the scoring formula), or an ill member in a household without a
    # contracted family doctor (the registry form's own test of the need, docs/methodology.md#needs).
    illness_term: str = "without_doctor"
    # Production needs that presuppose a member able to work: a household without one (ordinary or skilled
    # labour) scores 0 on them, whatever its cause; its route is social security and asset income (the cause
    # table's lack_labour row). An empty tuple applies the formulas to every household.
    labour_needs: tuple[str, ...] = ("P_SKILL", "P_JOB", "P_CAPITAL", "P_INDUSTRY", "P_LAND", "P_IRRIG")
    # Registry statuses whose main cause sets the priors: the cause explains a household's poverty while it lasts;
    # an exited household's needs are judged on its present conditions. Rows without a status get the priors.
    prior_statuses: tuple[str, ...] = ("poor", "returned", "monitored")

    def describe(self) -> dict[str, str]:
        """The rule of every need, with the parameters in force (for the ``rules`` output)."""
        a, b, c = self.health_weights
        g = self.house_grades
        r = self.road_quality
        ill_doc = " AND NOT family_doctor" if self.illness_term == "without_doctor" else ""
        labour = (f"; 0 for households without ordinary or skilled labour: {', '.join(self.labour_needs)}"
                  if self.labour_needs else "")
        return {
            "L_FOOD": f"[net_income_pc < {self.poverty_line:g}] OR food_insecure",
            "L_CLOTH": "[clothing_insecure]",
            "L_EDU": "[dropout_children > 0] (members aged 6–15 with in_school = none and health = healthy)",
            "L_HEALTH": f"min(1, {a:g}·[ill_members > 0{ill_doc}] + {b:g}·[uninsured_members > 0] + "
                        f"{c:g}·clip((clinic_min − {self.clinic_free_min:g})/{self.clinic_span_min:g}, 0, 1)); "
                        f"clinic_min = clinic_km / {self.travel_speed_kmh:g} km/h when not given; "
                        "no distance → that term is 0",
            "L_HOUSE": "{" + ", ".join(f"{k}: {v:g}" for k, v in g.items()) + "}[house_safety_grade]; no grade → 0",
            "L_WATER": "[NOT water_safe OR water_difficulty]",
            "P_SKILL": "1 − skilled_labour / (ordinary_labour + skilled_labour)",
            "P_JOB": "1 − labour_share ((ordinary_labour + skilled_labour) / size)",
            "P_CAPITAL": "1 − [microcredit]",
            "P_LAND": f"1 − min(1, arable_pc / {self.arable_target_mu:g} mu per person)",
            "P_IRRIG": "1 − irrigated_mu / arable_mu when arable_mu > 0, else 0",
            "P_ROAD": "1 − road_quality, {" + ", ".join(f"{k}: {v:.4g}" for k, v in r.items()) + "}[access_road]",
            "P_MARKET": f"clip(market_km / {self.market_far_km:g}, 0, 1); no market data → 0",
            "P_INDUSTRY": "1 − [coop_member]",
            "P_MOTIV": "no registry indicator: the main-cause prior only",
            "P_RELOC": "no registry indicator: the main-cause prior only",
            "P_RESIL": "no registry indicator: the main-cause prior only",
            "prior": f"max(score, {self.cause_prior:g}) for the needs the region's table lists for the main cause, "
                     f"for households with status {', '.join(self.prior_statuses) or '(none)'} or no status",
            "active": f"score ≥ {self.threshold:g}{labour}",
            "LN": f"{self.living_index}(L_FOOD, L_CLOTH, L_EDU, L_HEALTH, L_HOUSE, L_WATER)",
        }


@dataclass
class CauseTable:
    """The region's cause → need → project table (``cause_need_project``)."""

    needs: dict[str, set[str]]  # cause → needs
    types: dict[str, list[str]]  # cause → project types (table order)

    def need_links(self) -> dict[str, dict[str, int]]:
        """need → {project type: number of causes listing both} (the chain cause → need → project)."""
        out: dict[str, dict[str, int]] = {}
        for cause, needs in self.needs.items():
            for n in needs:
                for t in self.types.get(cause, []):
                    out.setdefault(n, {})
                    out[n][t] = out[n].get(t, 0) + 1
        return out


@dataclass
class Assessment:
    scores: dict[str, np.ndarray]  # need → score per household
    capacity: dict[str, np.ndarray]  # labour_share, skilled_share, arable_pc, coop_credit, road_quality
    ln_max: np.ndarray
    ln_mean: np.ndarray
    active: list[list[str]]
    recommended: list[list[str]]
    explain: list[str]  # per household, JSON: the inputs behind each score
    active_matrix: np.ndarray  # households × NEEDS, score ≥ threshold

    def index(self, kind: str) -> np.ndarray:
        return self.ln_max if kind == "max" else self.ln_mean


def labour_dependent(rules: NeedRules) -> tuple[str, ...]:
    """The needs the rules zero for households without labour, in the order of NEEDS."""
    return tuple(n for n in NEEDS if n in rules.labour_needs)


def _num(rows: list[dict[str, Any]], key: str, default: float = np.nan) -> np.ndarray:
    vals = [r.get(key) for r in rows]
    if not any(type(v) is bool for v in vals):  # the fast path: numbers, numeric text and None
        try:
            out = np.array(vals, dtype=float)
        except (TypeError, ValueError):
            pass
        else:
            if default is not np.nan:
                out[np.isnan(out)] = default
            return out
    out = np.full(len(rows), default, dtype=float)
    for i, v in enumerate(vals):
        if v is None or isinstance(v, bool):
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            raise AnalysisError(f"households: row {i} has a non-numeric '{key}': {v!r}.") from None
    return out


_TRUE = frozenset(("true", "t", "1", "yes", "y"))


def _flag(rows: list[dict[str, Any]], key: str) -> np.ndarray:
    """Booleans; null and absent are False (the registry flags a need, it does not flag its absence)."""
    return np.array([(v.strip().lower() in _TRUE) if isinstance(v, str) else bool(v)
                     for v in (r.get(key) for r in rows)], dtype=bool)


def _opt_flag(rows: list[dict[str, Any]], key: str, default: bool) -> np.ndarray:
    """Booleans where null means the default (e.g. water_safe null → assumed safe)."""
    return np.array([default if v is None else (v.strip().lower() in _TRUE if isinstance(v, str) else bool(v))
                     for v in (r.get(key) for r in rows)], dtype=bool)


def _text(rows: list[dict[str, Any]], key: str) -> list[str | None]:
    return [None if r.get(key) is None else str(r.get(key)) for r in rows]


def _rounded(a: np.ndarray) -> list[float | None]:
    """Values rounded to 6 decimals as a list, None where missing (for the explanations)."""
    out: list[float | None] = np.round(a, 6).tolist()
    for i in np.flatnonzero(~np.isfinite(a)):
        out[i] = None
    return out


def assess(rows: list[dict[str, Any]], rules: NeedRules, table: CauseTable, max_recommended: int = 3) -> Assessment:
    """Score every household (docs/methodology.md#needs) and recommend project types through the cause table."""
    m = len(rows)
    size = _num(rows, "size")
    if m and (~np.isfinite(size) | (size <= 0)).any():
        bad = int(np.flatnonzero(~np.isfinite(size) | (size <= 0))[0])
        raise AnalysisError(f"households: row {bad} has no positive 'size'.")
    income = _num(rows, "net_income_pc")
    food_insecure = _flag(rows, "food_insecure")
    cloth = _flag(rows, "clothing_insecure")
    dropout = np.nan_to_num(_num(rows, "dropout_children"), nan=0.0)
    ill = np.nan_to_num(_num(rows, "ill_members"), nan=0.0)
    uninsured = np.nan_to_num(_num(rows, "uninsured_members"), nan=0.0)
    clinic_min = _num(rows, "clinic_min")
    clinic_km = _num(rows, "clinic_km")
    from_km = ~np.isfinite(clinic_min) & np.isfinite(clinic_km)
    clinic_min[from_km] = clinic_km[from_km] / rules.travel_speed_kmh * 60.0
    grade = _text(rows, "house_safety_grade")
    water_safe = _opt_flag(rows, "water_safe", True)
    water_diff = _flag(rows, "water_difficulty")
    cause = _text(rows, "main_cause")
    ordinary = np.nan_to_num(_num(rows, "ordinary_labour"), nan=0.0)
    skilled = np.nan_to_num(_num(rows, "skilled_labour"), nan=0.0)
    arable = np.nan_to_num(_num(rows, "arable_mu"), nan=0.0)
    irrigated = np.nan_to_num(_num(rows, "irrigated_mu"), nan=0.0)
    coop = _flag(rows, "coop_member")
    credit = _flag(rows, "microcredit")
    road = _text(rows, "access_road")
    market_km = _num(rows, "market_km")

    s: dict[str, np.ndarray] = {}
    food_income = np.isfinite(income) & (income < rules.poverty_line)
    s["L_FOOD"] = (food_income | food_insecure).astype(float)
    s["L_CLOTH"] = cloth.astype(float)
    s["L_EDU"] = (dropout > 0).astype(float)
    a, b, c = rules.health_weights
    dist_term = np.where(np.isfinite(clinic_min),
                         np.clip((clinic_min - rules.clinic_free_min) / rules.clinic_span_min, 0.0, 1.0), 0.0)
    ill_term = ill > 0
    doctor = _flag(rows, "family_doctor")
    if rules.illness_term == "without_doctor":
        ill_term &= ~doctor
    s["L_HEALTH"] = np.minimum(1.0, a * ill_term + b * (uninsured > 0) + c * dist_term)
    try:
        s["L_HOUSE"] = np.array([0.0 if g is None else rules.house_grades[g] for g in grade])
    except KeyError as exc:
        raise AnalysisError(f"households: unknown house_safety_grade {exc.args[0]!r}.") from None
    s["L_WATER"] = (~water_safe | water_diff).astype(float)

    labour_share = (ordinary + skilled) / size
    skilled_share = skilled / size
    arable_pc = arable / size
    coop_credit = (coop.astype(float) + credit.astype(float)) / 2
    try:
        road_q = np.array([np.nan if v is None else rules.road_quality[v] for v in road])
    except KeyError as exc:
        raise AnalysisError(f"households: unknown access_road {exc.args[0]!r}.") from None
    workers = ordinary + skilled
    s["P_SKILL"] = np.where(workers > 0, 1.0 - np.clip(skilled / np.where(workers > 0, workers, 1.0), 0, 1), 0.0)
    s["P_JOB"] = 1.0 - np.clip(labour_share, 0, 1)
    s["P_CAPITAL"] = 1.0 - credit
    s["P_LAND"] = 1.0 - np.minimum(1.0, arable_pc / rules.arable_target_mu)
    s["P_IRRIG"] = np.where(arable > 0, 1.0 - np.clip(irrigated / np.where(arable > 0, arable, 1.0), 0, 1), 0.0)
    s["P_ROAD"] = np.where(np.isfinite(road_q), 1.0 - road_q, 0.0)
    s["P_MARKET"] = np.where(np.isfinite(market_km), np.clip(market_km / rules.market_far_km, 0.0, 1.0), 0.0)
    s["P_INDUSTRY"] = 1.0 - coop
    for n in ("P_MOTIV", "P_RELOC", "P_RESIL"):
        s[n] = np.zeros(m)

    # priors of the main cause (docs/methodology.md#needs): a need listed for the cause gets at least cause_prior
    prior = {n: np.zeros(m, dtype=bool) for n in NEEDS}
    status = _text(rows, "status")
    with_prior = set(rules.prior_statuses)
    for i, cz in enumerate(cause):
        if status[i] is not None and status[i] not in with_prior:
            continue
        for n in table.needs.get(cz or "", ()):
            prior[n][i] = True
    for n in NEEDS:
        raised = prior[n] & (s[n] < rules.cause_prior)
        s[n] = np.where(raised, rules.cause_prior, s[n])
        prior[n] = raised
    for n in rules.labour_needs:  # after the priors: no cause makes a household without labour need a job
        s[n] = np.where(workers > 0, s[n], 0.0)

    living = np.column_stack([s[n] for n in LIVING]) if m else np.zeros((0, len(LIVING)))
    ln_max = living.max(axis=1) if m else np.zeros(0)
    ln_mean = living.mean(axis=1) if m else np.zeros(0)

    # recommendations: the types linked to an active need, best need score first, then the number of causes
    links = table.need_links()
    types = sorted({t for d in links.values() for t in d})
    tindex = {t: j for j, t in enumerate(types)}
    key = np.zeros((m, len(types)))
    via = np.full((m, len(types)), -1)
    score_mat = np.column_stack([s[n] for n in NEEDS]) if m else np.zeros((0, len(NEEDS)))
    active_mat = score_mat >= rules.threshold - 1e-12
    for k, n in enumerate(NEEDS):
        for t, count in links.get(n, {}).items():
            j = tindex[t]
            cand = np.where(active_mat[:, k], score_mat[:, k] * 1000.0 + count, 0.0)
            better = cand > key[:, j]
            key[better, j] = cand[better]
            via[better, j] = k

    active: list[list[str]] = []
    recommended: list[list[str]] = []
    explain: list[str] = []
    order = np.argsort(-key, axis=1, kind="stable") if len(types) else np.zeros((m, 0), dtype=int)
    inc_l, clinic_l, lab_l, apc_l = (_rounded(v) for v in (income, clinic_min, labour_share, arable_pc))
    ar_l, ir_l, mk_l = (_rounded(v) for v in (arable, irrigated, market_km))
    raised_l = (np.column_stack([prior[n] for n in NEEDS]) if m else np.zeros((0, len(NEEDS)), dtype=bool)).tolist()
    active_l = active_mat.tolist()
    dumps = orjson.dumps
    for i in range(m):
        active.append([n for n, on in zip(NEEDS, active_l[i], strict=True) if on])
        top = [j for j in order[i, :max_recommended] if key[i, j] > 0]
        recommended.append([types[j] for j in top])
        explain.append(dumps({
            "L_FOOD": {"net_income_pc": inc_l[i], "poverty_line": rules.poverty_line,
                       "food_insecure": bool(food_insecure[i])},
            "L_CLOTH": {"clothing_insecure": bool(cloth[i])},
            "L_EDU": {"dropout_children": int(dropout[i])},
            "L_HEALTH": {"ill_members": int(ill[i]), "family_doctor": bool(doctor[i]),
                         "uninsured_members": int(uninsured[i]),
                         "clinic_min": clinic_l[i]},
            "L_HOUSE": {"house_safety_grade": grade[i]},
            "L_WATER": {"water_safe": bool(water_safe[i]), "water_difficulty": bool(water_diff[i])},
            "P_SKILL": {"skilled_labour": int(skilled[i]), "labour": int(workers[i])},
            "P_JOB": {"labour_share": lab_l[i]},
            "P_CAPITAL": {"microcredit": bool(credit[i])},
            "P_LAND": {"arable_pc": apc_l[i]},
            "P_IRRIG": {"arable_mu": ar_l[i], "irrigated_mu": ir_l[i]},
            "P_ROAD": {"access_road": road[i]},
            "P_MARKET": {"market_km": mk_l[i]},
            "P_INDUSTRY": {"coop_member": bool(coop[i])},
            "prior": {"main_cause": cause[i], "raised": [n for n, on in zip(NEEDS, raised_l[i], strict=True) if on]},
            "recommended_for": {types[j]: NEEDS[via[i, j]] for j in top},
        }).decode())
    capacity = {"labour_share": labour_share, "skilled_share": skilled_share, "arable_pc": arable_pc,
                "coop_credit": coop_credit, "road_quality": road_q}
    return Assessment(s, capacity, ln_max, ln_mean, active, recommended, explain, active_mat)
