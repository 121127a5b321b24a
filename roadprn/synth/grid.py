"""The synthetic scene's pixel grid: size, CRS and an affine transform from metres.

Scenes are built in a local metric frame (pixel centres ``resolution_m`` apart); the grid
turns that frame into CRS coordinates. For a geographic CRS the resolution in metres becomes
degrees at the origin latitude, so pixels are square on the ground, not in degrees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from affine import Affine
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from roadprn.errors import ConfigError

MAX_RESOLUTION_M = 5.0  # coarser pixels make every road sub-pixel (and the network huge)


@dataclass(frozen=True)
class SynthGrid:
    """Raster size and georeferencing of a synthetic scene: the fields (and their order) of
    :class:`roadprn.raster.labels.SceneGrid`, plus the metres per pixel the scene is drawn at."""

    transform: Affine
    width: int
    height: int
    crs: CRS
    resolution_m: float

    @property
    def width_m(self) -> float:
        return self.width * self.resolution_m

    @property
    def height_m(self) -> float:
        return self.height * self.resolution_m

    @property
    def metres_to_crs(self) -> Affine:
        """Local metres (x right, y down from the top-left corner) to CRS coordinates."""
        return self.transform * Affine.scale(1.0 / self.resolution_m)


def parse_crs(text: str) -> CRS:
    try:
        return CRS.from_user_input(text)
    except CRSError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else "unknown CRS"
        raise ConfigError(f"--crs {text!r} is not a CRS pyproj understands: {first_line}") from exc


def default_origin(crs: CRS) -> tuple[float, float]:
    """Top-left corner at the centre of the CRS's area of use (0, 0 when it has none)."""
    area = crs.area_of_use
    if area is None:
        return (0.0, 0.0)
    lon = (area.west + area.east) / 2.0 if area.west <= area.east else 0.0
    lat = (area.south + area.north) / 2.0
    if crs.is_geographic:
        return (round(lon, 3), round(lat, 3))
    x, y = Transformer.from_crs(CRS.from_epsg(4326), crs, always_xy=True).transform(lon, lat)
    if not (math.isfinite(x) and math.isfinite(y)):
        return (0.0, 0.0)
    return (round(x, -2), round(y, -2))


def degrees_per_metre(crs: CRS, latitude: float) -> tuple[float, float]:
    """(x, y) size of one metre in degrees at ``latitude`` on the CRS's ellipsoid."""
    ellipsoid = crs.ellipsoid
    a = ellipsoid.semi_major_metre if ellipsoid else 6378137.0
    inv_f = ellipsoid.inverse_flattening if ellipsoid else 298.257223563
    e2 = 0.0 if not inv_f else (2.0 - 1.0 / inv_f) / inv_f
    phi = math.radians(latitude)
    w = math.sqrt(1.0 - e2 * math.sin(phi) ** 2)
    metres_per_deg_lat = math.pi * a * (1.0 - e2) / (180.0 * w**3)
    metres_per_deg_lon = math.pi * a * math.cos(phi) / (180.0 * w)
    return 1.0 / metres_per_deg_lon, 1.0 / metres_per_deg_lat


def make_grid(width: int, height: int, crs: str | CRS = "EPSG:32631", resolution_m: float = 0.5,
              origin: tuple[float, float] | None = None) -> SynthGrid:
    """Build the grid; ``origin`` is the top-left corner in CRS units (x, y / lon, lat)."""
    if width < 1 or height < 1:
        raise ConfigError(f"--size must be positive, got {width}x{height}")
    if not (0 < resolution_m <= MAX_RESOLUTION_M):
        raise ConfigError(f"--resolution must be in (0, {MAX_RESOLUTION_M:g}] metres (roads are "
                          f"3-22 m wide), got {resolution_m}")
    crs = crs if isinstance(crs, CRS) else parse_crs(crs)
    if not (crs.is_geographic or crs.is_projected):
        raise ConfigError(f"--crs {crs.name!r} is neither geographic nor projected")
    ox, oy = origin if origin is not None else default_origin(crs)
    if crs.is_geographic:
        if not -89.0 < oy < 89.0:
            raise ConfigError(f"origin latitude {oy} is outside (-89, 89)")
        deg_x, deg_y = degrees_per_metre(crs, oy)
        step_x, step_y = resolution_m * deg_x, resolution_m * deg_y
    else:
        unit = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
        step_x = step_y = resolution_m / unit
    transform = Affine(step_x, 0.0, ox, 0.0, -step_y, oy)
    return SynthGrid(transform, width, height, crs, resolution_m)
