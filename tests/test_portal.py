"""The portal (issue 20) in a real browser: Debian's Chromium under Playwright, against the service on loopback.

Each view loads without console errors or CSP violations; the map is drawn (pixels of the choropleth's colours);
Chinese and English render; the legend is the data's classes; sign-in shows a restricted layer and sign-out hides
it; an analysis run from the form finishes and draws; the report prints to a PDF with the map on page 1; axe-core
finds no serious or critical violation.
"""

from __future__ import annotations

import io
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from tpa_testing import ThrowawayDatabase, chromium, screenshot, serve

from app.models.codes import Role

AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
COLORS = ["#ffffb2", "#fecc5c", "#fd8d3c", "#f03b20", "#bd0026"]  # app/static/portal/portal.js
REGION = "tieling-demo"
VIEWS = ("overview", "siting", "needs", "coupling", "telecom", "run", "account")


@pytest.fixture(scope="module")
def site(edit_database: ThrowawayDatabase) -> Iterator[str]:
    """The service on this module's private copy of the demo (analyses run from the form write jobs)."""
    with serve(edit_database.url) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


class Watched:
    """A page with its console errors, page errors and CSP violations collected."""

    def __init__(self, browser: Any, lang: str = "en", width: int = 1366, height: int = 820) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height}, locale=lang,
                                           extra_http_headers={"Accept-Language": lang})
        self.page = self.context.new_page()
        # a generous wait: on a loaded CI machine the first figures after a registry change take their rebuild
        self.page.set_default_timeout(90_000)
        self.problems: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(m.text))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        # CSP violations reach the page as events (and the console); both are recorded
        self.page.add_init_script("document.addEventListener('securitypolicyviolation', e => "
                                  "console.error('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI));")

    def close(self) -> None:
        self.context.close()


def _colour_pixels(png: bytes, colours: list[str]) -> dict[str, int]:
    px = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3).astype(int)
    out = {}
    for c in colours:
        rgb = np.array([int(c[i:i + 2], 16) for i in (1, 3, 5)])
        out[c] = int((np.abs(px - rgb).max(axis=1) <= 6).sum())
    return out


def _open_portal(w: Watched, site: str, view: str = "overview") -> None:
    w.page.goto(f"{site}/portal#{view}")
    w.page.wait_for_selector("body[data-figures=ready]", timeout=30_000)
    w.page.wait_for_selector("body[data-map=drawn]", timeout=30_000)


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_every_view_loads_without_errors_and_the_map_is_drawn(site, browser, lang):
    w = Watched(browser, lang)
    try:
        _open_portal(w, site)
        page = w.page
        assert page.get_attribute("html", "lang") == lang
        if lang == "zh-CN":
            assert "精准扶贫门户" in page.title() and "贫困发生率" in page.inner_text("body")
            assert "Poverty rate" not in page.inner_text("#view-overview")
        else:
            assert "Poverty-alleviation portal" in page.title() and "Poverty rate" in page.inner_text("body")
            assert "贫困发生率" not in page.inner_text("body")
        # the figures are filled, with their period and source
        assert page.inner_text("[data-figure=registered_households]").replace(",", "").isdigit()
        assert "2020" in page.inner_text("#figures .src")
        seen = _colour_pixels(page.locator("#map").screenshot(), COLORS)
        assert sum(n >= 500 for n in seen.values()) >= 4, seen  # a choropleth, not a blank canvas
        screenshot(page, f"portal-overview-{lang}")
        for view in VIEWS[1:]:
            page.click(f"#tab-{view}")
            assert page.is_visible(f"#view-{view}")
            page.wait_for_load_state("networkidle")
        page.click("#tab-run")
        page.wait_for_selector("#run-form #run")
        screenshot(page, f"portal-run-{lang}")
        assert w.problems == []
    finally:
        w.close()


def test_the_legend_is_the_classes_of_the_data(site, browser):
    w = Watched(browser)
    try:
        _open_portal(w, site)
        page = w.page
        for level, method in (("4", "quantiles"), ("3", "natural-breaks"), ("5", "equal-interval")):
            page.select_option("#level", level)
            page.select_option("#method", method)
            page.wait_for_selector(f"#legend[data-level='{level}'][data-method='{method}']")
            page.wait_for_load_state("networkidle")
            rows = page.eval_on_selector_all("#legend .cls", "els => els.map(e => [e.dataset.upper || null, "
                                                               "+e.dataset.count])")
            classes = httpx.get(f"{site}/collections/admin-poverty/classes", params={
                "property": "poverty_rate", "level": level, "year": 2020, "region": REGION, "method": method,
                "k": 5}).json()
            assert [float(u) for u, _ in rows if u is not None] == pytest.approx(classes["breaks"])
            assert [n for u, n in rows if u is not None] == classes["counts"]
            units = httpx.get(f"{site}/collections/admin-poverty/items",
                              params={"level": level, "year": 2020, "limit": 1}).json()["numberMatched"]
            assert sum(n for _, n in rows) == units  # every unit is in a class or counted as withheld
        assert w.problems == []
    finally:
        w.close()


def test_a_slow_answer_to_an_earlier_choice_does_not_paint_over_the_last_one(site, browser):
    """Natural breaks of the villages take longer than equal intervals: choosing one and then the other quickly must
    leave the legend of the last choice (a CI run once found the earlier, slower answer drawn over it)."""
    w = Watched(browser)
    try:
        _open_portal(w, site)
        page = w.page
        # the natural-breaks request is held until the equal-interval legend is drawn, then let through
        held: list[Any] = []
        page.route(lambda url: "/classes?" in url and "method=natural-breaks" in url,
                   lambda route: held.append(route))
        page.select_option("#level", "5")
        page.select_option("#method", "natural-breaks")
        page.select_option("#method", "equal-interval")
        page.wait_for_selector("#legend[data-level='5'][data-method='equal-interval']")
        assert held, "the natural-breaks request was not seen"
        for route in held:
            route.continue_()
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(500)
        assert page.get_attribute("#legend", "data-method") == "equal-interval"
        classes = httpx.get(f"{site}/collections/admin-poverty/classes", params={
            "property": "poverty_rate", "level": 5, "year": 2020, "region": REGION, "method": "equal-interval",
            "k": 5}).json()
        uppers = page.eval_on_selector_all("#legend .cls", "els => els.map(e => e.dataset.upper || null)")
        assert [float(u) for u in uppers if u is not None] == pytest.approx(classes["breaks"])
        assert w.problems == []
    finally:
        w.close()


def test_the_years_of_a_unit_and_of_a_village_are_its_published_figures(site, browser):
    """The overview's table over the years is the admin-poverty items of the unit, one row per year, with the chart
    beside it; a village opened from the list of villages shows its card with its own years (a village publishes no
    monitored households) and the keyboard lands in it."""
    w = Watched(browser)
    try:
        _open_portal(w, site)
        page = w.page
        items = httpx.get(f"{site}/collections/admin-poverty/items", params={
            "admin_code": "211200", "sortby": "year", "limit": 20}).json()["features"]
        rows = page.eval_on_selector_all("#history-table tr", "trs => trs.map(t => [...t.cells].map(c => c.innerText))")
        head, body = rows[0], rows[1:]
        assert [int(r[0]) for r in body] == [f["properties"]["year"] for f in items] and len(body) == 10
        poor = head.index("Poor")
        for r, f in zip(body, items, strict=True):
            assert r[poor].replace(",", "") == str(f["properties"]["poor_households"])
        assert page.locator("#history-chart svg polyline").count() >= 2
        assert "Monitored" in head
        # down the list of places below: a county, a township, then a village, whose card opens with its own years
        for _ in ("county", "township"):
            before = page.inner_text("#unit-name")
            page.locator("#children-table a").first.click()
            page.wait_for_function("t => document.querySelector('#unit-name').innerText !== t", arg=before)
        page.locator("#children-table a").first.click()  # a village: its card
        page.wait_for_selector("#card-history tr:nth-child(2)")
        assert page.evaluate("document.activeElement.id") == "card-close"
        card_head = page.eval_on_selector_all("#card-history th", "ths => ths.map(t => t.innerText)")
        assert "Poor" in card_head and "Monitored" not in card_head
        assert page.locator("#card-history tr").count() == 11
        page.keyboard.press("Escape")
        assert page.is_hidden("#card")
        assert w.problems == []
    finally:
        w.close()


def test_sign_in_shows_a_restricted_layer_and_sign_out_hides_it(site, browser, edit_keys):
    w = Watched(browser)
    try:
        page = w.page
        _open_portal(w, site, "account")
        assert page.locator("#show-households").count() == 0
        page.fill("#key", "tpa_0000000000_not-a-key-at-all")
        page.click("#sign-in")
        page.wait_for_selector(".error[role=alert]")  # refused, said on the page
        page.fill("#key", edit_keys[Role.analyst])
        page.click("#sign-in")
        page.wait_for_selector("body[data-figures=ready]")
        cookie = next(c for c in w.context.cookies() if c["name"] == "tpa_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert page.evaluate("document.cookie").find("tpa_session") < 0  # scripts cannot read it
        page.click("#tab-account")
        assert "analyst" in page.inner_text("#view-account")
        page.click("#tab-overview")
        statuses: list[int] = []
        page.on("response", lambda r: "/collections/households/tiles/" in r.url and statuses.append(r.status))
        # at least one tile of the view holds households (others may be empty: 204)
        with page.expect_response(lambda r: "/collections/households/tiles/" in r.url and r.status == 200,
                                  timeout=30_000):
            page.check("#show-households")
        page.wait_for_load_state("networkidle")
        assert statuses and all(s in (200, 204) for s in statuses) and 200 in statuses, statuses
        screenshot(page, "portal-signed-in")
        # the session cannot change anything without the page's CSRF token
        forged = page.evaluate("""() => fetch('/processes/mpi/execution', {method: 'POST', credentials: 'same-origin',
            headers: {'Content-Type': 'application/json'}, body: JSON.stringify({inputs: {households: {region:
            'tieling-demo'}}})}).then(r => r.status)""")
        assert forged == 403
        page.click("#tab-account")
        page.click("#sign-out")
        page.wait_for_selector("body[data-figures=ready]")
        assert page.locator("#show-households").count() == 0
        assert [c for c in w.context.cookies() if c["name"] == "tpa_session"] == []
        status = page.evaluate("() => fetch('/collections/households/tiles/WebMercatorQuad/8/95/213')"
                               ".then(r => r.status)")
        assert status == 401
        # the two probes above are the only refusals (the browser logs each in the console)
        assert [p for p in w.problems if "401" not in p and "403" not in p] == []
    finally:
        w.close()


def test_sign_in_is_refused_from_another_site(site):
    r = httpx.post(f"{site}/portal/session", data={"key": "x"}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and r.headers["content-type"].startswith("application/problem+json")


def test_an_analysis_run_from_its_form_finishes_and_draws(site, browser, edit_keys):
    w = Watched(browser)
    try:
        page = w.page
        _open_portal(w, site, "account")
        page.fill("#key", edit_keys[Role.analyst])
        page.click("#sign-in")
        page.wait_for_selector("body[data-figures=ready]")
        page.click("#tab-run")
        page.wait_for_selector("#run-form #run")
        page.select_option("#process", "hotspots")
        page.wait_for_selector("#in-permutations")
        # the form comes from the description: defaults, and the region preselected in the example's reference
        assert page.input_value("#in-variable") == "poor_persons"
        assert "region=tieling-demo" in page.input_value("#in-features")
        page.fill("#in-permutations", "99")
        page.click("#run")
        page.wait_for_selector("#job-status[data-job]", timeout=120_000)
        page.wait_for_selector("body[data-result]")
        page.wait_for_load_state("networkidle")
        result = page.get_attribute("body", "data-result")
        style = httpx.get(f"{site}/collections/{result}/styles/default", params={"f": "json"},
                          headers={"Authorization": f"Bearer {edit_keys[Role.analyst]}"}).json()
        colours = [c["color"] for c in style["classes"]]
        seen = _colour_pixels(page.locator("#map").screenshot(), colours)
        assert sum(n >= 20 for n in seen.values()) >= 2, seen  # hot and cold spots are on the map
        # ... with their legend, one row per class of the result's style
        assert page.locator("#legend-run .cls").count() == len(style["classes"])
        page.click("#tab-siting")
        page.wait_for_selector(f"#results-siting [data-collection='{result}']")  # the user's own result is listed
        assert page.locator("#legend-siting .cls").count() == len(style["classes"])  # the drawn result's legend
        screenshot(page, "portal-analysis")
        assert w.problems == []
    finally:
        w.close()


def test_the_report_prints_with_the_map_on_page_one_and_its_tables_download(site, browser, tmp_path):
    overview = httpx.get(f"{site}/regions/{REGION}/overview").json()
    county = max((c for c in overview["children"] if not c["suppressed"]), key=lambda c: c["villages"])["code"]
    w = Watched(browser, "zh-CN")
    try:
        page = w.page
        page.goto(f"{site}/portal/report?region={REGION}&unit={county}")
        page.wait_for_selector("body[data-map=drawn]", timeout=30_000)
        assert "不予公开" in page.inner_text("body") or "贫困发生率" in page.inner_text("body")
        page.emulate_media(media="print")
        pdf = tmp_path / "report.pdf"
        page.pdf(path=str(pdf), format="A4", print_background=True)
        assert w.problems == []
    finally:
        w.close()
    subprocess.run(["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", str(pdf), str(tmp_path / "p")], check=True)
    first = next(tmp_path.glob("p-*1.png"))
    seen = _colour_pixels(first.read_bytes(), COLORS)
    assert sum(n >= 100 for n in seen.values()) >= 3, seen  # the choropleth is on page 1
    pages = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert "A4" in pages or "595.2" in pages  # A4 (595 × 842 pt)

    xlsx = httpx.get(f"{site}/regions/{REGION}/overview", params={"unit": county, "f": "xlsx"},
                     headers={"Accept-Language": "zh-CN"})
    assert xlsx.status_code == 200 and xlsx.headers["content-type"].startswith("application/vnd.openxmlformats")
    from openpyxl import load_workbook
    wb = load_workbook(io.BytesIO(xlsx.content))
    assert wb.sheetnames == ["主要指标", "下级单位", "项目", "设施", "历年变化"]
    doc = httpx.get(f"{site}/regions/{REGION}/overview", params={"unit": county}).json()
    values = [row[1].value for row in wb["主要指标"].iter_rows(min_row=4)]
    assert values == [pytest.approx(f["value"]) if f["value"] is not None else "不公开" for f in doc["figures"]]
    units = [row[0].value for row in wb["下级单位"].iter_rows(min_row=2)]
    assert units == [c["code"] for c in doc["children"]]


@pytest.mark.parametrize(("path", "width"), [("/portal", 1366), ("/portal", 820),
                                             (f"/portal/report?region={REGION}", 1024)])
def test_axe_finds_no_serious_or_critical_violation(site, browser, path, width):
    w = Watched(browser, width=width, height=1000)
    try:
        w.page.goto(site + path)
        w.page.wait_for_selector("body[data-map=drawn]", timeout=30_000)
        w.page.evaluate(AXE.read_text(encoding="utf-8"))  # evaluated by the driver: not subject to the page's CSP
        found = w.page.evaluate("() => axe.run(document, {resultTypes: ['violations']}).then(r => r.violations"
                                ".map(v => ({id: v.id, impact: v.impact, n: v.nodes.length, "
                                "where: v.nodes.slice(0, 3).map(n => n.target.join(' '))})))")
        bad = [v for v in found if v["impact"] in ("serious", "critical")]
        assert bad == [], bad
    finally:
        w.close()
