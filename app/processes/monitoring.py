"""Dynamic monitoring as a process: ``monitoring-screen`` screens a region's registry records of one year with its
monitoring rules (``app.services.monitoring``, the same code as ``tpa monitoring run``) and writes the alerts to the
restricted collection ``alerts``. It works on the service's tables, so the job worker runs it itself
(``Process.in_database``) rather than in an analysis child on resolved data.

Who may run it: writing a region's alerts is an administrator's act (administrators also move alerts through their
lifecycle); analysts may run it with ``dry_run`` to see what a screening would raise. The job row keeps who ran it
and when; the alerts keep when they were last found (``screened_at``).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.auth import SIGN_IN
from app.errors import Forbidden, Unauthorized
from app.models.codes import Role, allowed
from app.processes.base import PROVENANCE, Outcome, OutputSpec, Process, Strict

COUNTS = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}


class ScreenInputs(Strict):
    region: str = Field(min_length=1, max_length=200, description="Region whose registry is screened (id or name)")
    period: int = Field(ge=1949, le=2200, description="Registry year screened, e.g. 2024")
    dry_run: bool = Field(False, description="Count what the rules would raise and write nothing (analysts may "
                          "run this; writing alerts needs an administrator's key)")


class MonitoringScreen(Process):
    id = "monitoring-screen"
    title = "Monitoring screening (early warning of return to poverty)"
    description = (
        "Screens the registry records of a region and year with the region's monitoring rules (CQL2 expressions "
        "over the collection household-records: unstable after exit, at the edge of poverty, in sudden severe "
        "difficulty) and writes one alert per household flagged to the restricted collection 'alerts', with the "
        "rules that fired and the values that triggered them. Alerts found again keep their status and note; "
        "alerts still 'new' that no rule finds any more are removed. Administrators; analysts with dry_run.")
    keywords = ("monitoring", "return to poverty", "early warning", "alerts")
    Inputs = ScreenInputs
    data_inputs = ()
    in_database = True
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

    async def authorize(self, app: Any, inputs: Any, role: Role | None) -> None:
        from app.processes.inputs import region_id

        needed = Role.analyst if inputs.dry_run else Role.admin
        if not allowed(role, needed):
            if role is None:
                raise Unauthorized(f"Screening the registry needs an analyst (dry run) or administrator key: "
                                   f"{SIGN_IN}")
            raise Forbidden(f"The role '{role.value}' may not "
                            + ("screen the registry." if needed == Role.analyst else
                               "write alerts; run it with dry_run, or ask an administrator."))
        inputs.region = await region_id(app, "region", inputs.region)

    async def run_in_database(self, app: Any, inputs: Any, role: Role | None, actor: str | None) -> Outcome:
        from app.services.monitoring import screen

        found = await screen(app.state.engine, app.state.settings.security, inputs.region, inputs.period,
                             write=not inputs.dry_run)
        region = inputs.region.replace("'", "''")
        flt = f"region = '{region}' AND year = {inputs.period}"
        return Outcome({
            "records": found.records, "alerts": len(found.alerts), "by_category": found.by_category,
            "by_rule": found.by_rule, "written": found.written or None,
            "items": {"path": "/collections/alerts/items", "params": {"filter": flt, "filter-lang": "cql2-text"}}})


MONITORING = (MonitoringScreen(),)
