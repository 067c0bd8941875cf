"""The telecom indicator definitions as portable SQL (DuckDB and Spark SQL run the same text).

Everything after reading works on one normalised event table ``ev``::

    dev  BIGINT   the device id hashed to 64 bits on read
    cell BIGINT   the H3 cell of the event at the chosen resolution, as its 64-bit integer
    lat, lon DOUBLE  WGS84 position of the event (or of its tower)
    t    BIGINT   local time (``--tz``) as seconds since 1970-01-01T00:00 local

so that every definition is integer arithmetic and standard aggregates/window functions. Local time is UTC plus
the zone's fixed offset over the period (zones with a DST change inside the period are refused by the caller:
the arithmetic is DST-free by construction). 1970-01-01 was a Thursday, so ``(day + 3) % 7`` is 0 on Mondays.

Definitions (docs/methodology.md#telecom-indicators; the issue's exact wording):

* night: local 21:00–06:59, counted to the night that starts at 21:00 (night id = floor((t − 21 h) / 1 day));
* working hours: Monday–Friday 09:00–16:59;
* home cell: the most frequent cell over night events, for devices seen on ≥ ``min_nights`` distinct nights;
* day cell: the most frequent cell over working-hour events;
* ties: the smallest H3 cell id as a 64-bit integer (H3 indexes have the top bit clear, so signed order is
  the unsigned order);
* radius of gyration: sqrt(mean(d(r_i, r̄)²)) with r̄ the mean latitude/longitude of the device's events and d
  the great-circle distance on the mean Earth sphere (R = 6371.0088 km), in kilometres.
"""

from __future__ import annotations

from dataclasses import dataclass

EARTH_RADIUS_KM = 6371.0088
NIGHT_START_S = 21 * 3600


@dataclass(frozen=True)
class Dialect:
    """The few spellings that differ between engines."""

    name: str
    median: str  # format with {x}

    def med(self, x: str) -> str:
        return self.median.format(x=x)


DUCKDB = Dialect("duckdb", "quantile_cont({x}, 0.5)")
SPARK = Dialect("spark", "percentile({x}, 0.5)")

HOUR = "CAST(FLOOR((t % 86400) / 3600) AS INTEGER)"
DAY = "CAST(FLOOR(t / 86400) AS BIGINT)"
NIGHT_ID = f"CAST(FLOOR((t - {NIGHT_START_S}) / 86400) AS BIGINT)"
IS_NIGHT = f"({HOUR} >= 21 OR {HOUR} < 7)"
IS_WORK = f"((({DAY} + 3) % 7) < 5 AND {HOUR} >= 9 AND {HOUR} < 17)"


def haversine_km(lat1: str, lon1: str, lat2: str, lon2: str) -> str:
    return (f"2 * {EARTH_RADIUS_KM} * ASIN(SQRT(POWER(SIN(RADIANS({lat2} - {lat1}) / 2), 2) + "
            f"COS(RADIANS({lat1})) * COS(RADIANS({lat2})) * POWER(SIN(RADIANS({lon2} - {lon1}) / 2), 2)))")


def presence() -> str:
    """Distinct devices per (cell, local hour of day) over the period."""
    return f"SELECT cell, {HOUR} AS hour, COUNT(DISTINCT dev) AS n_devices FROM ev GROUP BY cell, {HOUR}"


def _modal(where: str, extra_having: str = "") -> str:
    return (
        "SELECT dev, cell FROM ("
        " SELECT dev, cell, ROW_NUMBER() OVER (PARTITION BY dev ORDER BY n DESC, cell ASC) AS rk FROM ("
        f"  SELECT dev, cell, COUNT(*) AS n FROM ev WHERE {where} GROUP BY dev, cell) c) r"
        f" WHERE rk = 1{extra_having}")


def home_cells(min_nights: int) -> str:
    """dev → home cell (modal night cell) for devices with events on at least min_nights distinct nights."""
    return (
        f"SELECT m.dev, m.cell AS home_cell FROM ({_modal(IS_NIGHT)}) m JOIN ("
        f" SELECT dev, COUNT(DISTINCT {NIGHT_ID}) AS nights FROM ev WHERE {IS_NIGHT} GROUP BY dev) n"
        f" ON n.dev = m.dev WHERE n.nights >= {int(min_nights)}")


def most_nights() -> str:
    """The most distinct nights any device was seen on (what ``min_nights`` can ask for at most)."""
    return f"SELECT MAX(nights) FROM (SELECT dev, COUNT(DISTINCT {NIGHT_ID}) AS nights FROM ev WHERE {IS_NIGHT} " \
        "GROUP BY dev) n"


def day_cells() -> str:
    """dev → day cell (modal working-hour cell)."""
    return f"SELECT dev, cell AS day_cell FROM ({_modal(IS_WORK)}) m"


def gyration() -> str:
    """dev → radius of gyration in km."""
    d = haversine_km("c.mlat", "c.mlon", "e.lat", "e.lon")
    return (
        f"SELECT e.dev, SQRT(AVG(POWER({d}, 2))) AS rg_km FROM ev e JOIN ("
        " SELECT dev, AVG(lat) AS mlat, AVG(lon) AS mlon FROM ev GROUP BY dev) c ON c.dev = e.dev GROUP BY e.dev")


def residents() -> str:
    return "SELECT home_cell AS cell, COUNT(*) AS n_devices FROM home GROUP BY home_cell"


def commuting_od() -> str:
    """Devices per (home cell, day cell), equal cells included."""
    return ("SELECT h.home_cell AS origin_cell, d.day_cell AS dest_cell, COUNT(*) AS n_devices "
            "FROM home h JOIN day d ON d.dev = h.dev GROUP BY h.home_cell, d.day_cell")


def gyration_by_home(d: Dialect) -> str:
    return (f"SELECT h.home_cell AS cell, COUNT(*) AS n_devices, {d.med('g.rg_km')} AS median_rg_km "
            "FROM home h JOIN gyr g ON g.dev = h.dev GROUP BY h.home_cell")


def residents_by_admin() -> str:
    """Residents per admin unit, from the device-level table (never by summing published cells)."""
    return ("SELECT a.admin_code, COUNT(DISTINCT h.dev) AS n_devices FROM home h JOIN cell_admin a "
            "ON a.cell = h.home_cell GROUP BY a.admin_code")


def od_by_admin() -> str:
    return ("SELECT o.admin_code AS origin_admin, x.admin_code AS dest_admin, COUNT(DISTINCT h.dev) AS n_devices "
            "FROM home h JOIN day d ON d.dev = h.dev JOIN cell_admin o ON o.cell = h.home_cell "
            "JOIN cell_admin x ON x.cell = d.day_cell GROUP BY o.admin_code, x.admin_code")


def facility_visits() -> str:
    """(dev, class): devices with at least one event in a cell holding a facility of the class."""
    return "SELECT DISTINCT e.dev, f.class FROM ev e JOIN fac_cell f ON f.cell = e.cell"


def nearest_facility_km() -> str:
    """(cell, class, km): great-circle distance from each home cell's centre to the nearest facility cell."""
    dist = haversine_km("hc.lat", "hc.lon", "f.lat", "f.lon")
    return (f"SELECT hc.cell, f.class, MIN({dist}) AS km FROM cell_centre hc CROSS JOIN fac_cell f "
            "GROUP BY hc.cell, f.class")


def service_access(d: Dialect) -> str:
    """Per home cell and facility class: share of residents with ≥ 1 event in a facility cell of the class, and
    the median great-circle distance from the home cell's centre to the nearest such cell's centre.

    Needs ``fac_cell(cell, class, lat, lon)`` (cells holding a facility, with their centres) and
    ``cell_centre(cell, lat, lon)`` for home cells.
    """
    return (
        f"WITH visited AS ({facility_visits()}), classes AS (SELECT DISTINCT class FROM fac_cell), "
        f"nearest AS ({nearest_facility_km()}) "
        "SELECT h.home_cell AS cell, c.class, COUNT(*) AS n_devices, "
        "AVG(CASE WHEN v.dev IS NULL THEN CAST(0 AS DOUBLE) ELSE CAST(1 AS DOUBLE) END) AS share_visited, "
        f"{d.med('n.km')} AS median_km_to_nearest "
        "FROM home h CROSS JOIN classes c "
        "LEFT JOIN visited v ON v.dev = h.dev AND v.class = c.class "
        "JOIN nearest n ON n.cell = h.home_cell AND n.class = c.class "
        "GROUP BY h.home_cell, c.class")


def out_migration() -> str:
    """Share of devices (with a home in both periods) whose home admin unit changed since the previous period,
    per previous home admin unit. Needs ``prev_home(dev, home_cell)``."""
    return (
        "SELECT pa.admin_code, COUNT(*) AS n_devices, "
        "AVG(CASE WHEN pa.admin_code <> ca.admin_code THEN CAST(1 AS DOUBLE) ELSE CAST(0 AS DOUBLE) END) "
        "AS share_moved "
        "FROM prev_home p JOIN home h ON h.dev = p.dev "
        "JOIN cell_admin pa ON pa.cell = p.home_cell JOIN cell_admin ca ON ca.cell = h.home_cell "
        "GROUP BY pa.admin_code")
