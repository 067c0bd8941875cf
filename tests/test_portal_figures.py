"""Public figures per administrative unit (issue 20): totals that never give back a withheld figure.
Checks the method: methodology#admin-totals.

The attacker of the issue: every published total minus every published part, at every level and period. Here it
is played as a closure: starting from what the ``admin-poverty`` collection publishes (read over HTTP, as anyone
can), it repeatedly applies the only relations the figures obey — a unit's figure is the sum of its children's —
solving for a figure whenever a relation has one unknown left, until nothing more can be learnt. No withheld
figure may be learnt, and no published total may leave a residual of 1–4 households over its unknown parts.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Any

import pytest

from app.analysis.disclosure import Hierarchy, withhold_totals
from app.repositories.stats import ADMIN_MEASURES, MEASURES, VILLAGE_MEASURES, build_rows

K = 5


def _tree() -> Hierarchy:
    # county C → townships T1, T2, T3 → villages
    rows = [("C", None, 3), ("T1", "C", 4), ("T2", "C", 4), ("T3", "C", 4)]
    rows += [(f"V1{i}", "T1", 5) for i in range(3)] + [(f"V2{i}", "T2", 5) for i in range(2)]
    rows += [(f"V3{i}", "T3", 5) for i in range(2)]
    return Hierarchy.of(rows)


def _sums(tree: Hierarchy, leaf: dict[str, int]) -> dict[str, int]:
    out = defaultdict(int)
    for c, v in leaf.items():
        while c is not None:
            out[c] += v
            c = tree.parent[c]
    return out


def test_one_withheld_village_withholds_its_township_and_what_would_give_the_township_back():
    tree = _tree()
    values = {"poor": _sums(tree, {"V10": 3, "V11": 20, "V12": 30, "V20": 40, "V21": 50, "V30": 60, "V31": 70})}
    withheld = withhold_totals(tree, values, {"poor": 5}, {"poor": {"V10"}}, 5, K)
    # T1 minus V11 and V12 would give V10; then C minus T2 and T3 would give T1: both withheld
    assert withheld == {"T1", "C"}


def test_two_withheld_villages_of_five_or_more_together_let_the_township_be_published():
    tree = _tree()
    values = {"poor": _sums(tree, {"V10": 3, "V11": 4, "V12": 30, "V20": 40, "V21": 50, "V30": 60, "V31": 70})}
    assert withhold_totals(tree, values, {"poor": 5}, {"poor": {"V10", "V11"}}, 5, K) == set()
    # together 1 + 2 = 3 < 5: the township would reveal a group of three households
    values = {"poor": _sums(tree, {"V10": 1, "V11": 2, "V12": 30, "V20": 40, "V21": 50, "V30": 60, "V31": 70})}
    assert withhold_totals(tree, values, {"poor": 5}, {"poor": {"V10", "V11"}}, 5, K) == {"T1", "C"}


def test_a_small_total_is_withheld_for_itself_and_the_county_protects_it():
    tree = _tree()
    values = {"exited": _sums(tree, {"V10": 2, "V20": 40, "V30": 60})}
    # exited households are published down to townships only: T1 = 2 is withheld, and C − T2 − T3 would give it
    # back, so a second township is withheld with it (the smaller, T2) and the county's total stays published
    assert withhold_totals(tree, values, {"exited": 4}, {}, 5, K) == {"T1", "T2"}


def test_measures_of_a_unit_are_withheld_together():
    tree = _tree()
    values = {"poor": _sums(tree, {"V10": 2, "V11": 20, "V12": 30, "V20": 40, "V21": 50, "V30": 60, "V31": 70}),
              "exited": _sums(tree, {"V10": 9, "V20": 40, "V30": 60})}
    withheld = withhold_totals(tree, values, {"poor": 5, "exited": 4}, {"poor": {"V10"}}, 5, K)
    # C: its poor total minus T2, T3 and T1's published villages would give V10 back, and no second township can
    # hide it (their villages are all published), so C is withheld, and no township besides T1
    assert withheld == {"T1", "C"}


# ------------------------------------------------------------------------------------------- the attacker
def attack(parent: dict[str, str | None], level: dict[str, int], known: dict[tuple[str, str], int]
           ) -> dict[tuple[str, str], int]:
    """Everything that follows from the published figures ``{(measure, unit): value}``, to a fixed point, by the
    relations they obey: a unit's figure is the sum of its children's (down to the finest level a measure is
    published at), and a unit's registered households are its poor, exited and monitored households."""
    equations: list[list[tuple[int, tuple[str, str]]]] = []
    kids: dict[str, list[str]] = defaultdict(list)
    for c, p in parent.items():
        if p is not None:
            kids[p].append(c)
    for m in MEASURES:
        finest = 5 if m in VILLAGE_MEASURES else 4
        for p, cs in kids.items():
            cs = [c for c in cs if level[c] <= finest]
            if cs and level[p] <= finest:
                equations.append([(1, (m, p)), *((-1, (m, c)) for c in cs)])
    for u in parent:
        if level[u] < 5:
            equations.append([(1, ("registered_households", u)), (-1, ("poor_households", u)),
                              (-1, ("exited_households", u)), (-1, ("monitored_households", u))])
    known = dict(known)
    changed = True
    while changed:
        changed = False
        for eq in equations:
            unknown = [(a, v) for a, v in eq if v not in known]
            if len(unknown) == 1:
                a, v = unknown[0]
                known[v] = -a * sum(b * known[w] for b, w in eq if w in known)
                changed = True
    return known


def violations(parent: dict[str, str | None], level: dict[str, int], rows: list[dict[str, Any]]) -> list[Any]:
    """What the attacker learns that was withheld for itself (a village figure, or a total of 1–4), and every
    published total whose residual over its unknown parts is 1–4 households."""
    known = {(m, r["admin_code"]): r[m] for r in rows for m in MEASURES if r[m] is not None}
    learnt = attack(parent, level, known)
    bad: list[Any] = [(v, x) for v, x in learnt.items() if v not in known
                      and (level[v[1]] == 5 or 0 < x < K)]
    for m in MEASURES:
        finest = 5 if m in VILLAGE_MEASURES else 4
        tree = {c: p for c, p in parent.items() if level[c] <= finest}
        mine = {u: x for (mm, u), x in known.items() if mm == m and level[u] <= finest}
        bad += [(m, unit, rest, left) for unit, rest, left in residuals(tree, mine)
                if not (rest == 0 or (len(left) >= 2 and rest >= K))]
    return bad


def residuals(parent: dict[str, str | None], known: dict[str, int]) -> list[tuple[str, int, list[str]]]:
    """For every published total: the total minus every published figure below it (descending into unknown units
    only), with the unknown units that make up the rest."""
    kids: dict[str, list[str]] = defaultdict(list)
    for c, p in parent.items():
        if p is not None:
            kids[p].append(c)
    out = []
    for p in known:
        if not kids.get(p):
            continue
        rest, stack, left = known[p], list(kids[p]), []
        while stack:
            c = stack.pop()
            if c in known:
                rest -= known[c]
            elif kids.get(c):
                stack.extend(kids[c])
            else:
                left.append(c)
        out.append((p, rest, left))
    return out


def test_the_attacker_learns_nothing_withheld_on_random_hierarchies():
    import random
    rng = random.Random(20)
    for trial in range(300):
        rows, n = [("R", None, 2)], 0
        for c in range(rng.randint(1, 3)):
            rows.append((f"C{c}", "R", 3))
            for t in range(rng.randint(1, 4)):
                rows.append((f"T{c}.{t}", f"C{c}", 4))
                for _ in range(rng.randint(1, 5)):
                    rows.append((f"V{n}", f"T{c}.{t}", 5))
                    n += 1
        units = [{"region_id": "r", "code": c, "parent_code": p, "level": lv, "population": 1000}
                 for c, p, lv in rows]
        figures = [{"region_id": "r", "year": 2020, "at": "2020-12-31", "village_code": c,
                    **{m: rng.choice([0, 0, 1, 2, 3, 4, 6, 9, 25]) for m in MEASURES}}
                   for c, _, lv in rows if lv == 5]
        for f in figures:  # consistent figures: persons ≥ households
            f["poor_persons"] = f["poor_households"] * rng.randint(1, 4)
            f["reached_persons"] = f["reached_households"] * rng.randint(1, 4)
            f["registered_households"] = f["poor_households"] + f["exited_households"] + f["monitored_households"]
        published = build_rows(units, figures)
        parent = {c: p for c, p, _ in rows}
        level = {c: lv for c, _, lv in rows}
        assert violations(parent, level, published) == [], trial
        truth = {f["village_code"]: f for f in figures}
        for r in published:
            if r["level"] == 5:
                assert all(r[m] in (None, truth[r["admin_code"]][m]) for m in VILLAGE_MEASURES)


STOCKS = ("registered_households", "poor_households", "exited_households", "monitored_households")
FLOWS = ("entered_households", "exits", "returns")


def _random_panel(rng: Any, years: int) -> tuple[list[tuple[str, str | None, int]], list[dict[str, Any]]]:
    """A small region over ``years`` years whose villages' households move between poor (P), exited (E) and
    monitored (M), enter as poor and never leave: stocks and flows consistent as in a real registry."""
    rows, n = [("R", None, 2), ("C", "R", 3)], 0
    for t in range(rng.randint(2, 3)):
        rows.append((f"T{t}", "C", 4))
        for _ in range(rng.randint(1, 4)):
            rows.append((f"V{n}", f"T{t}", 5))
            n += 1
    figures = []
    for code, _, lv in rows:
        if lv != 5:
            continue
        p, e, m = rng.choice([0, 1, 3, 6, 12]), rng.choice([0, 2, 7]), rng.choice([0, 0, 1, 5])
        for y in range(years):
            entered = exits = returns = 0
            if y:
                entered = rng.choice([0, 0, 1, 2, 6])
                pe = rng.randint(0, p)
                pm = rng.randint(0, p - pe)
                ep = rng.randint(0, min(e, 1))
                em = rng.randint(0, min(e - ep, 2))
                mp = rng.randint(0, min(m, 1))
                me = rng.randint(0, m - mp)
                exits, returns = pe + pm, ep + mp
                p, e, m = p - pe - pm + ep + mp + entered, e - ep - em + pe + me, m - mp - me + pm + em
            figures.append({"region_id": "r", "year": 2020 + y, "at": f"{2020 + y}-12-31", "village_code": code,
                            "registered_households": p + e + m, "poor_households": p, "poor_persons": 2 * p,
                            "exited_households": e, "monitored_households": m, "reached_households": 0,
                            "reached_persons": 0, "entered_households": entered, "exits": exits, "returns": returns})
    return rows, figures


def learnable(rows: list[tuple[str, str | None, int]], years: list[int], published: dict[tuple, int]) -> set[tuple]:
    """The figures (measure, unit, year) that the published ones determine, by every linear relation they obey
    within and across years: sums over the hierarchy, registered = poor + exited + monitored, the registered
    households of a year are last year's plus the entries, the poor are last year's plus entries and returns minus
    exits; and a published zero makes every part below it zero. Solved exactly: a figure is learnt when the null
    space of the system has no component along it."""
    import numpy as np
    from scipy.linalg import null_space
    measures = STOCKS + FLOWS
    var = {(m, c, y): i for i, (m, c, y) in enumerate((m, c, y) for m in measures for c, _, _ in rows for y in years)}
    kids: dict[str, list[str]] = defaultdict(list)
    for c, p, _ in rows:
        if p is not None:
            kids[p].append(c)
    eqs: list[dict[int, float]] = []
    for y in years:
        for m in measures:
            for p, cs in kids.items():
                eqs.append({var[(m, p, y)]: 1.0, **{var[(m, c, y)]: -1.0 for c in cs}})
        for c, _, _ in rows:
            eqs.append({var[(STOCKS[0], c, y)]: 1.0, **{var[(m, c, y)]: -1.0 for m in STOCKS[1:]}})
            if y - 1 in years:
                eqs.append({var[("registered_households", c, y)]: 1.0, var[("registered_households", c, y - 1)]: -1.0,
                            var[("entered_households", c, y)]: -1.0})
                eqs.append({var[("poor_households", c, y)]: 1.0, var[("poor_households", c, y - 1)]: -1.0,
                            var[("entered_households", c, y)]: -1.0, var[("returns", c, y)]: -1.0,
                            var[("exits", c, y)]: 1.0})
    known = dict(published)
    for (m, c, y), x in published.items():  # non-negative figures: the parts of a zero are zeros
        if x == 0:
            stack = [c]
            while stack:
                u = stack.pop()
                known[(m, u, y)] = 0
                stack.extend(kids.get(u, ()))
    a = np.zeros((len(eqs), len(var)))
    for i, eq in enumerate(eqs):
        for j, v in eq.items():
            a[i, j] = v
    free = [v for v in var if v not in known]
    cols = [var[v] for v in free]
    ns = null_space(a[:, cols]) if cols else np.zeros((0, 0))
    return {v for k, v in enumerate(free) if np.linalg.norm(ns[k]) < 1e-8}


def test_no_withheld_figure_is_learnt_across_years_levels_and_measures():
    """Stocks and flows over several years: from everything published, within and across years, the attacker
    solves for no withheld figure of 1-4 households (but totals of parts that are public or add up to 0)."""
    import random
    rng = random.Random(21)
    found_small = 0
    for trial in range(120):
        years = [2020, 2021, 2022]
        rows, figures = _random_panel(rng, len(years))
        units = [{"region_id": "r", "code": c, "parent_code": p, "level": lv, "population": 1000} for c, p, lv in rows]
        out = build_rows(units, figures)
        published = {(m, r["admin_code"], r["year"]): r[m] for r in out for m in STOCKS + FLOWS
                     if r.get(m) is not None}
        truth = {(m, f["village_code"], f["year"]): f[m] for f in figures for m in STOCKS + FLOWS}
        level = {c: lv for c, _, lv in rows}
        sums: dict[tuple, int] = defaultdict(int)
        parent = {c: p for c, p, _ in rows}
        for (m, c, y), x in truth.items():
            u = c
            while u is not None:
                sums[(m, u, y)] += x
                u = parent[u]
        learnt = learnable(rows, years, published) | set(published)
        kids: dict[str, list[str]] = defaultdict(list)
        for c, p in parent.items():
            if p is not None:
                kids[p].append(c)
        for v in learnt:
            m, c, y = v
            if m in FLOWS and y == years[0]:
                continue  # flows of the first year are not defined
            if v in published or not 0 < sums[v] < K:
                continue
            # a withheld figure of 1-4 households is learnt: a violation, unless it is a total whose parts it
            # cannot solve for add up to 0 (it says nothing that was not already public)
            rest = sums[v] - sum(sums[(m, u, y)] for u in kids[c] if (m, u, y) in learnt)
            new = level[c] == 5 or rest != 0
            found_small += new
            assert not new, (trial, v, sums[v])
        for r in out:  # what is published is true
            for m in STOCKS + FLOWS:
                if r.get(m) is not None:
                    assert r[m] == sums[(m, r["admin_code"], r["year"])], (trial, m, r["admin_code"])
    assert found_small == 0


# ------------------------------------------------------------------------------------------------- the demo
async def _all(api: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    out, url = [], "/collections/admin-poverty/items"
    params = {"limit": 10_000, **params}
    while url:
        r = await api.get(url, params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        out += [f["properties"] for f in body["features"]]
        url, params = next((lk["href"] for lk in body["links"] if lk["rel"] == "next"), None), None
    return out


@pytest.mark.asyncio
async def test_the_demo_figures_add_up_hide_small_groups_and_resist_the_attacker(api):
    rows = await _all(api, {})
    assert rows, "the demo has figures per unit"
    by_year: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_year[r["year"]].append(r)
    for year, rs in by_year.items():
        parent = {r["admin_code"]: r["parent_code"] for r in rs}
        level = {r["admin_code"]: r["level"] for r in rs}
        parent = {c: (p if p in parent else None) for c, p in parent.items()}
        assert violations(parent, level, rs) == [], year
        for r in rs:
            assert all(r[m] is None or r[m] == 0 or r[m] >= K for m in MEASURES if m.endswith("households"))
        assert not [r for r in rs if r["level"] == 5 and any(r[m] is not None for m in ADMIN_MEASURES)]
    # the top unit is published: an office sees its region's totals
    top = [r for r in rows if r["parent_code"] is None or r["level"] == min(x["level"] for x in rows)]
    assert all(r[m] is not None for r in top for m in MEASURES)
    # flows: published for every year but the first at the top, unless 1-4 (withheld with their pair)
    for r in top:
        if r["year"] > min(x["year"] for x in rows):
            assert r["entered_households"] is not None
            assert (r["exits"] is None) == (r["returns"] is None)
    assert any((r["exits"] or 0) > 1000 for r in top)  # the years of mass exits are there
    assert all(r["income_median"] is not None for r in top)


@pytest.mark.asyncio
async def test_village_figures_are_those_of_the_village_poverty_layer(api):
    rows = await _all(api, {"level": 5})
    region = (await api.get("/regions/tieling-demo")).json()
    latest = region.get("defaultYear") or max(r["year"] for r in rows)  # the layer's year: the default, else latest
    mine = {r["admin_code"]: r for r in rows if r["year"] == latest}
    r = await api.get("/collections/village-poverty/items", params={"limit": 10_000})
    theirs = {f["id"]: f["properties"] for f in r.json()["features"]}
    assert mine.keys() == theirs.keys()
    for code, p in theirs.items():
        for m in VILLAGE_MEASURES:
            assert mine[code][m] == p[m], (code, m)
        assert mine[code]["suppressed"] == p["suppressed"]
        assert mine[code]["poverty_rate"] == pytest.approx(p["poverty_rate"]) if p["poverty_rate"] is not None \
            else mine[code]["poverty_rate"] is None


@pytest.mark.asyncio
async def test_figures_follow_an_edit_of_the_registry(editor, edit_keys):
    """A household deleted through the API (Part 4) changes the published figures at the next request."""
    from app.models.codes import Role
    admin = {"Authorization": f"Bearer {edit_keys[Role.admin]}"}
    r = await editor.get("/collections/households/items", params={"limit": 1, "status": "monitored"}, headers=admin)
    hh = r.json()["features"][0]
    village = hh["properties"]["village_code"]
    latest = max(int(f["properties"]["year"]) for f in (await editor.get(
        "/collections/admin-poverty/items", params={"level": 2, "limit": 100})).json()["features"])

    async def county_poor() -> tuple[int | None, int]:
        r = await editor.get("/collections/admin-poverty/items", params={"level": 2, "limit": 10, "year": latest})
        top = r.json()["features"][0]["properties"]
        return top["monitored_households"], top["registered_households"]

    before = await county_poor()
    r = await editor.delete(f"/collections/households/items/{hh['id']}", headers=admin)
    assert r.status_code in (200, 204), r.text
    after = await county_poor()
    assert after == (before[0] - 1, before[1] - 1)
    assert village


async def _eventually(read, done, tries: int = 150):  # noqa: ANN001, ANN202
    """``await read()`` until ``done(value)`` (every 0.2 s); the last value."""
    import asyncio

    for _ in range(tries):
        value = await read()
        if done(value):
            break
        await asyncio.sleep(0.2)
    return value


@contextlib.asynccontextmanager
async def _holding(url: str, *statements: str):  # noqa: ANN202
    """A transaction on its own connection that ran ``statements`` (taking locks) and stays open in the block."""
    import asyncpg

    from app.settings import libpq_url

    holder = await asyncpg.connect(libpq_url(url))
    try:
        await holder.execute("BEGIN")
        for sql in statements:
            await holder.execute(sql)
        yield
    finally:
        await holder.execute("ROLLBACK")
        await holder.close()


@contextlib.asynccontextmanager
async def _waiting_briefly(demo_template: str, label: str):  # noqa: ANN202
    """A copy of the demo served with a short wait for derived data (figures, extents): what a province sees."""
    from tpa_testing import ThrowawayDatabase, client_for, settings_for

    from app.settings import ApiSettings

    with ThrowawayDatabase(label, template=demo_template) as db:
        async with client_for(settings_for(db.url).model_copy(
                update={"api": ApiSettings(figures_wait_s=0.5)})) as client:
            yield db, client


async def test_a_slow_rebuild_of_the_figures_holds_no_request(demo_template):
    """While the figures are rebuilt (here held back by their build lock, as 5 million households hold it for about
    30 s), requests are answered with the figures last built; the new ones follow when the rebuild is done."""
    import asyncio
    import time

    from tpa_testing import fetch

    from app.repositories.stats import _LOCK

    async with _waiting_briefly(demo_template, "figures") as (db, client):
        async def top() -> dict[str, Any] | None:
            r = await client.get("/collections/admin-poverty/items", params={"level": 2, "limit": 1,
                                                                              "sortby": "-year"})
            assert r.status_code == 200, r.text
            return r.json()["features"][0]["properties"] if r.json()["features"] else None

        before = await _eventually(top, lambda v: v is not None)  # a new database: built in the background too
        assert before is not None
        async with _holding(db.url, f"SELECT pg_advisory_xact_lock({_LOCK})"):
            fetch(db.name, "DELETE FROM household WHERE hh_id = (SELECT hh_id FROM household "
                  "WHERE status = 'monitored' ORDER BY hh_id LIMIT 1)")
            await asyncio.sleep(1.2)  # past the catalogue's check interval: the next request sees the change
            t0 = time.perf_counter()
            assert await top() == before  # the figures last built
            assert time.perf_counter() - t0 < 5  # not the rebuild's time
        after = await _eventually(top, lambda v: v != before)
        assert after["monitored_households"] == before["monitored_households"] - 1
        assert after["registered_households"] == before["registered_households"] - 1


async def test_a_slow_extent_holds_no_request(demo_template):
    """Collection extents are scans of their tables (seconds on 5 million households): while one cannot finish
    (here its table is locked), answers go on with the previous extent, and the new one follows."""
    import asyncio
    import time

    from conftest import _make_keys
    from tpa_testing import fetch

    from app.models.codes import Role

    async with _waiting_briefly(demo_template, "extents") as (db, client):
        auth = {"Authorization": f"Bearer {_make_keys(db.url)[Role.admin]}"}

        async def extent() -> list[float] | None:
            r = await client.get("/collections/household-records", headers=auth)
            assert r.status_code == 200, r.text
            return (r.json().get("extent") or {}).get("spatial", {}).get("bbox", [None])[0]

        before = await _eventually(extent, lambda v: v is not None)
        assert before is not None
        fetch(db.name, "UPDATE household SET geom = ST_SetSRID(ST_MakePoint(100, 10), 4326) "
              "WHERE hh_id = (SELECT min(hh_id) FROM household)")
        async with _holding(db.url, "LOCK TABLE household_history IN ACCESS EXCLUSIVE MODE"):
            await asyncio.sleep(1.2)  # past the catalogue's check interval
            t0 = time.perf_counter()
            r = await client.get("/collections/households/items", params={"limit": 5}, headers=auth)
            assert r.status_code == 200 and len(r.json()["features"]) == 5
            assert await extent() == before  # the previous extent while the new one cannot be computed
            assert time.perf_counter() - t0 < 5
        after = await _eventually(extent, lambda v: v != before)
        assert after[0] <= 100 and after[1] <= 10  # the moved household is inside the new extent


# ------------------------------------------------------------------------------------------------- the API
@pytest.mark.asyncio
async def test_the_overview_of_the_region_is_its_published_figures_with_period_and_source(api):
    r = await api.get("/regions/tieling-demo/overview")
    assert r.status_code == 200
    doc = r.json()
    assert doc["unit"]["code"] == "211200" and doc["unit"]["level"] == 2  # the region's own unit, not "China"
    item = (await api.get(f"/collections/admin-poverty/items/211200-{doc['year']}")).json()["properties"]
    for f in doc["figures"]:
        assert f["value"] == item[f["id"]], f["id"]
        assert f["period"].startswith(str(doc["year"])) and f["source"] and f["href"].endswith(f"211200-{doc['year']}")
    kids = (await api.get("/collections/admin-poverty/items",
                          params={"parent_code": "211200", "year": doc["year"]})).json()["features"]
    assert sorted(c["code"] for c in doc["children"]) == sorted(k["properties"]["admin_code"] for k in kids)
    # projects and facilities counted inside the unit: here the whole region
    projects = (await api.get("/collections/projects/items", params={"limit": 1, "region": "tieling-demo"})).json()
    assert doc["projects"]["total"] <= projects["numberMatched"]
    assert sum(p["count"] for p in doc["projects"]["byStatus"]) == doc["projects"]["total"]
    assert sum(p["count"] for p in doc["projects"]["byType"]) == doc["projects"]["total"]
    facilities = (await api.get("/collections/facilities/items", params={"limit": 1})).json()["numberMatched"]
    assert doc["facilities"]["total"] == facilities
    assert doc["projects"]["byStatus"][0]["label"]["zh-CN"]  # code labels in both languages


@pytest.mark.asyncio
async def test_the_history_of_a_unit_is_its_published_figures_of_every_year(api):
    """The overview's history is the admin-poverty items of the unit, year by year (nothing the layer withholds
    appears); a village's carries the stocks and flows villages publish, not the figures from townships up; the
    HTML page and the workbook show the same table."""
    from io import BytesIO

    from openpyxl import load_workbook

    from app.repositories.overview import HISTORY_COLUMNS

    doc = (await api.get("/regions/tieling-demo/overview")).json()
    years = doc["years"]
    assert [h["year"] for h in doc["history"]] == years and len(years) == 10
    village = None
    for unit in ("211200", None):
        if unit is None:  # a village with a published poor count one year and a withheld one another
            feats = (await api.get("/collections/admin-poverty/items", params={
                "level": 5, "year": 2019, "filter": "poor_households IS NULL AND registered_households IS NOT NULL",
                "limit": 1})).json()["features"]
            unit = village = feats[0]["properties"]["admin_code"]
        got = (await api.get("/regions/tieling-demo/overview", params={"unit": unit})).json()["history"]
        items = (await api.get("/collections/admin-poverty/items", params={
            "admin_code": unit, "sortby": "year", "limit": 20})).json()["features"]
        assert [h["year"] for h in got] == [f["properties"]["year"] for f in items] == years
        for h, f in zip(got, items, strict=True):
            for k in HISTORY_COLUMNS:
                if k in h:
                    assert h[k] == f["properties"][k], (unit, h["year"], k)
        if unit == village:
            assert not {"monitored_households", "exited_households", "reached_households"} & set(got[0])
            assert any(h["poor_households"] is None for h in got) and any(h["poor_households"] for h in got)
        else:
            assert got[0]["exits"] is None and got[1]["exits"] == items[1]["properties"]["exits"] > 0
            assert got[0]["income_median"] < 1 < got[-1]["income_median"]  # the median household crossed the line
    page = (await api.get("/regions/tieling-demo/overview", params={"unit": "211200", "f": "html"})).text
    assert "Over the years" in page and f"<td>{years[-1]}</td>" in page
    book = load_workbook(BytesIO((await api.get("/regions/tieling-demo/overview",
                                                params={"unit": "211200", "f": "xlsx"})).content))
    sheet = [list(r) for r in book["History"].iter_rows(values_only=True)]
    assert [r[0] for r in sheet[1:]] == years
    assert sheet[1][3] in ("", None)  # the first year has no entries (no year before), not "withheld"
    h2020 = doc["history"][years.index(2020)]
    row = sheet[1 + years.index(2020)]
    assert row[1] == h2020["registered_households"]
    assert (row[4] == "withheld") == (h2020["exits"] is None)


@pytest.mark.asyncio
async def test_the_overview_refuses_what_does_not_exist(api):
    for path, params in (("/regions/nowhere/overview", {}), ("/regions/tieling-demo/overview", {"unit": "nope"}),
                         ("/regions/tieling-demo/overview", {"year": 1999})):
        r = await api.get(path, params=params)
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json"), path
    r = await api.get("/regions/tieling-demo/overview", params={"bogus": "1"})
    assert r.status_code == 400


@pytest.mark.asyncio
async def test_classes_are_mapclassify_on_the_selected_features(api):
    import mapclassify
    import numpy as np

    rows = await _all(api, {"level": 4})
    values = np.array([r["poverty_rate"] for r in rows if r["poverty_rate"] is not None])
    for method, ref in (("quantiles", mapclassify.Quantiles(values, k=5)),
                        ("equal-interval", mapclassify.EqualInterval(values, k=5)),
                        ("natural-breaks", mapclassify.FisherJenks(values, k=5))):
        r = await api.get("/collections/admin-poverty/classes",
                          params={"property": "poverty_rate", "level": 4, "method": method, "k": 5})
        body = r.json()
        assert body["breaks"] == pytest.approx(list(ref.bins)), method
        assert body["counts"] == [int(c) for c in ref.counts], method
        assert body["nulls"] == len(rows) - len(values) and body["count"] == len(values)
    bad = await api.get("/collections/admin-poverty/classes", params={"property": "name"})
    assert bad.status_code == 400 and "numeric" in bad.json()["detail"]
    bad = await api.get("/collections/admin-poverty/classes", params={"property": "poverty_rate", "limit": 5})
    assert bad.status_code == 400
    hidden = await api.get("/collections/households/classes", params={"property": "size"})
    assert hidden.status_code == 401  # the same access rules as the items


@pytest.mark.parametrize("seed", range(4))
def test_natural_breaks_are_mapclassify_fisher_jenks(seed):
    import warnings

    import mapclassify
    import numpy as np

    from app.ogc.overview import fisher_jenks

    x = np.random.default_rng(seed).lognormal(size=150 + 100 * seed).round(2)  # ties included
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mapclassify's note that numba would be faster
        ref = mapclassify.FisherJenks(x, k=3 + seed).bins
    assert fisher_jenks(x, 3 + seed) == pytest.approx(ref)
