"""Poverty maps where there is no registry: small-area estimation from a household survey with covariates from
the census, the telecom aggregates, facilities and accessibility results (docs/methodology.md#small-area-estimation).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from app.analysis import sae
from app.analysis.spatial import AnalysisError
from app.processes import styles as st
from app.processes.base import (
    LAYER_SCHEMA,
    OBJECT,
    PROVENANCE,
    HouseholdsInput,
    LayerOut,
    Outcome,
    OutputSpec,
    Process,
    Strict,
    as_floats,
    geoms_of,
)
from app.processes.data import DataInput, Units, _number


class CovariateSource(Strict):
    """Area covariates from another input, e.g. ``/collections/telecom-admin-indicators/items?indicator=rog_km``
    or the census indicators of ``/collections/admin-units/items?level=3``."""

    data: DataInput
    key: str | None = Field(None, max_length=200, description="Property of these rows with the code they stand "
                            "for; default: the feature id")
    on: str | None = Field(None, max_length=200, description="Property of the areas (or, for the unit model, of "
                           "the population households) matched to the key, e.g. county_code; default: the area code")
    properties: dict[str, str] = Field(min_length=1, description="Property of these rows (a.b for nested values) → "
                                       "name of the covariate it becomes (covariates in the order of their names)")


class Benchmark(Strict):
    """Make the estimates add up to known figures: within each group (or overall), the share-weighted mean of the
    areas' estimates equals the total given (Datta et al. 2011)."""

    value: float | None = Field(None, description="The figure for all areas together (e.g. the national "
                                "headcount ratio of an official release)")
    totals: dict[str, float] | None = Field(None, description="The figure per group, keyed by the value of `by`")
    by: str | None = Field(None, max_length=200, description="Property of the areas grouping them (e.g. "
                           "county_code) for `totals`")
    share: str | None = Field(None, max_length=200, description="Property of the areas with their weight (e.g. "
                              "population); default: equal weights")
    method: Literal["ratio", "difference"] = "ratio"

    @model_validator(mode="after")
    def _one(self) -> Benchmark:
        if (self.value is None) == (self.totals is None):
            raise ValueError("give either value or totals")
        if self.totals is not None and self.by is None:
            raise ValueError("totals need `by`, the property grouping the areas")
        return self


class SAEInputs(Strict):
    model: Literal["fay-herriot", "ebp"] = Field(
        description="fay-herriot: an area-level model of direct survey estimates; ebp: the nested-error unit model "
        "of household incomes with empirical best prediction of FGT(0, 1, 2) for every household of the population")
    areas: DataInput | None = Field(None, title="Areas",
                                    description="The areas of the map (their id is the area code), with "
                                    "geometries and area covariates; needed by fay-herriot")
    area_key: str | None = Field(None, max_length=200, title="Area code property",
                                 description="Property of the areas with their code; default: the feature id")
    sample: DataInput | None = Field(None, title="Survey sample",
                                     description="The survey's households (restricted data, e.g. "
                                     "/collections/survey-households/items?survey=…): area code, income, design "
                                     "weight and unit covariates")
    sample_area: str = Field("village_code", max_length=200, title="Area of a sampled household",
                             description="Property of the sample with the code of the household's area")
    income: str = Field("income_pc", title="Income property",
                        max_length=200, description="Property of the sample with the income or "
                        "consumption per person")
    weight: str | None = Field("weight", title="Weight property",
                               max_length=200, description="Property of the sample with the design weight "
                               "(null: equal weights)")
    psu: str | None = Field(None, max_length=200, title="Primary sampling unit",
                            description="Property of the sample with its primary sampling unit (variances of the "
                            "direct estimates by PSU); default: each household")
    direct: str | None = Field(None, title="Direct estimate property",
                               max_length=200, description="fay-herriot without a sample: property of the "
                               "areas with the direct estimate (null: not sampled)")
    variance: str | None = Field(None, title="Variance property",
                                 max_length=200, description="… and with its sampling variance")
    effective_n: str | None = Field(None, max_length=200, title="Effective sample size",
                                    description="… and with the effective sample size (arcsine transformation)")
    indicator: Literal["fgt0", "fgt1", "fgt2", "mean"] = Field("fgt0", title="Indicator",
        description="fay-herriot from a sample: what the direct estimates estimate (FGT0 headcount ratio, "
        "FGT1 poverty gap, FGT2 severity, mean income)")
    poverty_line: float | None = Field(None, gt=0, description="Income per person per year below which a person is "
                                       "poor; default: the region's poverty line when the population is its registry")
    covariates: list[str] = Field([], title="Area covariates",
                                  max_length=50, description="Area covariates: properties of the areas, of the "
                                  "registry's villages (released telecom indicators) or of covariate_sources")
    unit_covariates: list[str] = Field([], max_length=50, title="Household covariates",
                                       description="ebp: properties every sampled and every population household has "
                                       "(numbers or true/false)")
    covariate_sources: list[CovariateSource] = Field([], title="Covariate sources",
                                                     max_length=10, description="Further area covariates "
                                                     "joined by code from other inputs")
    population: HouseholdsInput | None = Field(None, description="ebp: the households of the population with the "
                                               "unit covariates — the registry of a region, or a table or features")
    population_area: str = Field("village_code", max_length=200, title="Area of a population household",
                                 description="Property of the population households with their area code")
    population_weight: str | None = Field("size", title="Persons property",
                                          max_length=200, description="Property of the population "
                                          "households counting persons (FGT per person); null: per household")
    aggregate_to: str | None = Field(None, title="Larger unit",
                                     max_length=200, description="ebp: property of the population households "
                                     "with a larger unit (e.g. township_code): a second layer with the estimates "
                                     "and bootstrap MSE per larger unit")
    fit: Literal["REML", "ML"] = Field("REML", title="Fitting method",
                                       description="Fitting method of the variance components")
    transform: Literal["none", "log", "arcsine", "box-cox"] = Field("none", title="Transformation",
        description="fay-herriot: none, log or arcsine (proportions); ebp: none, log or box-cox of incomes")
    mse: Literal["analytic", "bootstrap"] = Field(
        "analytic", title="MSE method", description="fay-herriot: Prasad–Rao (analytic) or the parametric "
        "bootstrap; ebp always uses the bootstrap")
    bootstrap: int = Field(100, ge=0, le=1000, title="Bootstrap replicates",
                           description="Replicates of the parametric bootstrap (ebp: 0 gives no MSE)")
    benchmark: Benchmark | None = Field(None, title="Benchmark", description="fay-herriot: benchmark to known figures")
    max_cv: float | None = Field(None, gt=0, le=10, title="Largest reliable CV", description="An estimate whose "
                                 "coefficient of variation exceeds this is flagged unreliable; default: the "
                                 "service's setting (TPA_PROCESSES_SAE_MAX_CV, 0.20)")
    seed: int = Field(12345, ge=0, le=2**32 - 1, description="Seed of the bootstrap (reproducible results)")

    @model_validator(mode="after")
    def _consistent(self) -> SAEInputs:
        if self.model == "fay-herriot":
            if self.areas is None:
                raise ValueError("fay-herriot needs the areas")
            if self.sample is None and (self.direct is None or self.variance is None):
                raise ValueError("fay-herriot needs a sample, or the direct and variance properties of the areas")
            if self.transform == "box-cox":
                raise ValueError("box-cox is a transformation of the unit model (ebp); fay-herriot takes none, log "
                                 "or arcsine")
            if self.transform == "arcsine" and self.bootstrap < 10:
                raise ValueError("the arcsine transformation's MSE comes from the bootstrap: give bootstrap ≥ 10")
            if self.mse == "bootstrap" and self.bootstrap < 10:
                raise ValueError("mse 'bootstrap' needs bootstrap ≥ 10")
            if self.unit_covariates or self.population is not None or self.aggregate_to is not None:
                raise ValueError("unit_covariates, population and aggregate_to belong to the unit model (ebp)")
        else:
            if self.sample is None or self.population is None:
                raise ValueError("ebp needs the sample and the population")
            if self.transform == "arcsine":
                raise ValueError("arcsine is for proportions (fay-herriot); ebp takes none, log or box-cox")
            if self.benchmark is not None:
                raise ValueError("benchmarking is offered for fay-herriot")
            if not self.unit_covariates and not self.covariates and not self.covariate_sources:
                raise ValueError("ebp needs covariates (unit_covariates and/or area covariates)")
        return self


SAE_STYLE = st.graduated("estimate", "Estimate", st.YLORRD)


class SmallAreaEstimation(Process):
    id = "small-area-estimation"
    method = ("small-area-estimation",)
    example_summary = "Village poverty map of the demo from its survey (EBP, log incomes; analyst key)"
    example = {
        "model": "ebp",
        "sample": {"href": "/collections/survey-households/items?survey=demo-survey-2020"},
        "population": {"region": "tieling-demo"},
        "areas": {"href": "/collections/villages/items"},
        "unit_covariates": ["size", "ordinary_labour", "skilled_labour", "ill_members", "arable_mu", "coop_member"],
        "covariates": ["km_to_township", "broadband"],
        "poverty_line": 6000,
        "transform": "log",
        "bootstrap": 50,
        "aggregate_to": "township_code",
    }
    title = "Small-area estimation of poverty (Fay–Herriot, EBP)"
    description = ("Poverty figures per area from a household survey too small to give them directly, with "
                   "covariates from the census, telecom aggregates or the registry: the Fay–Herriot area-level model "
                   "(REML/ML, EBLUP, Prasad–Rao or bootstrap MSE, log or arcsine transformation, benchmarking) or the "
                   "nested-error unit model with empirical best prediction of FGT(0, 1, 2) and parametric bootstrap "
                   "MSE (log or Box-Cox). Every estimate has its MSE, CV and a flag when the CV is above the "
                   "reliability threshold; the model's coefficients, variance components and residual checks are in "
                   "the results.")
    keywords = ("small area estimation", "Fay-Herriot", "EBP", "poverty map", "FGT")
    Inputs = SAEInputs
    outputs = {
        "areas": OutputSpec("Estimates per area", "Estimate (EBP: the headcount ratio FGT0, with FGT1, FGT2 and the "
                            "mean income), MSE, CV, 95 % interval, reliability flag, direct estimate and sample size",
                            LAYER_SCHEMA, layer=True, style=SAE_STYLE),
        "aggregates": OutputSpec("Estimates per larger unit", "ebp with aggregate_to: the same per larger unit "
                                 "(null otherwise)", LAYER_SCHEMA, layer=True, style=SAE_STYLE),
        "model": OutputSpec("Model", "Coefficients, variance components, fit, transformation and residual checks",
                            OBJECT),
        "summary": OutputSpec("Summary", "Areas estimated, in the sample, reliable; the CV threshold; mean CVs of the "
                              "model and of the direct estimates", OBJECT),
        "provenance": PROVENANCE,
    }
    data_inputs = ("areas", "sample", "population")

    def data_values(self, inputs: Any) -> list[tuple[str, tuple[str | int, ...], Any]]:
        return [*super().data_values(inputs), *((f"covariates_{i}", ("covariate_sources", i, "data"), src.data)
                                                 for i, src in enumerate(inputs.covariate_sources))]

    async def authorize(self, app: Any, inputs: Any, role: Any) -> None:
        if inputs.max_cv is None:  # the service's threshold, recorded with the job
            inputs.max_cv = app.state.settings.processes.sae_max_cv

    def run(self, inputs: SAEInputs, data: dict[str, Units], threads: int) -> Outcome:
        rng = np.random.default_rng(inputs.seed)
        max_cv = inputs.max_cv if inputs.max_cv is not None else 0.20
        try:
            with np.errstate(all="ignore"):
                if inputs.model == "fay-herriot":
                    return _fay_herriot(inputs, data, rng, max_cv)
                return _ebp(inputs, data, rng, max_cv)
        except np.linalg.LinAlgError:  # scipy's is the same class
            raise AnalysisError("The model cannot be fitted to these data: its equations are numerically singular "
                                "(values of extreme size, or covariates that are constant or collinear).") from None


# ------------------------------------------------------------------------------------------------- helpers
def _get(props: dict[str, Any], path: str) -> Any:
    value: Any = props
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _num(v: Any) -> float | None:
    """A covariate's value: numbers (or text reading as one) and true/false as 1/0; None if not finite."""
    x = float(v) if isinstance(v, bool) else _number(v)
    return x if x is not None and np.isfinite(x) else None


def _floats(units: Units, path: str) -> np.ndarray:
    """A property of every feature as floats, NaN where it is missing or not a number."""
    return np.array([np.nan if (v := _num(_get(p, path))) is None else v for p in units.props], dtype=float)


def _codes(units: Units, key: str | None) -> list[str]:
    if key is None:
        return list(units.ids)
    out = []
    for i, p in enumerate(units.props):
        v = _get(p, key)
        if v is None:
            raise AnalysisError(f"{units.name}: feature {units.ids[i]!r} has no '{key}'.")
        out.append(str(v))
    return out


def _area_covariates(inputs: SAEInputs, data: dict[str, Units], codes: list[str],
                     rows: dict[str, dict[str, Any]]) -> tuple[np.ndarray, list[str]]:
    """The area covariates of each code: from the areas' own properties (``rows``), the registry's villages
    (telecom indicators) and the covariate sources, joined by code. Every covariate must be known for every area."""
    table: dict[str, dict[str, Any]] = {c: dict(rows.get(c, {})) for c in codes}
    groups = data.get("groups")
    if groups is not None:
        by_id = dict(zip(groups.ids, groups.props, strict=True))
        for c in codes:
            for k, v in (by_id.get(c) or {}).items():
                table[c].setdefault(k, v)
    names = list(inputs.covariates)
    for i, src in enumerate(inputs.covariate_sources):
        u = data.get(f"covariates_{i}")
        if u is None:
            raise AnalysisError(f"covariate_sources[{i}]: no data.")
        keyed = dict(zip(_codes(u, src.key), u.props, strict=True))
        for c in codes:
            match = c if src.on is None else _get(table[c], src.on)
            found = keyed.get(str(match)) if match is not None else None
            for prop, name in src.properties.items():
                table[c][name] = None if found is None else _get(found, prop)
        names += sorted(n for n in src.properties.values() if n not in names)
    X = np.empty((len(codes), len(names)))
    for j, name in enumerate(names):
        missing = []
        for i, c in enumerate(codes):
            v = _num(_get(table[c], name))
            if v is None:
                missing.append(c)
            X[i, j] = np.nan if v is None else v
        if missing:
            raise AnalysisError(f"The area covariate '{name}' is missing (or not a number) for {len(missing)} "
                                f"area(s), e.g. {', '.join(missing[:5])}.")
    return X, names


def _unit_matrix(units: Units, names: list[str]) -> np.ndarray:
    X = np.empty((len(units), len(names)))
    for j, name in enumerate(names):
        for i, p in enumerate(units.props):
            v = _num(_get(p, name))
            if v is None:
                raise AnalysisError(f"{units.name}: {units.ids[i]!r} has no numeric '{name}'.")
            X[i, j] = v
    return X


def _poverty_line(inputs: SAEInputs, data: dict[str, Units]) -> float:
    if inputs.poverty_line is not None:
        return inputs.poverty_line
    region = data.get("region")
    if region is not None and region.props and region.props[0].get("poverty_line") is not None:
        return float(region.props[0]["poverty_line"])
    raise AnalysisError("Give the poverty_line (the population is not a region's registry).")


def _sample(inputs: SAEInputs, data: dict[str, Units], index: dict[str, int]) -> tuple[Units, np.ndarray,
                                                                                         np.ndarray, np.ndarray,
                                                                                         np.ndarray | None]:
    """The sample's area index, incomes, weights and PSUs; households of areas outside the map are refused."""
    s = data["sample"]
    codes = _codes(s, inputs.sample_area)
    unknown = sorted({c for c in codes if c not in index})
    if unknown:
        raise AnalysisError(f"sample: {len(unknown)} area code(s) are not among the areas estimated, e.g. "
                            f"{', '.join(unknown[:5])}.")
    area = np.array([index[c] for c in codes], dtype=np.int64)
    y = s.column(inputs.income)
    w = s.column(inputs.weight) if inputs.weight else np.ones(len(s))
    if np.any(w <= 0):
        raise AnalysisError("sample: design weights must be above 0.")
    psu = np.array(s.text(inputs.psu), dtype=object) if inputs.psu else None
    return s, area, y, w, psu


def _fgt(y: np.ndarray, z: float, alpha: int) -> np.ndarray:
    return sae.poverty_gap(y, z) ** alpha if alpha else (y < z).astype(float)


def _flags(est: np.ndarray, mse: np.ndarray, max_cv: float) -> tuple[np.ndarray, np.ndarray]:
    c = sae.cv(est, mse)
    return c, np.where(np.isfinite(c), c <= max_cv, False)


def _interval(est: np.ndarray, mse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    half = 1.959963984540054 * np.sqrt(mse)
    return est - half, est + half


# ------------------------------------------------------------------------------------------------- Fay–Herriot
def _fay_herriot(inputs: SAEInputs, data: dict[str, Units], rng: np.random.Generator, max_cv: float) -> Outcome:
    areas = data["areas"]
    codes = _codes(areas, inputs.area_key)
    if len(set(codes)) != len(codes):
        raise AnalysisError("areas: area codes are not unique.")
    index = {c: i for i, c in enumerate(codes)}
    m = len(codes)
    n = np.zeros(m)
    neff = None
    if inputs.sample is not None:
        s, area, y_s, w, psu = _sample(inputs, data, index)
        if inputs.indicator == "mean":
            value = y_s
        else:
            value = _fgt(y_s, _poverty_line(inputs, data), int(inputs.indicator[-1]))
        d = sae.direct_estimates(value, w, area, m, psu, proportion=inputs.indicator == "fgt0")
        direct, variance, n, neff = d.estimate, d.variance, d.n, d.effective_n
    else:
        direct, variance = _floats(areas, inputs.direct or ""), _floats(areas, inputs.variance or "")
        if inputs.effective_n:
            neff = _floats(areas, inputs.effective_n)
    Xc, names = _area_covariates(inputs, data, codes, dict(zip(codes, areas.props, strict=True)))
    X = np.column_stack([np.ones(m), Xc])
    y, psi = sae.fh_to_model_scale(direct, variance, inputs.transform, neff)  # type: ignore[arg-type]
    inside = np.isfinite(y) & np.isfinite(psi) & (psi > 0)
    y, psi = np.where(inside, y, np.nan), np.where(inside, psi, np.nan)
    fit = sae.fit_fay_herriot(y[inside], X[inside], psi[inside], inputs.fit)
    pr = sae.predict_fay_herriot(fit, y, X, psi)
    est, mse = sae.fh_back(pr.estimate, pr.mse, pr.g1, inputs.transform)  # type: ignore[arg-type]
    bench = _benchmark(inputs, areas, codes) if inputs.benchmark is not None else None
    if bench is not None:
        est = sae.benchmark(est, *bench)
    method = "prasad-rao"
    if inputs.mse == "bootstrap" or inputs.transform == "arcsine":
        mse = sae.bootstrap_fay_herriot(fit, y, X, psi, inputs.transform, inputs.bootstrap,  # type: ignore[arg-type]
                                        rng, bench)
        method = "bootstrap"
    c, reliable = _flags(est, mse, max_cv)
    lo, hi = _interval(est, mse)
    direct_cv = sae.cv(direct, variance)
    cols: dict[str, tuple[str, Any]] = {
        "estimate": ("double precision", as_floats(est)), "mse": ("double precision", as_floats(mse)),
        "cv": ("double precision", as_floats(c)), "lower": ("double precision", as_floats(lo)),
        "upper": ("double precision", as_floats(hi)), "reliable": ("boolean", [bool(r) for r in reliable]),
        "direct": ("double precision", as_floats(direct)), "direct_variance": ("double precision",
                                                                               as_floats(variance)),
        "direct_cv": ("double precision", as_floats(direct_cv)), "sample_n": ("integer", [int(v) for v in n]),
        "in_model": ("boolean", [bool(v) for v in inside]), "shrinkage": ("double precision", as_floats(pr.gamma)),
    }
    what = inputs.indicator if inputs.sample is not None else "the direct estimates"
    layer = LayerOut("Small-area estimates (Fay–Herriot)", f"EBLUP of {what} per area, {inputs.transform} "
                     f"transformation, {method} MSE", codes,
                     geoms_of(areas, codes, codes), cols)
    resid = (y[inside] - X[inside] @ fit.beta) / np.sqrt(fit.sigma2_u + psi[inside])
    u_hat = pr.gamma[inside] * (y[inside] - X[inside] @ fit.beta)
    k = X.shape[1] + 1
    model = {
        "model": "fay-herriot", "fit": inputs.fit, "transform": inputs.transform, "mse_method": method,
        "coefficients": sae.coefficient_table(["intercept", *names], fit.beta, fit.cov_beta),
        "variance_components": {"sigma2_u": fit.sigma2_u, "var_sigma2_u": fit.var_sigma2_u},
        "loglik": fit.loglik, "aic": -2 * fit.loglik + 2 * k, "bic": -2 * fit.loglik + k * np.log(int(inside.sum())),
        "iterations": fit.iterations, "converged": fit.converged,
        "residuals": {"standardised": sae.normality(resid, rng), "random_effects": sae.normality(u_hat, rng)},
        "benchmark": inputs.benchmark.model_dump() if inputs.benchmark else None,
        "note": "MSE of the benchmarked estimates" if bench is not None and method == "bootstrap" else
        ("MSE of the model's estimates before benchmarking" if bench is not None else None),
    }
    return Outcome({"model": model, "summary": _summary(m, inside, reliable, c, direct_cv, max_cv)},
                   {"areas": layer})


def _benchmark(inputs: SAEInputs, areas: Units, codes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                             str]:
    b = inputs.benchmark
    assert b is not None
    share = areas.column(b.share) if b.share else np.ones(len(codes))
    if np.any(share < 0) or share.sum() <= 0:
        raise AnalysisError("benchmark: shares must be ≥ 0 and not all 0.")
    if b.totals is None:
        return share, np.zeros(len(codes), dtype=np.int64), np.array([b.value], dtype=float), b.method
    keys = [None if (v := _get(p, b.by or "")) is None else str(v) for p in areas.props]
    missing = sorted({k for k in keys if k is None or k not in b.totals}, key=str)
    if missing:
        raise AnalysisError(f"benchmark: no total for the group(s) {', '.join(map(str, missing[:5]))}.")
    order = sorted(b.totals)
    pos = {k: i for i, k in enumerate(order)}
    return share, np.array([pos[k] for k in keys]), np.array([b.totals[k] for k in order]), b.method


def _summary(m: int, inside: np.ndarray, reliable: np.ndarray, c: np.ndarray, direct_cv: np.ndarray,
             max_cv: float) -> dict[str, Any]:
    dcv = direct_cv[np.isfinite(direct_cv)]
    return {"areas": m, "areas_in_sample": int(inside.sum()), "reliable": int(reliable.sum()),
            "unreliable": int(m - reliable.sum()), "max_cv": max_cv,
            "median_cv": float(np.nanmedian(c)) if np.isfinite(c).any() else None,
            "median_direct_cv": float(np.median(dcv)) if len(dcv) else None,
            "direct_reliable": int((dcv <= max_cv).sum())}


# ------------------------------------------------------------------------------------------------- EBP
def _ebp(inputs: SAEInputs, data: dict[str, Units], rng: np.random.Generator, max_cv: float) -> Outcome:
    pop_units = data.get("population") or data.get("households")
    if pop_units is None:
        raise AnalysisError("population: no households.")
    pop_codes = _codes(pop_units, inputs.population_area)
    codes = sorted(set(pop_codes))
    index = {c: i for i, c in enumerate(codes)}
    D = len(codes)
    s, area_s, y, w_s, psu = _sample(inputs, data, index)
    area_p = np.array([index[c] for c in pop_codes], dtype=np.int64)
    z = _poverty_line(inputs, data)
    areas = data.get("areas")
    rows: dict[str, dict[str, Any]] = {}
    area_keys = None
    if areas is not None:
        area_keys = _codes(areas, inputs.area_key)
        rows = dict(zip(area_keys, areas.props, strict=True))
    if inputs.covariates or inputs.covariate_sources:
        Xa, a_names = _area_covariates(inputs, data, codes, rows)
    else:
        Xa, a_names = np.zeros((D, 0)), []
    Xs = np.column_stack([np.ones(len(s)), _unit_matrix(s, inputs.unit_covariates), Xa[area_s]])
    Xp = np.column_stack([np.ones(len(pop_units)), _unit_matrix(pop_units, inputs.unit_covariates), Xa[area_p]])
    names = ["intercept", *inputs.unit_covariates, *a_names]
    fit, tr = sae.fit_transformed(y, Xs, area_s, D, inputs.transform, inputs.fit)
    pw = pop_units.column(inputs.population_weight) if inputs.population_weight else np.ones(len(pop_units))
    pop = sae.Population(Xp, area_p, pw, D)
    est = sae.ebp(fit, tr, pop, z)
    group_codes: list[str] | None = None
    gidx = None
    if inputs.aggregate_to:
        g_of_unit = _codes(pop_units, inputs.aggregate_to)
        g_of_area: dict[int, str] = {}
        for a, g in zip(area_p, g_of_unit, strict=True):
            if g_of_area.setdefault(int(a), g) != g:
                raise AnalysisError(f"aggregate_to: the area {codes[int(a)]} lies in more than one "
                                    f"'{inputs.aggregate_to}'.")
        group_codes = sorted(set(g_of_area.values()))
        gpos = {g: i for i, g in enumerate(group_codes)}
        gidx = np.array([gpos[g_of_area[i]] for i in range(D)])
    mse: dict[str, np.ndarray] | None = None
    gmse: dict[str, np.ndarray] | None = None
    if inputs.bootstrap:
        mse, gmse = sae.bootstrap_ebp(fit, tr, Xs, area_s, pop, z, inputs.bootstrap, rng, groups=gidx)
    direct = sae.direct_estimates((y < z).astype(float), w_s, area_s, D, psu, proportion=True)
    layer = _ebp_layer("Small-area estimates (EBP)", "FGT0, FGT1, FGT2 and mean income per area with bootstrap MSE",
                       codes, geoms_of(areas, codes, area_keys), est, mse, max_cv,
                       direct, pop.total)
    layers = {"areas": layer}
    if group_codes is not None and gidx is not None:
        gtot = np.bincount(gidx, pop.total, len(group_codes))
        gest = {k: sae.aggregate(v, pop.total, gidx, len(group_codes)) for k, v in est.items()}
        gd = sae.direct_estimates((y < z).astype(float), w_s, gidx[area_s], len(group_codes), psu, proportion=True)
        layers["aggregates"] = _ebp_layer(
            f"Small-area estimates per {inputs.aggregate_to} (EBP)", "The areas' estimates added up per larger "
            "unit, with their own bootstrap MSE", group_codes, geoms_of(data.get("groups"), group_codes),
            gest, gmse, max_cv, gd, gtot)
    resid_unit = tr.forward(y) - Xs @ fit.beta - fit.u_hat[area_s]
    sampled = np.bincount(area_s, minlength=D) > 0
    total_var = fit.sigma2_u + fit.sigma2_e
    var_fixed = float(np.var(Xs @ fit.beta))
    model = {
        "model": "ebp (nested-error unit model)", "fit": inputs.fit,
        "transform": {"type": tr.kind, "lambda": tr.lam if tr.kind == "box-cox" else None, "shift": tr.shift},
        "poverty_line": z, "mse_method": "bootstrap" if inputs.bootstrap else None, "bootstrap": inputs.bootstrap,
        "coefficients": sae.coefficient_table(names, fit.beta, fit.cov_beta),
        "variance_components": {"sigma2_u": fit.sigma2_u, "sigma2_e": fit.sigma2_e,
                                "icc": fit.sigma2_u / total_var if total_var > 0 else None},
        "r2_marginal": var_fixed / (var_fixed + total_var), "r2_conditional": (var_fixed + fit.sigma2_u) /
        (var_fixed + total_var), "loglik": fit.loglik, "sample_households": len(s),
        "population_households": len(pop_units),
        "residuals": {"unit": sae.normality(resid_unit, rng), "random_effects": sae.normality(fit.u_hat[sampled],
                                                                                               rng)},
    }
    reliable = np.asarray(layer.columns["reliable"][1], dtype=bool)
    c0 = np.asarray(layer.columns["cv"][1], dtype=float)
    return Outcome({"model": model, "summary": _summary(D, sampled, reliable, c0, sae.cv(direct.estimate,
                                                                                          direct.variance), max_cv)},
                   layers)


def _ebp_layer(title: str, description: str, codes: list[str], geoms: np.ndarray | None, est: dict[str, np.ndarray],
               mse: dict[str, np.ndarray] | None, max_cv: float, direct: sae.Direct, persons: np.ndarray) -> LayerOut:
    fgt0_mse = mse["fgt0"] if mse else np.full(len(codes), np.nan)
    # the headline, as in the Fay–Herriot layer (styles, portals): the headcount ratio and its MSE
    cols: dict[str, tuple[str, Any]] = {"estimate": ("double precision", as_floats(est["fgt0"])),
                                        "mse": ("double precision", as_floats(fgt0_mse))}
    for k in sae.INDICATORS:
        cols[k] = ("double precision", as_floats(est[k]))
        cols[f"mse_{k}"] = ("double precision", as_floats(mse[k]) if mse else [None] * len(codes))
    c, reliable = _flags(est["fgt0"], fgt0_mse, max_cv)
    lo, hi = _interval(est["fgt0"], fgt0_mse)
    cols |= {"cv": ("double precision", as_floats(c)), "lower": ("double precision", as_floats(np.clip(lo, 0, 1))),
             "upper": ("double precision", as_floats(np.clip(hi, 0, 1))),
             "reliable": ("boolean", [bool(r) for r in reliable]),
             "direct": ("double precision", as_floats(direct.estimate)),
             "direct_cv": ("double precision", as_floats(sae.cv(direct.estimate, direct.variance))),
             "sample_n": ("integer", [int(v) for v in direct.n]),
             "population": ("double precision", as_floats(persons))}
    return LayerOut(title, description, codes, geoms, cols)


SAE: tuple[Process, ...] = (SmallAreaEstimation(),)
