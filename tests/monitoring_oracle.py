"""An independent implementation of the default monitoring rules (docs/methodology.md#monitoring) with pandas on
the raw registry columns: the oracle of tests/test_monitoring.py and the peer of bench/monitoring.py. It shares
nothing with the service's path (CQL2 → SQL over household-records) but the database's rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

REGISTRY = "(SELECT * FROM household UNION ALL SELECT * FROM household_history)"
MEMBERS = "(SELECT * FROM person UNION ALL SELECT * FROM person_history)"
# the records of a registry year ($1) with the previous record's income and the region's lines
RECORDS_SQL = f"""
SELECT r.hh_id, r.status::text AS status, r.year_exited, r.net_income_pc::float8 AS inc, r.size,
       r.expense_medical::float8 AS med, r.expense_education::float8 AS edu, r.loss_disaster::float8 AS loss,
       p.net_income_pc::float8 AS prev, g.poverty_line::float8 AS line, g.monitoring_line_factor::float8 AS f,
       now_.n AS labour, CASE WHEN p.hh_id IS NOT NULL THEN before_.n END AS labour_prev
FROM {REGISTRY} r JOIN region g ON g.region_id = r.region_id
LEFT JOIN {REGISTRY} p ON p.hh_id = r.hh_id AND p.valid_to = r.valid_from
CROSS JOIN LATERAL (SELECT count(*) FILTER (WHERE m.labour::text IN ('ordinary', 'skilled')) AS n
                    FROM {MEMBERS} m WHERE m.hh_id = r.hh_id AND m.valid_from <= r.valid_from
                      AND coalesce(m.valid_to, 'infinity') > r.valid_from) now_
CROSS JOIN LATERAL (SELECT count(*) FILTER (WHERE m.labour::text IN ('ordinary', 'skilled')) AS n
                    FROM {MEMBERS} m WHERE m.hh_id = r.hh_id AND m.valid_from <= p.valid_from
                      AND coalesce(m.valid_to, 'infinity') > p.valid_from) before_
WHERE r.valid_from >= make_date($1, 1, 1) AND r.valid_from < make_date($1 + 1, 1, 1)"""
COLUMNS = ["hh_id", "status", "year_exited", "inc", "size", "med", "edu", "loss", "prev", "line", "f", "labour",
           "labour_prev"]


def default_rules(rows: list[Any]) -> dict[str, list[str]]:
    """Household → the default rules that fire, in the rules' order; NaN comparisons are false."""
    df = pd.DataFrame([tuple(r) for r in rows], columns=COLUMNS)
    df = df.astype({c: float for c in ("inc", "med", "edu", "loss", "prev", "line", "f", "year_exited", "labour",
                                       "labour_prev")})
    monitoring_line = df["line"] * df["f"]
    watched = df["status"].isin(["exited", "monitored"])
    income = df["inc"] * df["size"]
    share = (df["med"].fillna(0) + df["edu"].fillna(0) + df["loss"].fillna(0)) / income.where(income != 0)
    change = df["inc"] / df["prev"].where(df["prev"] != 0) - 1
    fired = {
        "income-below-line-exited": watched & df["year_exited"].notna() & (df["inc"] < monitoring_line),
        "income-below-line-edge": (df["status"] == "monitored") & df["year_exited"].isna()
        & (df["inc"] < monitoring_line),
        "rigid-expenditure": watched & (share > 0.5),
        "income-loss": watched & (change <= -0.3),
        "labour-loss": watched & (df["labour"] < df["labour_prev"]),
    }
    out: dict[str, list[str]] = {}
    for rule, mask in fired.items():
        for hid in df.loc[np.asarray(mask, dtype=bool), "hh_id"]:
            out.setdefault(hid, []).append(rule)
    return out
