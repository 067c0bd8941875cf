"""The demo registry over time: one household's yearly records from 2016 to 2025.

A registry record is what the annual review (动态调整) leaves in force for a year: the record of year *Y* holds
the income of year *Y − 1* and the status decided on it. A household identified in year *I* is poor from then on
until a review declares it exited; from 2016 to 2019 an exited household whose income falls back under the line may
be recorded as returned (返贫); from 2021 the monitoring system (防止返贫动态监测) takes in exited households at risk
(status ``monitored``) and lets them go when the risk is gone.

Every calibration figure is named here and cited in ``app/data/tieling/PROVENANCE.md`` (section "Registry over
time"); ``tests/test_demo_panel.py`` checks the generated panel against them. The figures are national: the demo
does not claim to reproduce Tieling's own registry.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

FIRST_YEAR = 2016
LAST_YEAR = 2025
YEARS = tuple(range(FIRST_YEAR, LAST_YEAR + 1))

# China's rural poverty line in current prices (CNY per person per year) [NBS]; 2020: the CNY 4,000 used for the
# last exits; from 2021 the demo region's line stays at CNY 4,000 and monitoring uses 1.5 times it.
POVERTY_LINE = {2013: 2736.0, 2014: 2800.0, 2015: 2855.0, 2016: 2952.0, 2017: 2952.0, 2018: 2995.0,
                2019: 3218.0, 2020: 4000.0}
MONITORING_LINE_FACTOR = 1.5
# Rural poor population at year end, millions [NBS statistical communiqués]: the share of the poor leaving
# poverty each year is 1 − P(t)/P(t−1); every remaining household exits in 2020.
POOR_MILLIONS = {2013: 82.49, 2014: 70.17, 2015: 55.75, 2016: 43.35, 2017: 30.46, 2018: 16.60, 2019: 5.51,
                 2020: 0.0}
EXIT_HAZARD = {y: 1.0 - POOR_MILLIONS[y] / POOR_MILLIONS[y - 1] for y in range(2014, 2021)}
# Returned to poverty, millions [State Council Leading Group Office of Poverty Alleviation, as reported]:
# 2016 0.684, 2017 0.208, 2018 0.058, 2019 0.005; as a share of those who had exited since 2014.
RETURNED_MILLIONS = {2016: 0.684, 2017: 0.208, 2018: 0.058, 2019: 0.005}
EXITED_MILLIONS = {y: POOR_MILLIONS[2013] - POOR_MILLIONS[y] for y in range(2014, 2021)}
RETURN_RATE = {y: RETURNED_MILLIONS[y] / EXITED_MILLIONS[y - 1] for y in RETURNED_MILLIONS}
# Mean per-capita net income of registered households (CNY): 3,416 in 2015 and 10,740 in 2020 [white paper
# "Poverty Alleviation: China's Experience and Contribution", 2021]; 2016-2019 interpolated geometrically;
# of people lifted out of poverty: 2021 12,550, 2022 14,342, 2023 16,396, 2024 17,522 [MARA / NRRA releases];
# 2025 extrapolated at 2024's growth.
MEAN_INCOME = {2015: 3416.0, 2020: 10740.0, 2021: 12550.0, 2022: 14342.0, 2023: 16396.0, 2024: 17522.0}
for _y in range(2016, 2020):
    MEAN_INCOME[_y] = 3416.0 * (10740.0 / 3416.0) ** ((_y - 2015) / 5)
MEAN_INCOME[2025] = MEAN_INCOME[2024] ** 2 / MEAN_INCOME[2023]
# Share of registered households with a contracted family doctor for their chronically ill members, by year
# (the 2016-2019 roll-out of 家庭医生签约 for the poor, "应签尽签") [K].
DOCTOR_COVERAGE = {2016: 0.3, 2017: 0.6, 2018: 0.8}
DOCTOR_COVERAGE_LATER = 0.92
# Yearly chances (assumptions of the demo, stated in PROVENANCE.md): shocks, and the take-up of help.
SHOCK_ILLNESS = 0.025  # + 0.02 with a chronically ill member
SHOCK_JOB = 0.03  # households with a migrant worker; 0.08 in 2020 (the pandemic)
VILLAGE_DISASTER = 0.012  # a flood or drought year of a village; each household hit with p 0.6
COOP_JOIN = 0.15  # per year in 2016-2020 for households with labour (industry projects); 0.04 later
CREDIT_TAKE = 0.12  # per year in 2016-2020 for households with labour (扶贫小额信贷; about a third of registered
# households had borrowed by 2020 [K]); 0.04 later. The registry flag records that the household has obtained it.
IRRIGATION_WORKS = 0.03  # per year: a plot gains irrigation (farmland water works)
SHOCK_SHARE = 0.065  # about the yearly share of households with a shock under the chances above
# Rigid expenditure (assumptions of the demo): a chronic illness costs CNY 1,500-4,000 a year out of pocket; a
# serious illness CNY 12,000 (log-normal), of which registered poor households paid about 10 % in 2017-2020 under
# the health-poverty policy (先诊疗后付费, 90 % covered); a student in upper-secondary, vocational or tertiary school
# CNY 3,000-12,000 a year; a disaster destroys 20-80 % of a year's income.
ILLNESS_COST = 12_000.0
MONITOR_DETECT = 0.5  # a household at risk is found by the yearly screening
MONITOR_RELEASE = 0.6  # a monitored household whose income is back above the line is released


@dataclass
class Profile:
    """What stays fixed for a household over the panel (drawn by the generator)."""

    year_identified: int
    size: int
    hh_type: str
    labour: int  # members with ordinary or skilled labour
    migrant: bool
    chronic: bool  # a member with a chronic or major illness
    disaster_prone: bool  # main or other cause disaster or lack of water
    grade0: str  # safety grade when identified
    water_safe0: bool
    water_difficulty0: bool
    irrigated_share0: float
    arable: float
    earning: float  # persistent earning factor, log-normal around 1
    students: int = 0  # members in upper-secondary, vocational or tertiary school (fees and board)


@dataclass
class YearRecord:
    year: int
    status: str
    year_exited: int | None
    income_pc: float  # of year − 1 (the review's income)
    shares: tuple[float, float, float, float]  # wage, business, property, transfer (of the total)
    expense_share: float
    grade: str
    water_safe: bool
    water_difficulty: bool
    irrigated: float
    coop: bool
    credit: bool
    doctor: bool
    food_insecure: bool
    clothing_insecure: bool
    shock: str | None  # the shock of year − 1 that the review saw
    expense_medical: float = 0.0  # rigid expenditure of year − 1 (CNY, out of pocket)
    expense_education: float = 0.0
    loss_disaster: float = 0.0


def village_disasters(rng: np.random.Generator, n_villages: int) -> np.ndarray:
    """villages × years (2014 … 2024, incomes of those years) booleans: a disaster year of the village."""
    return rng.random((n_villages, LAST_YEAR - 2014)) < VILLAGE_DISASTER


def simulate(rng: np.random.Generator, p: Profile, disasters: np.ndarray) -> list[YearRecord]:
    """The household's records for the years ``max(2016, identified) … 2025``."""
    status = "poor"
    exited: int | None = None
    grade, water_safe, water_diff = p.grade0, p.water_safe0, p.water_difficulty0
    irrigated = p.arable * p.irrigated_share0
    coop = rng.random() < 0.05
    credit = False
    doctor_u = rng.random()
    lag = 1.0  # income multiplier left by last year's shock (half recovers each year)
    out: list[YearRecord] = []
    weak = p.labour == 0 or p.hh_type == "tekun"
    exit_mod = 0.6 if weak else (1.35 if p.migrant else 1.15)
    for y in range(p.year_identified - 1, LAST_YEAR):  # incomes of y; the record of y + 1 holds them
        # ---- shocks of year y
        shock = None
        u = rng.random()
        if u < SHOCK_ILLNESS + (0.02 if p.chronic else 0.0):
            shock = "illness"
        elif p.migrant and u < SHOCK_ILLNESS + 0.02 + (0.08 if y == 2020 else SHOCK_JOB):
            shock = "job_loss"
        if 2014 <= y and disasters[y - 2014] and rng.random() < (0.8 if p.disaster_prone else 0.6):
            shock = "disaster"
        hit = {"illness": rng.uniform(0.45, 0.8), "job_loss": rng.uniform(0.55, 0.85),
               "disaster": rng.uniform(0.45, 0.8)}.get(shock or "", 1.0)
        line = POVERTY_LINE.get(max(y, 2013), POVERTY_LINE[2020])
        # ---- income of year y
        if status in ("poor", "returned"):
            # registered households' incomes sit around the line (identification looked beyond income): their
            # mean was 3,416 in 2015 against a line of 2,855
            income = line * rng.lognormal(0.05, 0.35) * hit
        else:
            income = MEAN_INCOME[max(y, 2015)] * p.earning * lag * hit * rng.lognormal(0.0, 0.12)
        lag = (1.0 + hit) / 2 if shock else lag + (1.0 - lag) / 2  # half of a loss recovers each year
        if shock == "disaster" and rng.random() < 0.3:
            grade = "C"
        elif grade in ("C", "D") and status == "exited" and rng.random() < 0.6:
            grade = "B"  # repaired
        if p.labour and rng.random() < (COOP_JOIN if y <= 2020 else 0.04):
            coop = True
        elif not p.labour and rng.random() < 0.03:
            coop = True  # dividends of asset-income projects
        if p.labour and not credit and rng.random() < (CREDIT_TAKE if 2016 <= y <= 2020 else 0.04):
            credit = True
        if p.arable > 0 and irrigated < p.arable * 0.5 and rng.random() < IRRIGATION_WORKS:
            irrigated = p.arable * rng.uniform(0.6, 1.0)
        # ---- the review at the end of year y
        if status in ("poor", "returned"):
            if y >= p.year_identified and rng.random() < min(1.0, EXIT_HAZARD.get(y, 1.0) * (
                    1.0 if y == 2020 else exit_mod)):
                status, exited = "exited", y
                income = max(income, line * rng.uniform(1.05, 1.6), MEAN_INCOME[max(y, 2015)] * p.earning * 0.6)
                if grade in ("C", "D"):
                    grade = "B" if rng.random() < 0.8 else "A"  # 住房安全有保障 before exit
                water_safe, water_diff = True, False  # 饮水安全 before exit
        elif status == "exited" and y in RETURN_RATE:
            # returns follow a shock; SHOCK_SHARE turns the national rate into a rate among the shocked
            if shock is not None and rng.random() < RETURN_RATE[y] / SHOCK_SHARE:
                status = "returned"
                income = line * rng.uniform(0.6, 0.95)
        elif status == "exited" and y >= 2020:
            at_risk = income < MONITORING_LINE_FACTOR * POVERTY_LINE[2020] or (shock is not None and hit < 0.6)
            if at_risk and rng.random() < MONITOR_DETECT:
                status = "monitored"
        elif status == "monitored":
            if income >= MONITORING_LINE_FACTOR * POVERTY_LINE[2020] and shock is None \
                    and rng.random() < MONITOR_RELEASE:
                status = "exited"
        if y + 1 < FIRST_YEAR:
            continue
        # ---- rigid expenditure of year y
        medical = rng.uniform(1_500, 4_000) if p.chronic else 0.0
        if shock == "illness":
            covered = status in ("poor", "returned") and 2017 <= y <= 2020
            medical += rng.lognormal(np.log(ILLNESS_COST), 0.6) * (0.1 if covered else 1.0)
        schooling = sum(rng.uniform(3_000, 12_000) for _ in range(p.students))
        loss = income * p.size * rng.uniform(0.2, 0.8) if shock == "disaster" else 0.0
        # ---- the record of year y + 1
        ry = y + 1
        doctor = p.chronic and doctor_u < DOCTOR_COVERAGE.get(ry, DOCTOR_COVERAGE_LATER) or (
            not p.chronic and doctor_u < 0.3 * DOCTOR_COVERAGE.get(ry, DOCTOR_COVERAGE_LATER))
        poor_now = status in ("poor", "returned")
        food = poor_now and income < 0.7 * line and rng.random() < 0.15
        transfer = (0.45 if p.hh_type != "general" else 0.15) * rng.uniform(0.7, 1.2)
        wage = min(0.8, 0.15 + 0.35 * p.migrant + 0.15 * p.labour / p.size) * rng.uniform(0.7, 1.1)
        prop = rng.uniform(0.0, 0.05) + (0.05 if coop else 0.0)
        out.append(YearRecord(
            ry, status, exited if status != "poor" else None, income, (wage, 1.0 - wage - transfer - prop, prop,
                                                                       transfer),
            float(rng.uniform(0.05, 0.25)), grade, water_safe, water_diff, irrigated, coop, credit,
            bool(doctor), bool(food), bool(food and rng.random() < 0.3), shock, medical, schooling, loss,
        ))
    return out


def income_columns(r: YearRecord, size: int) -> dict[str, Any]:
    """Income by source and production expense (CNY per year) of a record: net = wage + business + property +
    transfer − production expense."""
    total = r.income_pc * size
    expense = total * r.expense_share
    wage, business, prop, transfer = (total * s for s in r.shares)
    return {"income_wage": wage, "income_business": business + expense, "income_property": prop,
            "income_transfer": transfer, "expense_production": expense, "net_income_pc": r.income_pc}


def needs_rows(data: Any, year: int) -> list[dict[str, Any]]:
    """The generated registry of ``year`` (a ``DemoData``) as the needs rules read it: each household's record with
    its members counted (illness, insurance, labour), numbers as floats."""
    pcols = data.tables["person"].columns
    members: dict[str, Counter[str]] = defaultdict(Counter)
    for p in data.tables["person"].rows:
        person = dict(zip(pcols, p, strict=True))
        m = members[person["hh_id"]]
        m["ill_members"] += person["health"] in ("chronic", "major_illness")
        m["uninsured_members"] += not person["med_insured"]
        m["ordinary_labour"] += person["labour"] == "ordinary"
        m["skilled_labour"] += person["labour"] == "skilled"
    cols = data.tables["household"].columns
    out = []
    for r in data.tables["household"].rows + data.tables["household_history"].rows:
        row = dict(zip(cols, r, strict=True))
        if row["valid_from"].year == year:
            out.append({**{k: (float(v) if hasattr(v, "as_tuple") else v) for k, v in row.items()},
                        "id": row["hh_id"], **members[row["hh_id"]]})
    return out
