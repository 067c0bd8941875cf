"""The method, written down (docs/methodology.md) and served (/docs/methodology): every section with a formula is
checked by a test that names it (``methodology#<section>``), process descriptions link to their sections, and the
formulas no other test covered are checked here against hand-computed or published values."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import shapely

from app.analysis import autocorrelation as ac
from app.analysis.spatial import WeightsSpec, build_weights, great_circle_km
from app.ingest.regions import IPL_PER_DAY_USD
from app.processes.catalogue import PROCESSES
from app.processes.poverty import registry_deprivations
from app.telecom.release import _laplace_counts

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "methodology.md"


def formula_sections() -> list[str]:
    """Anchors of the sections that state a formula (marked **Formula.**)."""
    text = DOC.read_text(encoding="utf-8")
    out = []
    for part in re.split(r"\n(?=#{2,3} )", text):
        m = re.match(r"#{2,3} .*\{#([a-z0-9-]+)\}", part)
        if m and "**Formula.**" in part:
            out.append(m.group(1))
    return out


def test_every_formula_has_a_test_that_names_its_section():
    tests = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").glob("test_*.py"))
    sections = formula_sections()
    assert len(sections) >= 25
    missing = [a for a in sections if f"methodology#{a}" not in tests]
    assert missing == [], f"formulas without a test naming their section: {missing}"


def test_no_reference_to_a_document_users_do_not_have():
    for path in [ROOT / "README.md", *(ROOT / "app").rglob("*.py"), *(ROOT / "app" / "templates").glob("*.html")]:
        assert "DOMAIN" not in path.read_text(encoding="utf-8"), path


async def test_the_method_is_served_and_processes_link_to_it(api):
    from app.ogc.docs import anchors

    page = await api.get("/docs/methodology")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for anchor in formula_sections():
        assert f'id="{anchor}"' in page.text, anchor
    assert "{#" not in page.text and "<table>" in page.text and "√(C · T)" in page.text
    raw = await api.get("/docs/methodology.md")
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("text/markdown")
    known = anchors()
    for pid, process in PROCESSES.items():
        assert process.method and set(process.method) <= known, pid
        body = (await api.get(f"/processes/{pid}")).json()
        links = [lk for lk in body["links"] if lk["rel"] == "describedby"]
        assert [lk["href"].rsplit("#", 1)[1] for lk in links] == list(process.method), pid
        html = (await api.get(f"/processes/{pid}", params={"f": "html"})).text
        assert f'/docs/methodology#{process.method[0]}"' in html, pid


# --------------------------------------------------------------------------------------------- formulas
def test_default_poverty_line():
    # checks the method: methodology#poverty-lines
    assert float(IPL_PER_DAY_USD) * 365 == pytest.approx(1095.0)


def test_great_circle_distance():
    # checks the method: methodology#distances — one degree of longitude on the equator is 2πR/360
    r = 6371.0088
    d = great_circle_km(np.array([[0.0, 0.0], [10.0, 60.0]]), np.array([[1.0, 0.0], [11.0, 60.0]]))
    assert d[0, 0] == pytest.approx(2 * math.pi * r / 360, rel=1e-12)
    # at 60° N the haversine of a 1° step: 2R·asin(cos 60° · sin 0.5°)
    assert d[1, 1] == pytest.approx(2 * r * math.asin(math.cos(math.radians(60)) * math.sin(math.radians(0.5))),
                                    rel=1e-12)


def test_weights_defaults_and_islands():
    # checks the method: methodology#weights
    squares = np.array([shapely.box(x, y, x + 1, y + 1) for x, y in ((0, 0), (1, 0), (0, 1), (1, 1))]
                       + [shapely.box(10, 10, 11, 11)], dtype=object)
    xy = np.array([[g.centroid.x, g.centroid.y] for g in squares])
    built = build_weights(squares, xy, WeightsSpec(None, 8, None))
    assert built.type == "queen" and built.islands_attached == 1  # the far square had no neighbour
    assert sorted(built.w.neighbors[0]) == [1, 2, 3]  # queen: corners count
    assert built.w.neighbors[4] == [3]  # attached to its nearest neighbour
    rook = build_weights(squares[:4], xy[:4], WeightsSpec("rook", 8, None))
    assert sorted(rook.w.neighbors[0]) == [1, 2]
    points = build_weights(np.array([shapely.Point(*p) for p in xy], dtype=object), xy, WeightsSpec(None, 2, None))
    assert points.type == "knn" and all(len(v) == 2 for v in points.w.neighbors.values())


def test_empirical_bayes_rate_matches_esda_docstring():
    # checks the method: methodology#eb-rate (esda.smoothing.assuncao_rate's documented values)
    e = np.array([30, 25, 25, 15, 33, 21, 30, 20])
    b = np.array([100, 100, 110, 90, 100, 90, 110, 90])
    z = ac.eb_rate(e, b)
    assert z[:4] == pytest.approx([1.03843594, -0.04099089, -0.56250375, -1.73061861], abs=1e-8)
    # by hand: b = Σe/ΣP, a = ΣP(r − b)²/ΣP − b/P̄, z = (r − b)/√(a + b/P)
    r, bb = e / b, e.sum() / b.sum()
    a = (b * (r - bb) ** 2).sum() / b.sum() - bb / (b.sum() / len(b))
    assert z == pytest.approx((r - bb) / np.sqrt(a + bb / b), abs=1e-12)


def test_laplace_noise_is_rounded_and_clamped():
    # checks the method: methodology#telecom-dp — round(count + Lap(1/ε)), never below 0; scale 1/ε
    rng = np.random.default_rng(1)
    counts = np.full(200_000, 40.0)
    noisy = _laplace_counts(counts, 0.5, rng)
    assert noisy.dtype == np.int64 and (noisy >= 0).all()
    assert abs(noisy.mean() - 40.0) < 0.05 and np.mean(np.abs(noisy - 40.0)) == pytest.approx(2.0, rel=0.03)
    assert (_laplace_counts(np.zeros(1000), 0.1, rng) >= 0).all()


def test_registry_deprivations_by_hand():
    # checks the method: methodology#mpi-registry
    rows = [
        {"net_income_pc": 3000, "max_school_years": 9, "out_of_school_children": 0, "cooking_fuel": "firewood",
         "toilet": "flush", "water_safe": True, "water_difficulty": False, "electricity": True,
         "house_safety_grade": "D"},
        {"net_income_pc": 5000, "food_insecure": True, "max_school_years": 0, "out_of_school_children": 1,
         "cooking_fuel": "electricity", "toilet": "dry", "water_safe": True, "water_difficulty": True,
         "electricity": False, "house_safety_grade": "B"},
        {"net_income_pc": None, "max_school_years": None, "cooking_fuel": None, "toilet": None, "water_safe": None,
         "electricity": None, "house_safety_grade": None},
    ]
    got = registry_deprivations(rows, 4000, {"dry", "none"})
    assert got["nutrition"] == [1.0, 1.0, 0.0]
    assert got["years_of_schooling"] == [0.0, 1.0, None]
    assert got["school_attendance"] == [0.0, 1.0, 0.0]
    assert got["cooking_fuel"][:2] == [1.0, 0.0] and got["cooking_fuel"][2] is None
    assert got["sanitation"][:2] == [0.0, 1.0] and got["drinking_water"][:2] == [0.0, 1.0]
    assert got["electricity"][:2] == [0.0, 1.0] and got["housing"][:2] == [1.0, 0.0]
    assert got["housing"][2] is None
