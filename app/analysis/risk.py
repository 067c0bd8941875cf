"""Early warning of return to poverty (docs/methodology.md#return-risk): a gradient-boosted tree model of the
chance that a household out of poverty in registry year *t* (exited, or monitored) is in poverty in year *t + 1*,
trained on the registry's history and validated by time.

Pure functions on pandas frames; the service reads the records (``app.services.risk``). The model is LightGBM's
gradient boosting (scikit-learn's interface): it takes missing values and categories as they are and gives exact
per-household contributions (TreeSHAP, ``pred_contrib``) so a cadre sees which values raised a household's risk.
The metrics are scikit-learn's (ROC AUC, Brier score); the calibration table is ours (deciles of the predicted
probability with their counts, which ``sklearn.calibration.calibration_curve`` does not return).

No leakage by construction: the features of a pair (t, t + 1) are read from the record of year t (and the previous
income the record carries); the outcome is the only thing read from t + 1; a model "trained until T" sees pairs
with t + 1 ≤ T only (``tests/test_risk.py`` perturbs every later record and gets the same model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from app.analysis.spatial import AnalysisError

WATCHED = ("exited", "monitored")  # the households the model scores: out of poverty, registered
POOR = ("poor", "returned")
GRADES = {"A": 0.0, "B": 1.0, "C": 2.0, "D": 3.0}
CATEGORICAL = ("hh_type", "main_cause")
# (feature, description): what the model reads of a record of year t (members: as registered on its first day)
FEATURES: tuple[tuple[str, str], ...] = (
    ("monitored", "The household is under monitoring (1) rather than exited (0)"),
    ("years_since_exit", "Years since the household exited (missing if it never did)"),
    ("size", "Members"),
    ("hh_type", "Household type"),
    ("main_cause", "Main cause of poverty when identified"),
    ("income_ratio", "Net income per person over the poverty line"),
    ("income_change", "Relative change of net income per person since the previous record"),
    ("wage_share", "Wages in gross income"),
    ("business_share", "Business income in gross income"),
    ("property_share", "Property income in gross income"),
    ("transfer_share", "Transfers in gross income"),
    ("rigid_expense_share", "Medical, schooling and disaster costs over net income"),
    ("medical_ratio", "Medical costs per person over the poverty line"),
    ("education_ratio", "Schooling costs per person over the poverty line"),
    ("disaster_ratio", "Disaster losses per person over the poverty line"),
    ("safety_grade", "House safety grade (A 0 … D 3)"),
    ("water_safe", "Safe drinking water"),
    ("water_difficulty", "Difficult water access"),
    ("arable_mu", "Arable land (mu)"),
    ("irrigated_share", "Irrigated share of arable land"),
    ("coop_member", "Cooperative member"),
    ("microcredit", "Has obtained microcredit"),
    ("food_insecure", "Food insecure"),
    ("family_doctor", "Contracted family doctor"),
    ("labour", "Members able to work, on the record's first day"),
    ("ill", "Members with a chronic or major illness, on the record's first day"),
    ("disabled", "Members with a disability, on the record's first day"),
    ("rules_fired", "Monitoring rules that fired on the record"),
)
FEATURE_NAMES = tuple(f for f, _ in FEATURES)
LIBRARIES = ("lightgbm", "scikit-learn", "numpy", "pandas")  # stored with every model


def _ratio(a: pd.Series, b: pd.Series) -> pd.Series:
    return a / b.where(b != 0)


def features(records: pd.DataFrame) -> pd.DataFrame:
    """The model's inputs from registry records (one row per household and year, columns as in
    ``household-records`` plus the member counts and ``rules_fired``), in the order of ``FEATURES``."""
    r = records
    num = {c: pd.to_numeric(r[c], errors="coerce").astype(float) for c in (
        "net_income_pc", "poverty_line", "income_wage", "income_business", "income_property", "income_transfer",
        "expense_medical", "expense_education", "loss_disaster", "size", "arable_mu", "irrigated_mu",
        "year", "year_exited", "income_change", "rigid_expense_share")}
    gross = num["income_wage"] + num["income_business"] + num["income_property"] + num["income_transfer"]
    per_line = num["size"] * num["poverty_line"]
    out = pd.DataFrame({
        "monitored": (r["status"] == "monitored").astype(float),
        "years_since_exit": num["year"] - num["year_exited"],
        "size": num["size"],
        "hh_type": r["hh_type"].astype("string"),
        "main_cause": r["main_cause"].astype("string"),
        "income_ratio": _ratio(num["net_income_pc"], num["poverty_line"]),
        "income_change": num["income_change"],
        "wage_share": _ratio(num["income_wage"], gross),
        "business_share": _ratio(num["income_business"], gross),
        "property_share": _ratio(num["income_property"], gross),
        "transfer_share": _ratio(num["income_transfer"], gross),
        "rigid_expense_share": num["rigid_expense_share"],
        "medical_ratio": _ratio(num["expense_medical"], per_line),
        "education_ratio": _ratio(num["expense_education"], per_line),
        "disaster_ratio": _ratio(num["loss_disaster"], per_line),
        "safety_grade": r["house_safety_grade"].map(GRADES).astype(float),
        "water_safe": _flag(r["water_safe"]),
        "water_difficulty": _flag(r["water_difficulty"]),
        "arable_mu": num["arable_mu"],
        "irrigated_share": _ratio(num["irrigated_mu"], num["arable_mu"]),
        "coop_member": _flag(r["coop_member"]),
        "microcredit": _flag(r["microcredit"]),
        "food_insecure": _flag(r["food_insecure"]),
        "family_doctor": _flag(r["family_doctor"]),
        "labour": pd.to_numeric(r["labour"], errors="coerce").astype(float),
        "ill": pd.to_numeric(r["ill"], errors="coerce").astype(float),
        "disabled": pd.to_numeric(r["disabled"], errors="coerce").astype(float),
        "rules_fired": pd.to_numeric(r["rules_fired"], errors="coerce").astype(float),
    }, index=r.index)
    for c in CATEGORICAL:
        out[c] = out[c].astype("category")
    return out[list(FEATURE_NAMES)]


def _flag(s: pd.Series) -> pd.Series:
    return s.map({True: 1.0, False: 0.0}).astype(float)


def outcome(records: pd.DataFrame) -> pd.Series:
    """In poverty in a record: registered poor or returned, or net income per person below the poverty line."""
    inc = pd.to_numeric(records["net_income_pc"], errors="coerce").astype(float)
    line = pd.to_numeric(records["poverty_line"], errors="coerce").astype(float)
    return (records["status"].isin(POOR) | (inc < line)).astype(int)


def pairs(records: pd.DataFrame) -> pd.DataFrame:
    """One row per watched household record of year t whose household has a record in t + 1: the record's
    columns, ``outcome`` (in poverty in t + 1) and ``outcome_year`` (t + 1)."""
    need = {"hh_id", "year", "status"}
    if not need <= set(records.columns):
        raise AnalysisError(f"records lack {', '.join(sorted(need - set(records.columns)))}")
    nxt = pd.DataFrame({"hh_id": records["hh_id"], "year": records["year"] - 1, "outcome": outcome(records)})
    watched = records[records["status"].isin(WATCHED)]
    out = watched.merge(nxt, on=["hh_id", "year"], how="inner", validate="one_to_one")
    out["outcome_year"] = out["year"] + 1
    return out.reset_index(drop=True)


@dataclass
class ModelSpec:
    n_estimators: int = 100
    learning_rate: float = 0.1
    num_leaves: int = 15
    min_child_samples: int = 40
    seed: int = 12345
    # shallow trees: the exact contributions (TreeSHAP) cost the square of the depth per leaf. On the demo, 300
    # leaf-wise trees of 31 leaves without a depth limit (15 deep) took 24 s to explain 25,000 households; 100 trees
    # of depth 4 validate as well (pooled AUC 0.977 against 0.976) and explain them in about a second
    max_depth: int = 4

    def params(self, threads: int) -> dict[str, Any]:
        return {"n_estimators": self.n_estimators, "learning_rate": self.learning_rate, "num_leaves": self.num_leaves,
                "min_child_samples": self.min_child_samples, "max_depth": self.max_depth,
                "random_state": self.seed, "deterministic": True,
                "force_row_wise": True, "n_jobs": max(1, threads), "verbose": -1, "subsample": 1.0,
                "colsample_bytree": 1.0}


def fit(train: pd.DataFrame, spec: ModelSpec, threads: int) -> Any:
    """A LightGBM classifier fitted on the pairs ``train`` (features of t, outcome of t + 1)."""
    import lightgbm as lgb

    y = train["outcome"].to_numpy()
    if len(y) == 0 or y.min() == y.max():
        raise AnalysisError("the training years hold no household that fell into poverty (or none that did not): "
                            "there is nothing to learn from; train on more years")
    model = lgb.LGBMClassifier(**spec.params(threads))
    model.fit(features(train), y)
    return model


def predict(model: Any, recs: pd.DataFrame) -> np.ndarray:
    return model.predict_proba(features(recs))[:, 1]


def contributions(model: Any, recs: pd.DataFrame, top: int = 3) -> tuple[np.ndarray, list[list[dict[str, Any]]]]:
    """Per record: the contributions of every feature to the log-odds (TreeSHAP; they and the bias add up to the
    model's raw score), and the ``top`` features that raised the risk most, with their values."""
    X = features(recs)
    contrib = model.booster_.predict(X, pred_contrib=True, num_threads=model.n_jobs)
    per = contrib[:, :-1]
    order = np.argsort(-per, axis=1)[:, :top]
    columns = [X[c].astype(object).where(X[c].notna(), None).to_numpy() for c in FEATURE_NAMES]
    tops = []
    for i in range(len(X)):
        row = []
        for j in order[i]:
            if per[i, j] <= 0:
                break
            v = columns[j][i]
            row.append({"feature": FEATURE_NAMES[j], "value": v if v is None or isinstance(v, str) else
                        round(float(v), 4), "contribution": round(float(per[i, j]), 4)})
        tops.append(row)
    return contrib, tops


def metrics(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import brier_score_loss, roc_auc_score

    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=float)
    out: dict[str, Any] = {"n": int(len(y)), "positives": int(y.sum()),
                           "prevalence": float(y.mean()) if len(y) else None, "auc": None,
                           "brier": float(brier_score_loss(y, p)) if len(y) else None}
    if 0 < y.sum() < len(y):
        out["auc"] = float(roc_auc_score(y, p))
    return out


def calibration(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    """Deciles of the predicted probability (fewer where values tie): count, mean predicted, observed rate."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    if not len(p):
        return []
    edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
    out = []
    for b in range(max(len(edges) - 1, 1)):
        m = which == b
        if m.any():
            out.append({"from": float(edges[b]), "to": float(edges[min(b + 1, len(edges) - 1)]), "n": int(m.sum()),
                        "predicted": float(p[m].mean()), "observed": float(y[m].mean())})
    return out


def rules_baseline(train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    """The rules-only baseline: the outcome rate, in the training pairs, of the households with the same number
    of monitoring rules fired (0, 1, 2, …), with the overall rate where a number was never seen."""
    rate = train.groupby("rules_fired")["outcome"].mean()
    overall = float(train["outcome"].mean())
    return test["rules_fired"].map(rate).fillna(overall).to_numpy(dtype=float)


@dataclass
class Validation:
    by_year: list[dict[str, Any]] = field(default_factory=list)
    pooled: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    calibration: list[dict[str, Any]] = field(default_factory=list)
    by_county: list[dict[str, Any]] = field(default_factory=list)


def validate(pp: pd.DataFrame, test_years: list[int], spec: ModelSpec, threads: int,
             group: str | None = "county") -> Validation:
    """Time-split validation: for each outcome year v in ``test_years``, a model trained on the pairs whose
    outcome year is < v predicts the pairs whose outcome year is v (never shuffled). Metrics per year, pooled over
    the years, against the rules baseline, the calibration table and the metrics per ``group``."""
    ys, ps, bs, groups = [], [], [], []
    out = Validation()
    for v in test_years:
        train = pp[pp["outcome_year"] < v]
        test = pp[pp["outcome_year"] == v]
        if test.empty:
            raise AnalysisError(f"no household pairs with an outcome in {v}")
        model = fit(train, spec, threads)
        p = predict(model, test)
        b = rules_baseline(train, test)
        y = test["outcome"].to_numpy()
        out.by_year.append({"outcome_year": v, "trained_until": v - 1, **metrics(y, p),
                            "baseline": metrics(y, b)})
        ys.append(y)
        ps.append(p)
        bs.append(b)
        if group:
            groups.append(test[group].to_numpy())
    y, p, b = np.concatenate(ys), np.concatenate(ps), np.concatenate(bs)
    out.pooled, out.baseline, out.calibration = metrics(y, p), metrics(y, b), calibration(y, p)
    if group:
        g = np.concatenate(groups)
        for key in sorted({str(x) for x in g}):
            m = g.astype(str) == key
            out.by_county.append({group: key, **metrics(y[m], p[m]), "baseline_auc": metrics(y[m], b[m])["auc"]})
    return out


def village_figures(villages: np.ndarray, probability: np.ndarray, threshold: float,
                    min_households: int) -> list[dict[str, Any]]:
    """Per village: the households at high risk (probability ≥ ``threshold``) and the mean probability, published
    only where they reveal no small group: nothing for a village with fewer than ``min_households`` scored
    households; no count of high-risk households below the minimum, or leaving fewer than the minimum not at high
    risk (the scored households are the village's exited and monitored ones, which other layers publish)."""
    df = pd.DataFrame({"v": np.asarray(villages, dtype=object), "p": np.asarray(probability, dtype=float)})
    df["h"] = df["p"] >= threshold
    out = []
    for v, g in df.groupby("v", sort=True):
        n, h = len(g), int(g["h"].sum())
        small = n < min_households
        high = None if small or 0 < h < min_households or 0 < n - h < min_households else h
        out.append({"village_code": str(v), "high_risk": high, "suppressed": small or high is None,
                    "mean_probability": None if small else round(float(g["p"].mean()), 6)})
    return out
