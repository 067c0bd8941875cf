"""GCJ-02 and BD-09 conversions against published point pairs and their own forward formulas."""

from __future__ import annotations

import numpy as np
import pytest

from app.errors import InvalidParameter
from app.ingest.coords import (
    bd09_to_gcj02,
    bd09_to_wgs84,
    gcj02_to_bd09,
    gcj02_to_wgs84,
    parse_source_crs,
    wgs84_to_gcj02,
)

# (WGS84 lat, lon, GCJ-02 lat, lon): the test vectors of googollee/eviltransform (Shanghai, Shenzhen, Beijing),
# computed there by an independent implementation of the public formula.
PAIRS = [
    (31.1774276, 121.5272106, 31.17530398364597, 121.531541859215),
    (22.543847, 113.912316, 22.540796131694766, 113.9171764808363),
    (39.911954, 116.377817, 39.91334545536069, 116.38404722455657),
]


@pytest.mark.parametrize(("wlat", "wlon", "glat", "glon"), PAIRS)
def test_wgs84_to_gcj02_matches_published_pairs(wlat, wlon, glat, glon):
    x, y = wgs84_to_gcj02(np.array([wlon]), np.array([wlat]))
    assert x[0] == pytest.approx(glon, abs=1e-9)
    assert y[0] == pytest.approx(glat, abs=1e-9)


@pytest.mark.parametrize(("wlat", "wlon", "glat", "glon"), PAIRS)
def test_gcj02_to_wgs84_inverts_to_below_a_millimetre(wlat, wlon, glat, glon):
    x, y = gcj02_to_wgs84(np.array([glon]), np.array([glat]))
    assert abs(x[0] - wlon) < 1e-8 and abs(y[0] - wlat) < 1e-8  # 1e-8° ≈ 1 mm


def test_offset_is_hundreds_of_metres_inside_china_and_zero_outside():
    lon, lat = np.array([123.84, 2.35]), np.array([42.29, 48.85])  # Tieling; Paris
    x, y = wgs84_to_gcj02(lon, lat)
    assert 100 < np.hypot((x[0] - lon[0]) * 82_000, (y[0] - lat[0]) * 111_000) < 1000
    assert x[1] == lon[1] and y[1] == lat[1]


def test_bd09_round_trip_and_offset():
    rng = np.random.default_rng(1)
    lon, lat = rng.uniform(100, 130, 500), rng.uniform(20, 50, 500)
    gx, gy = wgs84_to_gcj02(lon, lat)
    bx, by = gcj02_to_bd09(gx, gy)
    # Baidu's offset: about +0.0065° east and +0.006° north of GCJ-02
    assert np.all(np.abs(bx - gx - 0.0065) < 0.0005) and np.all(np.abs(by - gy - 0.006) < 0.0005)
    rx, ry = bd09_to_gcj02(bx, by)
    assert np.max(np.abs(rx - gx)) < 1e-9 and np.max(np.abs(ry - gy)) < 1e-9
    wx, wy = bd09_to_wgs84(bx, by)
    assert np.max(np.abs(wx - lon)) < 1e-8 and np.max(np.abs(wy - lat)) < 1e-8


def test_gcj_inverse_vectorised_over_a_grid():
    lon, lat = np.meshgrid(np.linspace(75, 135, 61), np.linspace(18, 53, 36))
    gx, gy = wgs84_to_gcj02(lon.ravel(), lat.ravel())
    wx, wy = gcj02_to_wgs84(gx, gy)
    assert np.max(np.abs(wx - lon.ravel())) < 1e-8 and np.max(np.abs(wy - lat.ravel())) < 1e-8


def test_source_crs_parsing():
    assert parse_source_crs("gcj02").kind == "gcj02"
    assert parse_source_crs("GCJ-02").kind == "gcj02"
    assert parse_source_crs("bd09").kind == "bd09"
    utm = parse_source_crs("EPSG:26916")
    assert utm.kind == "epsg" and utm.crs.to_epsg() == 26916
    assert parse_source_crs("4326").is_wgs84
    x, y = utm.to_wgs84(np.array([941396.6]), np.array([3521764.0]))  # Appling County, GA (libpysal X, Y)
    assert x[0] == pytest.approx(-82.2856, abs=0.1) and y[0] == pytest.approx(31.7534, abs=0.1)
    with pytest.raises(InvalidParameter):
        parse_source_crs("EPSG:999999")
