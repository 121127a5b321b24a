"""Part of a scene: a pixel window or a bounding box, seen as a scene of its own.

``--window`` and ``--bbox`` work like ``gdal_translate -srcwin`` / ``-projwin``: the outputs
cover exactly that area, on the scene's own pixel grid (a bounding box is widened to whole
pixels). The area is handed to the pipeline as a GDAL VRT of the scene cut to the window, so
every stage (validation, normalisation, resampling, tiling, refinement, vectorisation) runs on
it unchanged, and the scene's nodata, alpha, masks and overviews come along.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.windows import Window

from roadprn.errors import ConfigError, InputError, one_line
from roadprn.raster.gdal_env import GDAL_ERRORS
from roadprn.raster.scene import SceneInfo


def four_numbers(text: str, kind: type[int] | type[float]) -> list[Any] | None:
    """``"a,b,c,d"`` -> four finite numbers of ``kind`` (a window, a bbox); None if it is not
    that (the callers say what they expected, in their own option's words)."""
    try:
        values = [kind(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        return None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        return None
    return values


def bbox_window(info: SceneInfo, bbox: tuple[float, float, float, float],
                bbox_crs: str | None = None) -> Window:
    """The smallest window of whole scene pixels covering ``bbox`` (in ``bbox_crs``, else the
    scene's CRS), clipped to the scene; an area outside the scene is an error."""
    if info.transform.b != 0 or info.transform.d != 0:
        raise InputError(f"{info.path}: the scene's grid is rotated; --bbox needs a north-up "
                         "scene (use --window)")
    bounds = bbox
    if bbox_crs is not None:
        if info.crs is None:
            raise InputError(f"{info.path}: the scene has no CRS, so a --bbox in {bbox_crs} "
                             "cannot be placed on it (give the bbox in pixel coordinates)")
        bounds = _to_scene_crs(bbox, CRS.from_user_input(bbox_crs), info)
    inverse = ~info.transform
    corners = [inverse * (x, y) for x in (bounds[0], bounds[2]) for y in (bounds[1], bounds[3])]
    cols = [c for c, _ in corners]
    rows = [r for _, r in corners]
    # whole pixels only: a pixel counts when the box covers any of it (a hair of float noise
    # at an exact pixel edge does not pull in the neighbour)
    eps = 1e-6
    col0, row0 = math.floor(min(cols) + eps), math.floor(min(rows) + eps)
    col1, row1 = math.ceil(max(cols) - eps), math.ceil(max(rows) - eps)
    window = _clipped(info, col0, row0, col1, row1)
    if window is None:
        left, top = info.transform * (0, 0)
        right, bottom = info.transform * (info.width, info.height)
        scene_bounds = _fmt((min(left, right), min(top, bottom), max(left, right),
                             max(top, bottom)))
        given = f" ({bbox_crs})" if bbox_crs else ""
        raise InputError(f"{info.path}: --bbox {_fmt(bbox)}{given} does not overlap the scene "
                         f"(its bounds are {scene_bounds} in {info.crs_name})")
    return window


def pixel_window(info: SceneInfo, window: tuple[int, int, int, int]) -> Window:
    """``COL,ROW,WIDTH,HEIGHT`` checked against the scene (clipped where it runs off the edge,
    like ``gdal_translate -srcwin``; an error when nothing of it is inside)."""
    col, row, width, height = window
    clipped = _clipped(info, col, row, col + width, row + height)
    if clipped is None:
        raise InputError(f"{info.path}: --window {','.join(map(str, window))} lies outside the "
                         f"scene ({info.width} x {info.height} px)")
    return clipped


def area_window(info: SceneInfo, window: list[int] | None, bbox: list[float] | None,
                bbox_crs: str | None) -> Window | None:
    """The window of ``info`` that ``input.window`` / ``input.bbox`` select; None = all of it."""
    if window is not None:
        return pixel_window(info, (window[0], window[1], window[2], window[3]))
    if bbox is not None:
        return bbox_window(info, (bbox[0], bbox[1], bbox[2], bbox[3]), bbox_crs)
    return None


def write_window_vrt(scene: str, window: Window, dst: Path) -> Path:
    """A VRT of ``scene`` cut to ``window`` (GDAL's own ``vrt://?srcwin=``, so masks, alpha,
    nodata and colour interpretation are carried as ``gdal_translate -of VRT`` carries them)."""
    import rasterio.shutil

    if "?" in scene or "&" in scene:
        raise InputError(f"{scene}: --window/--bbox cannot address a file whose name holds '?' "
                         "or '&' (rename it)")
    source = scene if scene.startswith("/vsi") else str(Path(scene).resolve())
    spec = (f"vrt://{source}?srcwin={int(window.col_off)},{int(window.row_off)},"
            f"{int(window.width)},{int(window.height)}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        rasterio.shutil.copy(spec, str(dst), driver="VRT")
    except GDAL_ERRORS as exc:
        raise InputError(f"{scene}: cannot cut the window {window_text(window)} "
                         f"({one_line(exc)})") from None
    return dst


def window_text(window: Window) -> str:
    """``COL,ROW,WIDTH,HEIGHT``, as ``--window`` takes it and outputs' tags record it."""
    return ",".join(str(int(v)) for v in (window.col_off, window.row_off, window.width,
                                          window.height))


def _clipped(info: SceneInfo, col0: int, row0: int, col1: int, row1: int) -> Window | None:
    col0, row0 = max(0, col0), max(0, row0)
    col1, row1 = min(info.width, col1), min(info.height, row1)
    if col1 <= col0 or row1 <= row0:
        return None
    return Window(col0, row0, col1 - col0, row1 - row0)


def _to_scene_crs(bbox: tuple[float, float, float, float], crs: CRS,
                  info: SceneInfo) -> tuple[float, float, float, float]:
    from rasterio.warp import transform_bounds

    try:
        # densified edges: a lon/lat box is curved in UTM
        left, bottom, right, top = transform_bounds(crs, info.crs, *bbox, densify_pts=21)
    except (CRSError, *GDAL_ERRORS) as exc:
        raise ConfigError(f"--bbox {_fmt(bbox)}: cannot transform from {crs} to the scene's "
                          f"{info.crs_name} ({one_line(exc)})") from None
    if not all(math.isfinite(v) for v in (left, bottom, right, top)):
        raise InputError(f"{info.path}: --bbox {_fmt(bbox)} ({crs}) has no place in the scene's "
                         f"{info.crs_name}")
    return left, bottom, right, top


def _fmt(values: tuple[float, ...]) -> str:
    return ",".join(f"{v:.10g}" for v in values)
