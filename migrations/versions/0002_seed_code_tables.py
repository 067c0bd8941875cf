"""Seed indicator definitions (DOMAIN §4, §6) and the default cause → need → project map (DOMAIN §2.4).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28

The map is expert judgement [K] and configurable: regions add their own rows (region_id set),
which replace the default rows (region_id NULL) for the causes they mention.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SOURCE_MAP = "DOMAIN.md §2.4 default (expert judgement)"

# cause: (living needs, production needs with notes, project types)
CAUSE_MAP: dict[str, tuple[list[str], list[tuple[str, str | None]], list[tuple[str, str | None]]]] = {
    "illness": (["L_HEALTH"], [("P_JOB", "carers"), ("P_CAPITAL", None)],
                [("health", None), ("social_security", None), ("asset_income", None)]),
    "disability": (["L_HEALTH", "L_HOUSE"], [("P_JOB", "sheltered"), ("P_SKILL", None)],
                   [("health", None), ("social_security", None), ("employment", "workshop"),
                    ("asset_income", None), ("photovoltaic", None)]),
    "schooling": (["L_EDU"], [("P_CAPITAL", None)], [("education", None), ("microfinance", None)]),
    "disaster": (["L_HOUSE", "L_WATER", "L_FOOD"], [("P_RESIL", None), ("P_CAPITAL", None)],
                 [("housing_renovation", None), ("relocation", None), ("infrastructure_road", None),
                  ("infrastructure_water", None), ("infrastructure_power_broadband", None),
                  ("social_security", None)]),
    "lack_land": (["L_FOOD"], [("P_LAND", None), ("P_JOB", None)],
                  [("land_transfer", None), ("employment", None), ("industry", None), ("relocation", None)]),
    "lack_water": (["L_WATER"], [("P_IRRIG", None)], [("infrastructure_water", None)]),
    "lack_skills": ([], [("P_SKILL", None), ("P_INDUSTRY", None)],
                    [("skills_training", None), ("industry", None), ("employment", None)]),
    "lack_labour": (["L_FOOD", "L_HEALTH"], [],
                    [("social_security", None), ("asset_income", "dividend income"), ("photovoltaic", None)]),
    "lack_capital": ([], [("P_CAPITAL", None), ("P_INDUSTRY", None)],
                     [("microfinance", None), ("industry", None), ("asset_income", None)]),
    "poor_transport": (["L_HEALTH", "L_EDU"], [("P_ROAD", None), ("P_MARKET", None)],
                       [("infrastructure_road", None), ("relocation", None), ("ecommerce", None)]),
    "lack_motivation": ([], [("P_MOTIV", None), ("P_SKILL", None)],
                        [("skills_training", None), ("employment", None), ("industry", None)]),
    # 其它 other: assessed case by case, so no default rows.
}

H = "household"
V = "village"
U = "unit"
SRC6 = "DOMAIN.md §6.1"
SRC4 = "DOMAIN.md §4 (FlowKit definitions)"
# code, system, direction, unit, level, source, formula, description
INDICATORS = [
    ("need_food", "living", "-", "0-1", H, SRC6, "[net_income_pc < poverty_line] OR food_insecure",
     "L_FOOD: income below the region's poverty line or self-reported food insecurity"),
    ("need_cloth", "living", "-", "0-1", H, SRC6, "[clothing_insecure]", "L_CLOTH: survey flag"),
    ("need_edu", "living", "-", "0-1", H, SRC6,
     "[any member aged 6-15 with in_school = none and health = healthy]",
     "L_EDU: compulsory-school-age dropout not for health reasons"),
    ("need_health", "living", "-", "0-1", H, SRC6,
     "min(1, 0.5*[any chronic/major illness] + 0.3*[any uninsured] + 0.2*clip((clinic_min - 30)/30, 0, 1))",
     "L_HEALTH: illness, missing insurance, distance to a clinic"),
    ("need_house", "living", "-", "0-1", H, SRC6, "{A:0, B:0, C:0.7, D:1}[house_safety_grade]",
     "L_HOUSE: unsafe housing (grades C and D)"),
    ("need_water", "living", "-", "0-1", H, SRC6, "[NOT water_safe OR water_difficulty]",
     "L_WATER: unsafe drinking water or difficult access"),
    ("living_need_index", "living", "-", "0-1", H, SRC6,
     "max(need_food, need_cloth, need_edu, need_health, need_house, need_water)",
     "LN: binding-constraint rule (mean is the configurable alternative for ranking)"),
    ("labour_share", "production", "+", "share", H, SRC6, "(ordinary + skilled members) / size",
     "Share of household members who are full labour"),
    ("skilled_share", "production", "+", "share", H, SRC6, "skilled members / size",
     "Share of skilled labour (P_SKILL = 1 - this)"),
    ("arable_pc", "production", "+", "mu/person", H, SRC6, "arable_mu / size", "Arable land per person"),
    ("coop_credit", "production", "+", "0-1", H, SRC6, "([coop_member] + [microcredit]) / 2",
     "Participation in cooperatives and microcredit"),
    ("road_quality", "production", "+", "0-1", H, SRC6, "{dirt:0, gravel:1/3, cement:2/3, asphalt:1}[access_road]",
     "Quality of the access road"),
    ("resident_population", "context", "+", "persons", U, SRC4,
     "subscribers with home in unit (>= 10 distinct nights, 20:00-07:00) * census pop / county subscribers",
     "Resident (night) population"),
    ("day_population", "context", "+", "persons", U, SRC4, "as resident_population, 09:00-17:00 on weekdays",
     "Day-time population"),
    ("working_age_ratio", "production", "+", "share", V, SRC4,
     "resident subscribers aged 16-59 / resident subscribers", "Resident working-age ratio"),
    ("out_migration", "production", "-", "share", V, SRC4,
     "share of 16-59 subscribers with long-term home in unit whose current-month home is outside the county",
     "Working-age out-migration"),
    ("radius_of_gyration", "production", "+", "km", V, SRC4,
     "mean over residents of sqrt(mean_i d(r_i, r_mean)^2), geodesic", "Market reach (mobility)"),
    ("service_visit_share", "production", "+", "share", V, SRC4,
     "share of residents with >= 1 event within 500 m of a hospital/school/market per month",
     "Use of services"),
    ("smartphone_share", "production", "+", "share", V, SRC4, "smartphone handsets / resident subscribers",
     "Smartphone share (wealth proxy)"),
]


def _map_rows() -> list[dict]:
    rows: list[dict] = []
    for cause, (living, production, projects) in CAUSE_MAP.items():
        for need in living:
            rows.append({"cause": cause, "need": need, "project_type": None, "note": None})
        for need, note in production:
            rows.append({"cause": cause, "need": need, "project_type": None, "note": note})
        for ptype, note in projects:
            rows.append({"cause": cause, "need": None, "project_type": ptype, "note": note})
    for r in rows:
        r["source"] = SOURCE_MAP
        r["region_id"] = None
    return rows


def upgrade() -> None:
    indicator_def = sa.table(
        "indicator_def",
        *(sa.column(c) for c in ("code", "system", "direction", "unit", "level", "source", "formula", "description")),
    )
    keys = ("code", "system", "direction", "unit", "level", "source", "formula", "description")
    op.bulk_insert(indicator_def, [dict(zip(keys, row, strict=True)) for row in INDICATORS])
    # Enum-typed columns need explicit casts when inserted through plain SQL parameters.
    op.get_bind().execute(
        sa.text(
            "INSERT INTO cause_need_project (region_id, cause, need, project_type, note, source) "
            "VALUES (:region_id, CAST(:cause AS cause), CAST(:need AS need_code), "
            "CAST(:project_type AS project_type), :note, :source)"
        ),
        _map_rows(),
    )


def downgrade() -> None:
    op.execute("DELETE FROM cause_need_project WHERE region_id IS NULL")
    op.execute("DELETE FROM indicator_def")
