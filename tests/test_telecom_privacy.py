"""Minimum-count suppression, secondary roll-up to H3 parents, and admin units that cannot be differenced."""

from __future__ import annotations

import random

import duckdb
import h3
import pytest

from app.telecom.privacy import admin_with_residual_check, parent_int, suppress_rollup

K = 15
ix = h3.str_to_int


def test_parent_masks_agree_with_h3():
    rng = random.Random(3)
    for _ in range(500):
        c = h3.latlng_to_cell(rng.uniform(-80, 80), rng.uniform(-180, 180), 9)
        for r in range(10):
            assert parent_int(ix(c), r) == ix(h3.cell_to_parent(c, r))


@pytest.fixture
def layout():
    """Cells c1..c3 share the res-7 parent P7; c4 sits alone under Q7; P7 and Q7 share the res-6 parent."""
    c1 = h3.latlng_to_cell(42.29, 123.84, 8)
    p7 = h3.cell_to_parent(c1, 7)
    c2, c3 = [c for c in sorted(h3.cell_to_children(p7, 8)) if c != c1][:2]
    p6 = h3.cell_to_parent(p7, 6)
    q7 = next(c for c in sorted(h3.cell_to_children(p6, 7)) if c != p7)
    c4 = sorted(h3.cell_to_children(q7, 8))[0]
    far = h3.latlng_to_cell(41.0, 120.0, 8)  # two more cells elsewhere: both published
    far2 = next(c for c in sorted(h3.grid_disk(far, 1)) if c != far)
    return {"c1": c1, "c2": c2, "c3": c3, "c4": c4, "p7": p7, "q7": q7, "p6": p6, "far": far, "far2": far2}


def _con(homes: dict[str, int], admin: dict[str, str]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    rows, dev = [], 0
    for c, n in homes.items():
        for _ in range(n):
            dev += 1
            rows.append((dev, ix(c)))
    con.execute("CREATE TABLE home (dev BIGINT, home_cell BIGINT)")
    con.executemany("INSERT INTO home VALUES (?, ?)", rows)
    con.execute("CREATE TABLE cell_admin (cell BIGINT, admin_code VARCHAR)")
    if admin:
        con.executemany("INSERT INTO cell_admin VALUES (?, ?)", [(ix(c), a) for c, a in admin.items()])
    return con


def _materialize(con):
    return lambda name, q: con.execute(f"CREATE OR REPLACE TABLE {name} AS {q}")


def test_suppressed_cells_roll_up_and_never_include_published_children(layout):
    # checks the method: methodology#telecom-suppression
    L = layout
    homes = {L["c1"]: 20, L["c2"]: 10, L["c3"]: 8, L["c4"]: 5, L["far"]: 30, L["far2"]: 16}
    con = _con(homes, {})
    suppress_rollup(_materialize(con), membership="SELECT dev, home_cell AS cell FROM home", keys=(), k=K,
                    base_res=8, floor_res=6, out="res_pub")
    rows = con.execute("SELECT cell, h3_res, n_devices FROM res_pub").fetchall()
    got = {(h3.int_to_str(c), r, n) for c, r, n in rows}
    # c1 (20), far (30), far2 (16) as they are; c2 + c3 = 18 under P7 (not 38: c1 is not in it); c4's 5 devices
    # are still alone at res 7 and res 6 (P7's devices left at res 7), so they are never published.
    assert got == {(L["c1"], 8, 20), (L["far"], 8, 30), (L["far2"], 8, 16), (L["p7"], 7, 18)}
    assert all(n > K for *_x, n in got)


def test_statistics_follow_the_same_rule(layout):
    # checks the method: methodology#telecom-suppression
    L = layout
    con = _con({L["c1"]: 20, L["c2"]: 10, L["c3"]: 8}, {})
    con.execute("CREATE TABLE gyr AS SELECT dev, CAST(dev AS DOUBLE) AS rg_km FROM home")
    suppress_rollup(_materialize(con), membership="SELECT h.dev, h.home_cell AS cell, g.rg_km AS x FROM home h "
                    "JOIN gyr g ON g.dev = h.dev", keys=(), k=K, base_res=8, floor_res=6,
                    stat="quantile_cont(x, 0.5)", out="rg_pub")
    rows = {h3.int_to_str(c): (r, n, s) for c, r, n, s in con.execute("SELECT cell, h3_res, n_devices, stat "
                                                                       "FROM rg_pub").fetchall()}
    assert rows[L["c1"]] == (8, 20, 10.5)  # devices 1..20
    assert rows[L["p7"]] == (7, 18, 29.5)  # devices 21..38: only the suppressed children


def test_keys_and_od_pairs_roll_up_together(layout):
    # checks the method: methodology#telecom-suppression
    L = layout
    con = duckdb.connect()
    con.execute("CREATE TABLE od (dev BIGINT, cell BIGINT, dest BIGINT)")
    rows = [(i, ix(L["c2"]), ix(L["far"])) for i in range(9)] + [(100 + i, ix(L["c3"]), ix(L["far"])) for i in range(9)]
    rows += [(200 + i, ix(L["c1"]), ix(L["far"])) for i in range(16)]
    con.executemany("INSERT INTO od VALUES (?, ?, ?)", rows)
    suppress_rollup(_materialize(con), membership="SELECT dev, cell, dest FROM od", keys=("dest",), k=K,
                    base_res=8, floor_res=6, cell_keys=("dest",), out="od_pub")
    got = {(h3.int_to_str(c), r, h3.int_to_str(d), n)
           for c, r, d, n in con.execute("SELECT cell, h3_res, dest, n_devices FROM od_pub").fetchall()}
    assert got == {(L["c1"], 8, L["far"], 16), (L["p7"], 7, h3.cell_to_parent(L["far"], 7), 18)}


def test_admin_units_cannot_reveal_suppressed_cells_by_subtraction(layout):
    # checks the method: methodology#telecom-admin
    L = layout
    homes = {L["c1"]: 20, L["c2"]: 10, L["c3"]: 8, L["c4"]: 5, L["far"]: 30, L["far2"]: 16}
    # A = c1 + c2 (P7 straddles A and B); B = c3 + c4; C = far + far2 (both published)
    admin = {L["c1"]: "A", L["c2"]: "A", L["c3"]: "B", L["c4"]: "B", L["far"]: "C", L["far2"]: "C"}
    con = _con(homes, admin)
    m = _materialize(con)
    membership = "SELECT dev, home_cell AS cell FROM home"
    suppress_rollup(m, membership=membership, keys=(), k=K, base_res=8, floor_res=6, out="res_pub")
    counts = ("SELECT a.admin_code, COUNT(DISTINCT h.dev) AS n_devices FROM home h JOIN cell_admin a "
              "ON a.cell = h.home_cell GROUP BY a.admin_code")
    admin_with_residual_check(m, membership=membership, admin_counts=counts, published="res_pub", k=K,
                              out="adm_pub")
    got = {a: (n, s) for a, n, s in con.execute("SELECT admin_code, n_devices, suppressed FROM adm_pub").fetchall()}
    # A = 30 but A − c1 = 10 would reveal c2: suppressed. B = 13 ≤ k: suppressed. C = 46 = 30 + 16: residual 0.
    assert got == {"A": (None, True), "B": (None, True), "C": (46, False)}

    # Brute force: no published admin count minus any published cell rows wholly inside it leaves 1..k.
    published = con.execute("SELECT cell, h3_res, n_devices FROM res_pub").fetchall()
    for code, (n, suppressed) in got.items():
        if suppressed:
            continue
        inside = [pn for pc, pr, pn in published
                  if {admin[c] for c in homes if parent_int(ix(c), pr) == pc} == {code}]
        residual = n - sum(inside)
        assert residual == 0 or residual > K
