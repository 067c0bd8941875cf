"""Dynamic monitoring as a process: ``monitoring-screen`` screens a region's registry records of one year with its
monitoring rules (``app.services.monitoring``, the same code as ``tpa monitoring run``) and writes the alerts to the
restricted collection ``alerts``. It works on the service's tables, so the job worker runs it itself
(``Process.in_database``) rather than in an analysis child on resolved data.

Who may run it: writing a region's alerts is an administrator's act (administrators also move alerts through their
lifecycle); analysts may run it with ``dry_run`` to see what a screening would raise. The job row keeps who ran it
and when; the alerts keep when they were last found (``screened_at``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import Field

from app.auth import SIGN_IN
from app.errors import Forbidden, Unauthorized
from app.models.codes import Role, allowed
from app.processes.base import PROVENANCE, DatabaseJob, Outcome, OutputSpec, Process, Strict

COUNTS = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}


class ScreenInputs(Strict):
    region: str = Field(min_length=1, max_length=200, description="Region whose registry is screened (id or name)")
    period: int = Field(ge=1949, le=2200, description="Registry year screened, e.g. 2024")
    dry_run: bool = Field(False, description="Count what the rules would raise and write nothing (analysts may "
                          "run this; writing alerts needs an administrator's key)")


class RegionWork(Process):
    """A process that writes a region's tables: an administrator's act; analysts may run a dry run (nothing
    written). The region is given by its id or display name."""

    in_database = True
    data_inputs = ()
    acting: ClassVar[str]  # what it does, for the refusal ("Screening the registry")

    async def authorize(self, app: Any, inputs: Any, role: Role | None) -> None:
        from app.processes.inputs import region_id

        if not allowed(role, Role.analyst if inputs.dry_run else Role.admin):
            if role is None:
                raise Unauthorized(f"{self.acting} needs an analyst (dry run) or administrator key: {SIGN_IN}")
            raise Forbidden(f"The role '{role.value}' may not write what {self.acting.lower()} stores; run it with "
                            "dry_run, or ask an administrator.")
        inputs.region = await region_id(app, "region", inputs.region)


class MonitoringScreen(RegionWork):
    id = "monitoring-screen"
    title = "Monitoring screening (early warning of return to poverty)"
    description = (
        "Screens the registry records of a region and year with the region's monitoring rules (CQL2 expressions "
        "over the collection household-records: unstable after exit, at the edge of poverty, in sudden severe "
        "difficulty) and writes one alert per household flagged to the restricted collection 'alerts', with the "
        "rules that fired and the values that triggered them. Alerts found again keep their status and note; "
        "alerts still 'new' that no rule finds any more are removed. Administrators; analysts with dry_run.")
    keywords = ("monitoring", "return to poverty", "early warning", "alerts")
    acting = "Screening the registry"
    Inputs = ScreenInputs
    method = ("monitoring",)
    outputs = {
        "records": OutputSpec("Records screened", "Household records of the year", {"type": "integer"}),
        "alerts": OutputSpec("Alerts", "Households flagged by at least one rule", {"type": "integer"}),
        "by_category": OutputSpec("Alerts by category", "Households flagged per monitoring category", COUNTS),
        "by_rule": OutputSpec("Alerts by rule", "Households for which each rule fired", COUNTS),
        "written": OutputSpec("Written", "Alerts created, found again (status and note kept) and removed; null "
                              "for a dry run", {"type": ["object", "null"], "properties": {
                                  "created": {"type": "integer"}, "updated": {"type": "integer"},
                                  "removed": {"type": "integer"}}}),
        "items": OutputSpec("The year's alerts", "The region's alerts of the year in the collection 'alerts' "
                            "(restricted)", {"type": "object"}, link=True),
        "provenance": PROVENANCE,
    }
    example = {"region": "tieling-demo", "period": 2024, "dry_run": True}
    example_summary = "What the default rules would raise in the demo region's 2024 records (nothing written)"


    async def run_in_database(self, job: DatabaseJob, inputs: Any) -> Outcome:
        from app.services.monitoring import screen

        found = await screen(job.app.state.engine, job.app.state.settings.security, inputs.region, inputs.period,
                             write=not inputs.dry_run)
        region = inputs.region.replace("'", "''")
        flt = f"region = '{region}' AND year = {inputs.period}"
        return Outcome({
            "records": found.records, "alerts": len(found.alerts), "by_category": found.by_category,
            "by_rule": found.by_rule, "written": found.written or None,
            "items": {"path": "/collections/alerts/items", "params": {"filter": flt, "filter-lang": "cql2-text"}}})


class RiskInputs(Strict):
    region: str = Field(min_length=1, max_length=200, description="Region whose registry the model learns from "
                        "(id or name)")
    until: int | None = Field(None, ge=1949, le=2200, description="Last registry year read: the model learns from "
                              "the years up to it and scores its households for the next year (default: the "
                              "registry's latest year). Later records are not read.")
    validate_years: int = Field(3, ge=1, le=20, description="The last years used to validate by time: for each, a "
                                "model trained on the years before it predicts it")
    threshold: float = Field(0.1, gt=0, lt=1, description="Probability from which a household counts as at high "
                             "risk (the village figures and the high_risk flag)")
    trees: int = Field(100, ge=10, le=5000, description="Boosting rounds (trees)")
    learning_rate: float = Field(0.1, gt=0, le=1, description="Shrinkage of each tree")
    depth: int = Field(4, ge=1, le=12, description="Depth of each tree at most (explaining costs its square)")
    leaves: int = Field(15, ge=2, le=1024, description="Leaves per tree at most")
    min_leaf: int = Field(40, ge=1, le=100_000, description="Household-years per leaf at least")
    seed: int = Field(12345, ge=0, le=2**31 - 1, description="Seed of the model (reproducible results)")
    dry_run: bool = Field(False, description="Train and validate, store nothing (analysts may run this; storing the "
                          "model and its predictions needs an administrator's key)")


LINK = {"type": ["object", "null"]}
ROWS = {"type": "array", "items": {"type": "object"}}


class ReturnRisk(RegionWork):
    id = "return-risk"
    title = "Return-risk early warning (gradient-boosted model)"
    description = (
        "Trains a gradient-boosted tree model (LightGBM) on a region's registry over time to estimate, for each "
        "household out of poverty (exited or monitored), the probability of being in poverty the next year "
        "(registered poor or returned, or income below the poverty line). Validated by time (trained on the years "
        "before each test year, never shuffled): AUC, Brier score and a calibration table against the monitoring "
        "rules alone, overall and per county. Stores the model with its training period, features, metrics and "
        "library versions; the households' probabilities with the factors that raised them are the restricted "
        "collection 'risk-predictions', village figures the public 'village-risk'. Administrators; analysts with "
        "dry_run.")
    keywords = ("monitoring", "return to poverty", "early warning", "machine learning")
    acting = "Training a return-risk model"
    Inputs = RiskInputs
    method = ("return-risk",)
    outputs = {
        "model_id": OutputSpec("Model", "Id of the stored model (null for a dry run)", {"type": ["string", "null"]}),
        "trained": OutputSpec("Training", "Years learned from, year scored, household-years", {"type": "object"}),
        "validation": OutputSpec("Validation by time", "AUC, Brier score and counts pooled over the test years and "
                                 "per year, for the model and the rules-only baseline", {"type": "object"}),
        "calibration": OutputSpec("Calibration", "Deciles of the predicted probability in the test years: "
                                  "households, mean predicted, observed rate", ROWS),
        "by_county": OutputSpec("Validation per county", "The pooled metrics per county", ROWS),
        "importance": OutputSpec("Importance", "Features by their mean absolute contribution to the log-odds of the "
                                 "scored households, largest first", ROWS),
        "scored": OutputSpec("Scored", "Households scored, at high risk, and the threshold", {"type": "object"}),
        "predictions": OutputSpec("Household predictions", "The model's predictions in the collection "
                                  "'risk-predictions' (restricted)", LINK, link=True),
        "villages": OutputSpec("Village figures", "The region's village figures in 'village-risk' (public)", LINK,
                               link=True),
        "provenance": PROVENANCE,
    }
    example = {"region": "tieling-demo", "until": 2021, "dry_run": True, "validate_years": 1, "trees": 50}
    example_summary = ("Train and validate on the demo region's registry up to 2021 (one test year, 50 trees), "
                       "store nothing")


    async def run_in_database(self, job: DatabaseJob, inputs: Any) -> Outcome:
        from app.analysis.risk import LIBRARIES
        from app.processes.publish import library_versions
        from app.services import risk as svc

        app = job.app
        records = await svc.load_records(app.state.engine, app.state.settings.security, inputs.region,
                                         inputs.until)
        until = inputs.until if inputs.until is not None else max(svc.years_of(records), default=0)
        test_years = svc.check_years(records, inputs.region, until, inputs.validate_years)
        out = await job.analyse({"records": records, "until": until, "test_years": test_years})
        v = out.values
        model_id = None
        if not inputs.dry_run:
            model_id = await svc.store(app.state.engine, region=inputs.region, model={
                **v["trained"], "features": v["features"], "params": v["params"], "threshold": inputs.threshold,
                "metrics": {k: v[k] for k in ("validation", "calibration", "by_county", "importance")},
                "libraries": library_versions(LIBRARIES), "model": v["model"]},
                predictions=v["predictions"], villages=v["villages"], owner=job.actor, run_id=job.run_id)
        region = inputs.region.replace("'", "''")
        return Outcome({
            "model_id": model_id, "trained": v["trained"], "validation": v["validation"],
            "calibration": v["calibration"], "by_county": v["by_county"], "importance": v["importance"],
            "scored": v["scored"],
            "predictions": model_id and {"path": "/collections/risk-predictions/items", "params": {
                "filter": f"model_id = '{model_id}'", "filter-lang": "cql2-text"}},
            "villages": model_id and {"path": "/collections/village-risk/items", "params": {
                "filter": f"region = '{region}'", "filter-lang": "cql2-text"}}})

    def run(self, inputs: Any, data: dict[str, Any], threads: int) -> Outcome:
        """The pure part, in the analysis child: validation by time, the final model, the scores."""
        from app.analysis import risk
        from app.layers.catalog import MIN_HOUSEHOLDS

        records, until, test_years = data["records"], data["until"], data["test_years"]
        spec = risk.ModelSpec(inputs.trees, inputs.learning_rate, inputs.leaves, inputs.min_leaf, inputs.seed,
                              inputs.depth)
        pairs = risk.pairs(records)
        checked = risk.validate(pairs, test_years, spec, threads)
        model = risk.fit(pairs, spec, threads)
        scored = records[(records["year"] == until) & records["status"].isin(risk.WATCHED)].reset_index(drop=True)
        p = risk.predict(model, scored) if len(scored) else np.zeros(0)
        contrib, tops = risk.contributions(model, scored) if len(scored) else (np.zeros((0, 1)), [])
        high = int((p >= inputs.threshold).sum())
        importance = sorted(({"feature": f, "mean_abs_contribution": round(float(x), 6)} for f, x in zip(
            risk.FEATURE_NAMES, np.abs(contrib[:, :-1]).mean(axis=0) if len(scored) else [], strict=False)),
            key=lambda d: -d["mean_abs_contribution"])
        return Outcome({
            "trained": {"trained_from": int(pairs["year"].min()), "trained_until": int(until),
                        "scored_year": int(until), "household_years": int(len(pairs)),
                        "positives": int(pairs["outcome"].sum())},
            "validation": {"pooled": checked.pooled, "baseline": checked.baseline, "by_year": checked.by_year},
            "calibration": checked.calibration, "by_county": checked.by_county,
            "importance": importance,
            "scored": {"year": int(until), "for_year": int(until) + 1, "households": int(len(scored)),
                       "high_risk": high, "threshold": inputs.threshold},
            "features": [{"name": n, "description": d} for n, d in risk.FEATURES],
            "params": spec.params(1) | {"n_jobs": None},
            "model": model.booster_.model_to_string(),
            "predictions": pd.DataFrame({"hh_id": scored["hh_id"], "probability": p,
                                         "rules_fired": scored["rules_fired"], "factors": tops}),
            "villages": risk.village_figures(scored["village_code"].to_numpy(), p, inputs.threshold,
                                             MIN_HOUSEHOLDS),
        })


MONITORING = (MonitoringScreen(), ReturnRisk())
