"""Dynamic monitoring (issue 21 part 3): rules as CQL2 over household-records, screening, alerts and their lifecycle.

The oracle is an independent pandas implementation of the default rules on the raw registry columns (income,
status, exit year, rigid expenditure, the previous record's income, the region's lines), run on the demo's records
of a year plus a hand-made panel of households at the rules' boundaries (both sides) and with missing values.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest
from monitoring_oracle import RECORDS_SQL, REGISTRY, default_rules
from tpa_testing import ThrowawayDatabase, fetch, settings_for, tpa_cli

from app.db import create_engine
from app.models.codes import Role
from app.services.monitoring import Rule, RuleError, compile_rules, records_layer, screen

YEAR = 2025
PATCH = {"content-type": "application/merge-patch+json"}


def hx(name: str) -> str:
    """A hand-made household's id: registry ids are 64-hex pseudonyms."""
    return hashlib.sha256(name.encode()).hexdigest()


def auth(keys: dict[Role, str], role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[role]}"}


# (id, status, year_exited, net income per person, size, medical, schooling, disaster, previous income or None)
# around the demo's monitoring line of 6,000 (4,000 × 1.5), a rigid share of 0.5 and an income change of -0.3
HAND_MADE = (
    ("mon-at-line", "exited", 2019, 6000.00, 3, 0, 0, 0, 6000.00),          # at the line: not below
    ("mon-below-line", "exited", 2019, 5999.99, 3, 0, 0, 0, 6100.00),       # just below: unstable after exit
    ("mon-no-income", "exited", 2019, 0.00, 3, 100, None, None, 6100.00),   # no income: no share (not ÷ 0)
    ("mon-edge", "monitored", None, 5500.00, 2, 0, 0, 0, 5600.00),         # never exited, below: edge
    ("mon-edge-above", "monitored", None, 6000.00, 2, 0, 0, 0, 5600.00),   # never exited, at the line
    ("mon-poor", "poor", None, 2000.00, 2, 9000, 0, 0, 5000.00),           # poor: not monitored (helped as poor)
    ("mon-rigid-half", "exited", 2018, 8000.00, 2, 8000, 0, 0, 8000.00),   # rigid share exactly 0.5: not above
    ("mon-rigid-over", "exited", 2018, 8000.00, 2, 4000, 3000, 1001, 8000.00),  # 8,001 / 16,000 > 0.5
    ("mon-rigid-null", "exited", 2018, 8000.00, 2, None, None, 9000, 8000.00),  # missing costs count as 0
    ("mon-loss-30", "exited", 2018, 7000.00, 2, 0, 0, 0, 10000.00),       # -30 % exactly: fires (<=)
    ("mon-loss-29", "exited", 2018, 7100.00, 2, 0, 0, 0, 10000.00),       # -29 %: does not
    ("mon-no-previous", "exited", 2018, 6500.00, 2, 0, 0, 0, None),        # no previous record: no change
    ("mon-all", "monitored", 2017, 3000.00, 2, 3500, 0, 0, 6000.00),      # unstable, rigid and loss at once
)


def _insert_hand_made(db: ThrowawayDatabase) -> str:
    """Each hand-made household is a copy of a demo household of the year with the values above, and a previous
    record (the template's own previous record, re-identified) when it has a previous income."""
    tpl = fetch(db.name, "SELECT h.hh_id FROM household h JOIN household_history p ON p.hh_id = h.hh_id "
                         "AND p.valid_to = h.valid_from WHERE extract(year FROM h.valid_from) = $1 "
                         "ORDER BY h.hh_id LIMIT 1", YEAR)[0][0]
    for row in HAND_MADE:
        _insert_household(db, tpl, row)
    return tpl


def _insert_household(db: ThrowawayDatabase, tpl: str, row: tuple) -> None:
    hid, status, exited, inc, size, med, edu, loss, prev = row
    patch = {"hh_id": hx(hid), "status": status, "year_exited": exited, "net_income_pc": inc, "size": size,
             "expense_medical": med, "expense_education": edu, "loss_disaster": loss}
    fetch(db.name, "INSERT INTO household SELECT (jsonb_populate_record(NULL::household, to_jsonb(h) || "
                   "$1::jsonb)).* FROM household h WHERE hh_id = $2", _json(patch), tpl)
    if prev is not None:
        fetch(db.name, "INSERT INTO household_history SELECT (jsonb_populate_record(NULL::household_history, "
                       "to_jsonb(p) || $1::jsonb)).* FROM household_history p JOIN household h "
                       "ON h.hh_id = p.hh_id AND p.valid_to = h.valid_from WHERE p.hh_id = $2",
                       _json({"hh_id": hx(hid), "net_income_pc": prev}), tpl)


# (id, previous income or None, members as (labour at the previous record, labour now); None = not a member then)
LABOUR_MADE = (
    ("mon-labour-lost", 9000.0, (("ordinary", "lost"), ("skilled", "skilled"))),     # 2 → 1: fires
    ("mon-labour-same", 9000.0, (("ordinary", "ordinary"), ("weak", "weak"))),       # 1 → 1
    ("mon-labour-gained", 9000.0, (("none", "ordinary"), ("ordinary", "ordinary"))),  # 1 → 2
    ("mon-labour-left", 9000.0, (("ordinary", None), ("ordinary", "ordinary"))),     # 2 → 1 (a member left): fires
    ("mon-labour-new", None, (("ordinary", "ordinary"),)),                           # no previous record
)


def _insert_labour_made(db: ThrowawayDatabase, tpl: str) -> None:
    """Exited households with member records over time: a member whose labour changes has a history row up to the
    current record's first day and a current row from it."""
    for hid, prev, members in LABOUR_MADE:
        _insert_household(db, tpl, (hid, "exited", 2018, 9000.0, 2, 0, 0, 0, prev))
        now, before = fetch(db.name, "SELECT h.valid_from, p.valid_from FROM household h LEFT JOIN household_history "
                                     "p ON p.hh_id = h.hh_id AND p.valid_to = h.valid_from WHERE h.hh_id = $1",
                            hx(hid))[0]
        for k, (was, is_) in enumerate(members):
            pid = hx(f"{hid}-member-{k}")
            rows = [("person_history", was, before, now), ("person", is_, now, None)] if was != is_ else \
                [("person", is_, before or now, None)]
            for table, labour, start, end in rows:
                if labour is None or start is None:
                    continue
                fetch(db.name, f"INSERT INTO {table} SELECT (jsonb_populate_record(NULL::{table}, to_jsonb(m) || "
                               "$1::jsonb)).* FROM person m WHERE m.person_id = (SELECT min(person_id) FROM person)",
                      _json({"person_id": pid, "hh_id": hx(hid), "labour": labour, "valid_from": str(start),
                             "valid_to": None if end is None else str(end), "relation": "head" if k == 0 else
                             "spouse"}))


def _json(d: dict) -> str:
    return json.dumps(d)


def _oracle(db: ThrowawayDatabase, year: int) -> dict[str, list[str]]:
    """The default rules in pandas on the raw columns of the year's records: household → rules that fire."""
    return default_rules(fetch(db.name, RECORDS_SQL, year))


@pytest.fixture(scope="module")
def panel(edit_database: ThrowawayDatabase) -> ThrowawayDatabase:
    _insert_labour_made(edit_database, _insert_hand_made(edit_database))
    return edit_database


@pytest.fixture
async def engine(panel: ThrowawayDatabase) -> AsyncIterator:
    settings = settings_for(panel.url)
    eng = create_engine(settings.db)
    try:
        yield eng, settings.security
    finally:
        await eng.dispose()


async def test_screening_equals_an_independent_pandas_implementation(engine, panel):
    eng, security = engine
    result = await screen(eng, security, "tieling-demo", YEAR)
    want = _oracle(panel, YEAR)
    got = {a["hh_id"]: a["rules"] for a in result.alerts}
    assert got == want
    # the hand-made households, by name: each boundary on the side the rule's text says
    assert {h: got.get(hx(h)) for h, *_ in HAND_MADE} == {
        "mon-at-line": None, "mon-below-line": ["income-below-line-exited"],
        "mon-no-income": ["income-below-line-exited", "income-loss"],
        "mon-edge": ["income-below-line-edge"], "mon-edge-above": None, "mon-poor": None, "mon-rigid-half": None,
        "mon-rigid-over": ["rigid-expenditure"], "mon-rigid-null": ["rigid-expenditure"],
        "mon-loss-30": ["income-loss"], "mon-loss-29": None, "mon-no-previous": None,
        "mon-all": ["income-below-line-exited", "rigid-expenditure", "income-loss"]}
    assert {h: got.get(hx(h)) for h, *_ in LABOUR_MADE} == {
        "mon-labour-lost": ["labour-loss"], "mon-labour-same": None, "mon-labour-gained": None,
        "mon-labour-left": ["labour-loss"], "mon-labour-new": None}
    every = {name: a for a in result.alerts for name, *_ in HAND_MADE if a["hh_id"] == hx(name)}
    assert every["mon-all"]["categories"] == ["unstable_exited", "sudden_difficulty"]
    assert every["mon-edge"]["categories"] == ["edge"]
    # the values that triggered them: what the fired rules read
    assert every["mon-below-line"]["trigger_values"]["net_income_pc"] == 5999.99
    assert every["mon-below-line"]["trigger_values"]["monitoring_line"] == 6000.0
    assert every["mon-loss-30"]["trigger_values"]["income_change"] == pytest.approx(-0.3)
    assert every["mon-loss-30"]["trigger_values"]["previous_net_income_pc"] == 10000.0
    assert every["mon-rigid-null"]["trigger_values"]["rigid_expense_share"] == pytest.approx(9000 / 16000)
    lost = next(a for a in result.alerts if a["hh_id"] == hx("mon-labour-lost"))
    assert lost["trigger_values"] == {"status": "exited", "labour_members": 1, "previous_labour_members": 2}
    assert lost["categories"] == ["sudden_difficulty"]
    # written: one row per household and year, as found
    stored = dict(fetch(panel.name, "SELECT hh_id, rules FROM alert WHERE year = $1", YEAR))
    assert {k: list(v) for k, v in stored.items()} == want
    assert result.records == fetch(panel.name, f"SELECT count(*) FROM {REGISTRY} r "
                                               "WHERE extract(year FROM valid_from) = $1", YEAR)[0][0]
    # another year of the demo: the same agreement
    assert {a["hh_id"]: a["rules"] for a in (await screen(eng, security, "tieling-demo", 2021,
                                                          write=False)).alerts} == _oracle(panel, 2021)


async def test_a_region_replaces_a_default_rule_and_bad_rules_are_refused(engine, panel):
    eng, security = engine
    fetch(panel.name, "INSERT INTO monitoring_rule (region_id, rule_id, category, title, expression, source) "
                      "VALUES ('tieling-demo', 'income-loss', 'sudden_difficulty', 'Loss of half the income', "
                      "'status IN (''exited'', ''monitored'') AND income_change <= -0.5', 'test')")
    try:
        got = await screen(eng, security, "tieling-demo", YEAR, write=False)
        fired = {a["hh_id"] for a in got.alerts if "income-loss" in a["rules"]}
        assert hx("mon-loss-30") not in fired and hx("mon-all") in fired  # -30 % no longer; -50 % still
    finally:
        fetch(panel.name, "DELETE FROM monitoring_rule WHERE region_id = 'tieling-demo'")
    layer = records_layer(settings_for(panel.url).security)
    for expr, why in (("net_income_pc <", "filter"), ("no_such_field > 1", "no_such_field"),
                      ("status > 3", "status")):
        with pytest.raises(RuleError, match=why):
            compile_rules([Rule("bad", "edge", "bad", expr)], layer)
    with pytest.raises(RuleError, match="category"):
        compile_rules([Rule("bad", "nowhere", "bad", "size > 1")], layer)
    done = tpa_cli(panel, "monitoring", "run", "--region", "tieling-demo", "--period", "1999", check=False)
    assert done.returncode == 2 and "no records in 1999" in done.stderr


async def test_alerts_move_through_their_lifecycle_with_the_audit_trail(engine, panel, editor: httpx.AsyncClient,
                                                                          edit_keys):
    eng, security = engine
    await screen(eng, security, "tieling-demo", YEAR)
    admin, analyst = auth(edit_keys, Role.admin), auth(edit_keys, Role.analyst)
    url = f"/collections/alerts/items/{hx('mon-all')}-{YEAR}"
    r = await editor.get(url, headers=analyst)
    assert r.status_code == 200 and r.json()["properties"]["status"] == "new"
    r = await editor.patch(url, headers={**analyst, **PATCH}, json={"properties": {"status": "verified"}})
    assert r.status_code == 403
    for status, ok in (("assisted", False), ("verified", True), ("new", False), ("assisted", True),
                       ("dismissed", False), ("closed", True), ("verified", False)):
        r = await editor.patch(url, headers={**admin, **PATCH},
                               json={"properties": {"status": status, "note": f"to {status}"}})
        assert (r.status_code == 200) == ok, (status, r.status_code, r.text)
        if not ok:
            assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json")
            assert "not allowed" in r.json()["detail"]
    trail = fetch(panel.name, "SELECT before->'properties'->>'status', after->'properties'->>'status' FROM audit_log "
                              "WHERE collection = 'alerts' AND feature_id = $1 ORDER BY audit_id",
                  f"{hx('mon-all')}-{YEAR}")
    assert [tuple(t) for t in trail] == [("new", "verified"), ("verified", "assisted"), ("assisted", "closed")]
    # a later screening keeps the cadre's work: status and note stay, the values are refreshed
    again = await screen(eng, security, "tieling-demo", YEAR)
    assert again.written["created"] == 0 and again.written["removed"] == 0
    props = (await editor.get(url, headers=analyst)).json()["properties"]
    assert props["status"] == "closed" and props["note"] == "to closed"
    # a 'new' alert no rule finds any more is removed; one under way is kept
    fetch(panel.name, "UPDATE alert SET status = 'verified' WHERE alert_id = $1", f"{hx('mon-edge')}-{YEAR}")
    fetch(panel.name, "UPDATE household SET net_income_pc = 9000 WHERE hh_id IN ($1, $2)", hx("mon-edge"),
          hx("mon-below-line"))
    try:
        gone = await screen(eng, security, "tieling-demo", YEAR)
        assert gone.written["removed"] == 1
        left = {r[0] for r in fetch(panel.name, "SELECT hh_id FROM alert WHERE year = $1", YEAR)}
        assert hx("mon-edge") in left and hx("mon-below-line") not in left
    finally:
        fetch(panel.name, "UPDATE household SET net_income_pc = 5999.99 WHERE hh_id = $1", hx("mon-below-line"))
        fetch(panel.name, "UPDATE household SET net_income_pc = 5500 WHERE hh_id = $1", hx("mon-edge"))


async def test_alerts_are_restricted(engine, editor: httpx.AsyncClient, edit_keys, panel):
    eng, security = engine
    await screen(eng, security, "tieling-demo", YEAR)
    fid = f"{hx('mon-all')}-{YEAR}"
    for path in ("/collections/alerts", "/collections/alerts/items", f"/collections/alerts/items/{fid}",
                 "/collections/alerts/queryables", "/collections/alerts/items?filter=status = 'new'"):
        r = await editor.get(path)
        assert r.status_code in (401, 404), (path, r.status_code)
    listed = (await editor.get("/collections")).json()["collections"]
    assert "alerts" not in {c["id"] for c in listed}
    # analysts see the household's point displaced as in households; administrators the true point
    seen = {}
    for role in (Role.analyst, Role.admin):
        for coll, item in (("alerts", fid), ("households", hx("mon-all"))):
            r = await editor.get(f"/collections/{coll}/items/{item}", headers=auth(edit_keys, role))
            assert r.status_code == 200, r.text
            seen[role, coll] = r.json()["geometry"]["coordinates"]
    assert seen[Role.analyst, "alerts"] == seen[Role.analyst, "households"]
    assert seen[Role.admin, "alerts"] == seen[Role.admin, "households"] != seen[Role.analyst, "alerts"]


async def test_the_monitoring_screen_process_writes_what_the_command_writes(engine, panel, editor: httpx.AsyncClient,
                                                                              edit_keys):
    # checks the method: methodology#monitoring
    eng, security = engine
    admin, analyst = auth(edit_keys, Role.admin), auth(edit_keys, Role.analyst)
    url = "/processes/monitoring-screen/execution"
    body = {"inputs": {"region": "tieling-demo", "period": YEAR, "dry_run": True}}
    # who may: analysts only a dry run, administrators a screening that writes; nobody anonymously
    r = await editor.post(url, json=body)
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")
    r = await editor.post(url, headers=analyst, json={"inputs": {**body["inputs"], "dry_run": False}})
    assert r.status_code == 403 and "dry_run" in r.json()["detail"]
    r = await editor.post(url, headers=analyst, json={"inputs": {**body["inputs"], "region": "atlantis"}})
    assert r.status_code == 400 and "tieling-demo" in r.json()["detail"]
    r = await editor.post(url, headers=analyst, json={"inputs": {**body["inputs"], "period": 1999}})
    assert r.status_code == 400 and "no records in 1999" in r.json()["detail"], r.text
    fetch(panel.name, "DELETE FROM alert")
    # a dry run: the counts of the screening, nothing written
    r = await editor.post(url, headers=analyst, json=body)
    assert r.status_code == 200, r.text
    want = _oracle(panel, YEAR)
    dry = r.json()
    assert dry["alerts"] == len(want) and dry["written"] is None
    assert dry["by_rule"] == dict(Counter(rule for rules in want.values() for rule in rules))
    assert dry["records"] == fetch(panel.name, f"SELECT count(*) FROM {REGISTRY} r "
                                               "WHERE extract(year FROM valid_from) = $1", YEAR)[0][0]
    assert fetch(panel.name, "SELECT count(*) FROM alert")[0][0] == 0
    # an administrator's screening, queued as a job: the alerts of the oracle written, the job recording who ran it
    r = await editor.post(url, headers={**admin, "Prefer": "respond-async"},
                          json={"inputs": {**body["inputs"], "dry_run": False}})
    assert r.status_code == 201, r.text
    job = r.json()["jobID"]
    for _ in range(300):
        status = (await editor.get(f"/jobs/{job}", headers=admin)).json()
        if status["status"] not in ("accepted", "running"):
            break
        await asyncio.sleep(0.1)
    assert status["status"] == "successful", status
    done = (await editor.get(f"/jobs/{job}/results", headers=admin)).json()
    assert done["written"] == {"created": len(want), "updated": 0, "removed": 0}
    stored = dict(fetch(panel.name, "SELECT hh_id, rules FROM alert WHERE year = $1", YEAR))
    assert {k: list(v) for k, v in stored.items()} == want
    assert fetch(panel.name, "SELECT owner_role::text FROM analysis_run WHERE run_id = $1", job)[0][0] == "admin"
    # the link to the year's alerts: readable with a key, not without
    items = done["items"]["href"]
    page = (await editor.get(items, headers=analyst)).json()
    assert page["numberMatched"] == len(want)
    assert {f["properties"]["year"] for f in page["features"]} == {YEAR}
    assert (await editor.get(items)).status_code in (401, 404)
    # the same as the command: a second screening finds every alert again
    again = await screen(eng, security, "tieling-demo", YEAR)
    assert again.written == {"created": 0, "updated": len(want), "removed": 0}
