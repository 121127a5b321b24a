"""The golden comparison lets through what differs between CPUs and nothing a change of the
outputs would produce."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import LineString, Point

from .digests import compare_output, raster_digest, vector_digest

TRANSFORM = from_origin(500000, 4650000, 0.5, 0.5)
BOUNDS = (500000.0, 4650000.0 - 256.0, 500000.0 + 256.0, 4650000.0)


def _probability(shift: int = 0) -> np.ndarray:
    rows, cols = np.mgrid[0:512, 0:512]
    road = np.exp(-((cols - 200 - shift) / 6.0) ** 2) + np.exp(-((rows - 300) / 5.0) ** 2)
    return np.clip(road * 255, 0, 255).astype(np.uint8)


def _raster(path, pixels) -> dict:
    with rasterio.open(path, "w", driver="GTiff", width=512, height=512, count=1,
                       dtype="uint8", crs="EPSG:32631", transform=TRANSFORM) as ds:
        ds.write(pixels, 1)
    return raster_digest(path)


def _roads(path, lines, junctions=()) -> dict:
    gpd.GeoDataFrame({"id": list(range(len(lines)))}, geometry=list(lines),
                     crs="EPSG:32631").to_file(path, layer="roads")
    gpd.GeoDataFrame({"id": list(range(len(junctions)))}, geometry=list(junctions),
                     crs="EPSG:32631").to_file(path, layer="junctions")
    return vector_digest(path, BOUNDS)


def test_identical_raster_is_exact(tmp_path):
    pixels = _probability()
    assert compare_output(_raster(tmp_path / "a.tif", pixels),
                          _raster(tmp_path / "b.tif", pixels)) == ([], [])


def test_cpu_rounding_passes_but_is_reported(tmp_path):
    pixels = _probability()
    drifted = pixels.copy()
    rng = np.random.default_rng(0)
    spots = rng.integers(0, 512, size=(40, 2))  # as many as AVX-512 vs SSE4.1 moved, scaled
    drifted[spots[:, 0], spots[:, 1]] = np.clip(drifted[spots[:, 0], spots[:, 1]].astype(int)
                                                + 1, 0, 255)
    problems, inexact = compare_output(_raster(tmp_path / "a.tif", pixels),
                                       _raster(tmp_path / "b.tif", drifted))
    assert problems == []
    assert inexact == ["pixels"]


@pytest.mark.parametrize("change", ["shift one pixel", "darker by 3 levels", "road erased"])
def test_real_raster_changes_fail(tmp_path, change):
    pixels = _probability()
    if change == "shift one pixel":
        changed = _probability(shift=1)
    elif change == "darker by 3 levels":
        changed = np.clip(pixels.astype(int) - 3, 0, 255).astype(np.uint8)
    else:
        changed = pixels.copy()
        changed[250:350, :] = 0
    problems, _ = compare_output(_raster(tmp_path / "a.tif", pixels),
                                 _raster(tmp_path / "b.tif", changed))
    assert problems


def test_georeferencing_change_fails(tmp_path):
    pixels = _probability()
    expected = _raster(tmp_path / "a.tif", pixels)
    actual = dict(expected, transform=[0.5, 0.0, 500000.5, 0.0, -0.5, 4650000.0])
    problems, _ = compare_output(expected, actual)
    assert problems and "transform" in problems[0]


ROADS = [LineString([(500010, 4649900), (500250, 4649900)]),
         LineString([(500100, 4649990), (500100, 4649760)]),
         LineString([(500100, 4649900), (500180, 4649820)])]
JUNCTIONS = [Point(500100, 4649900)]


def test_small_vector_drift_passes(tmp_path):
    # a spur at the pruning limit (15 m) kept on one CPU and pruned on the other, ends moved
    drifted = [LineString([(500010.5, 4649900), (500250, 4649900.3)]), ROADS[1], ROADS[2],
               LineString([(500200, 4649900), (500210, 4649911)])]
    problems, inexact = compare_output(_roads(tmp_path / "a.gpkg", ROADS, JUNCTIONS),
                                       _roads(tmp_path / "b.gpkg", drifted, JUNCTIONS))
    assert problems == []
    assert "layer roads" in inexact


@pytest.mark.parametrize("change", ["road lost", "road moved 30 m", "junctions lost"])
def test_real_vector_changes_fail(tmp_path, change):
    roads, junctions = list(ROADS), list(JUNCTIONS)
    if change == "road lost":
        roads = roads[:2]
    elif change == "road moved 30 m":
        roads[1] = LineString([(500130, 4649990), (500130, 4649760)])
    else:
        junctions = [Point(500100 + dx, 4649900) for dx in (60, 61, 62, 63)]
    problems, _ = compare_output(_roads(tmp_path / "a.gpkg", ROADS, JUNCTIONS),
                                 _roads(tmp_path / "b.gpkg", roads, junctions))
    assert problems


def _raster_with_overviews(path, pixels, stale: bool = False) -> dict:
    from rasterio.enums import Resampling

    with rasterio.open(path, "w", driver="GTiff", width=512, height=512, count=1,
                       dtype="uint8", crs="EPSG:32631", transform=TRANSFORM) as ds:
        ds.write(np.zeros_like(pixels) if stale else pixels, 1)
        ds.build_overviews([2, 4], Resampling.average)
        if stale:  # full resolution rewritten after the overviews were built
            ds.write(pixels, 1)
    return raster_digest(path)


def test_stale_overviews_fail(tmp_path):
    pixels = _probability()
    expected = _raster_with_overviews(tmp_path / "a.tif", pixels)
    assert expected["overview_factors"] == [2, 4]
    problems, inexact = compare_output(
        expected, _raster_with_overviews(tmp_path / "b.tif", pixels, stale=True))
    assert inexact == ["pixels"]
    assert any(p.startswith("overview 2") for p in problems)
