"""Coordinate reference systems for OGC API - Features Part 2 (CRS by reference).

Features are stored in EPSG:4326 with longitude first, i.e. in CRS84. Output in another CRS is
reprojected by PostGIS (``ST_Transform``); for CRSs whose first axis is northing or latitude by their
EPSG definition (EPSG:4326, EPSG:4490 …), coordinates are swapped after the transformation, as
Part 2 requires (/req/crs/crs-uri: the axis order of the CRS definition applies).

Axis order and the geographic/projected distinction are read from the EPSG database through pyproj,
so a region's own metric CRS needs no entry here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from pyproj import CRS
from pyproj.exceptions import CRSError

from app.errors import InvalidParameter

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
EPSG_URI = "http://www.opengis.net/def/crs/EPSG/0/{}"
# Offered for every collection, besides the metric CRSs of the regions loaded.
BASE_SRIDS: tuple[int, ...] = (4326, 3857, 4490)

_URI = re.compile(r"^https?://www\.opengis\.net/def/crs/(?P<auth>EPSG|OGC)/(?P<ver>[^/]+)/(?P<code>[^/]+)$")
_CURIE = re.compile(r"^\[?(?P<auth>EPSG|OGC):(?P<code>[A-Za-z0-9.]+)\]?$", re.IGNORECASE)


@dataclass(frozen=True)
class Crs:
    uri: str
    srid: int  # the PostGIS SRID the coordinates are computed in
    lat_first: bool  # the CRS's first axis is latitude/northing: swap after transforming
    geographic: bool

    @property
    def is_storage(self) -> bool:
        """Output needs neither reprojection nor axis swapping."""
        return self.srid == 4326 and not self.lat_first

    @property
    def precision(self) -> int:
        """Decimals written: 7 for degrees (≈1 cm), 3 for metres (1 mm)."""
        return 7 if self.geographic else 3


CRS84_DEF = Crs(CRS84, 4326, False, True)


@lru_cache(maxsize=64)
def epsg(code: int) -> Crs:
    try:
        crs = CRS.from_epsg(code)
    except CRSError:
        raise InvalidParameter(f"EPSG:{code} is not a known coordinate reference system.") from None
    first = crs.axis_info[0].direction.lower() if crs.axis_info else "east"
    return Crs(EPSG_URI.format(code), code, first in ("north", "south"), crs.is_geographic)


def parse_crs(raw: str, supported: tuple[str, ...], name: str = "crs") -> Crs:
    """A CRS URI (or safe CURIE such as ``[EPSG:3857]``) among those a collection offers; otherwise 400."""
    text = raw.strip()
    m = _URI.match(text) or _CURIE.match(text)
    uri: str | None = None
    if m:
        auth, code = m.group("auth").upper(), m.group("code")
        if auth == "OGC" and code.upper() == "CRS84":
            uri = CRS84
        elif auth == "EPSG" and code.isdigit():
            uri = EPSG_URI.format(int(code))
    if uri is None or uri not in supported:
        raise InvalidParameter(
            f"{name}: {raw!r} is not a coordinate reference system this collection offers. "
            f"Supported: {', '.join(supported)}."
        )
    if uri == CRS84:
        return CRS84_DEF
    return epsg(int(uri.rsplit("/", 1)[1]))


def supported_uris(region_srids: tuple[int, ...]) -> tuple[str, ...]:
    """CRS84 first (the default), then the common ones, then the regions' metric CRSs."""
    out = [CRS84] + [EPSG_URI.format(s) for s in BASE_SRIDS]
    out += [EPSG_URI.format(s) for s in sorted(set(region_srids)) if EPSG_URI.format(s) not in out]
    return tuple(out)


def content_crs_header(crs: Crs) -> str:
    return f"<{crs.uri}>"
