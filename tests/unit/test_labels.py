"""Labels -> masks: widths in metres on any CRS, real solaris reference, mask rasters, errors."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine, from_origin
from rasterio.windows import Window
from shapely.geometry import LineString

from roadprn.errors import InputError
from roadprn.raster.labels import (
    SceneGrid,
    centrelines_to_mask,
    labels_to_mask,
    local_metric_crs,
    read_centrelines,
    read_mask_labels,
)

UTM = "EPSG:32611"
# 200 x 100 m at 1 m pixels in UTM 11N (Las Vegas)
UTM_GRID = SceneGrid(
    from_origin(660000, 4000100, 1.0, 1.0), 200, 100, rasterio.crs.CRS.from_string(UTM)
)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float((a & b).sum() / (a | b).sum())


def _horizontal_road(crs: str = UTM) -> gpd.GeoDataFrame:
    # along y = 4000050 (a pixel edge), beyond both ends of the grid so no round caps show
    line = LineString([(659900, 4000050), (660300, 4000050)])
    return gpd.GeoDataFrame({"name": ["a"]}, geometry=[line], crs=UTM).to_crs(crs)


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_vegas_centrelines_match_solaris(realdata: Path):
    folder = realdata / "spacenet_vegas_pan"
    grid = SceneGrid.from_raster(folder / "road_mask_input.tif")
    ours = centrelines_to_mask(folder / "sample_roads_for_masking.geojson", grid, width_m=4.0)
    with rasterio.open(folder / "sample_road_raster_mask.tif") as ds:
        solaris = ds.read(1) > 0
    # solaris buffers by width / 2 in UTM and burns pixel centres, as we do: identical masks
    assert _iou(ours, solaris) >= 0.99
    assert 0.03 < ours.mean() < 0.036


@pytest.mark.realdata
def test_labels_declaring_the_wrong_crs_are_rejected(realdata: Path):
    labels = realdata / "robustness" / "geotiff_custom_proj_labels.geojson"
    with pytest.raises(InputError, match="not longitudes/latitudes") as info:
        read_centrelines(labels)
    assert "geotiff_custom_proj_labels.geojson" in str(info.value)


@pytest.mark.realdata
def test_labels_elsewhere_do_not_overlap(realdata: Path):
    grid = SceneGrid.from_raster(realdata / "spacenet_vegas_pan" / "road_mask_input.tif")
    with pytest.raises(InputError, match="do not overlap the scene"):
        centrelines_to_mask(realdata / "vectors" / "sample_roads.geojson", grid, width_m=4)


@pytest.mark.realdata
def test_multilinestrings_are_buffered(realdata: Path):
    lines = read_centrelines(realdata / "vectors" / "spacenet" / "AOI_2_Vegas_img995.geojson")
    assert "MultiLineString" in set(lines.geom_type)
    xmin, ymin, xmax, ymax = lines.total_bounds
    grid = SceneGrid(
        from_origin(xmin, ymax, 3e-6, 3e-6),
        int((xmax - xmin) / 3e-6) + 1,
        int((ymax - ymin) / 3e-6) + 1,
        rasterio.crs.CRS.from_epsg(4326),
    )
    multi = lines[lines.geom_type == "MultiLineString"]
    assert centrelines_to_mask(multi, grid, width_m=4).sum() > 0
    assert (
        centrelines_to_mask(lines, grid, width_m=4).sum()
        > centrelines_to_mask(lines[lines.geom_type == "LineString"], grid, width_m=4).sum()
    )


@pytest.mark.realdata
def test_deepglobe_three_channel_mask(realdata: Path):
    path = realdata / "deepglobe" / "104_mask.png"
    with rasterio.open(path) as ds:
        raw = ds.read()
    assert raw.shape[0] == 3 and set(np.unique(raw)) <= {0, 255} | set(range(256))
    grid = SceneGrid(Affine.identity(), 1024, 1024, None)
    mask = read_mask_labels(path, grid)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    assert np.array_equal(mask, (raw > 127).any(axis=0))
    wrong = SceneGrid(Affine.identity(), 1000, 1024, None)
    with pytest.raises(InputError, match="must match pixel for pixel"):
        read_mask_labels(path, wrong)


@pytest.mark.realdata
def test_soft_mask_threshold(realdata: Path):
    path = realdata / "spacenet_vegas_img33" / "mask_AOI_2_Vegas_img33.png"
    grid = SceneGrid(Affine.identity(), 1300, 1300, None)
    default = read_mask_labels(path, grid)
    assert 0.15 < default.mean() < 0.19  # "> 127 gives ~17 % road"
    assert read_mask_labels(path, grid, threshold=200).mean() < default.mean()


# --------------------------------------------------------------------------- widths in metres


@pytest.mark.parametrize("width_m", [4.0, 10.0])
@pytest.mark.parametrize("label_crs", [UTM, "EPSG:4326", "EPSG:3857"])
def test_width_is_in_metres_whatever_the_label_crs(width_m: float, label_crs: str):
    mask = centrelines_to_mask(_horizontal_road(label_crs), UTM_GRID, width_m=width_m)
    per_column = mask.sum(axis=0)
    assert np.all(np.abs(per_column - width_m) <= 1)
    assert per_column.mean() == pytest.approx(width_m, abs=0.5)


def test_width_on_a_geographic_grid_with_non_square_pixels():
    """At 60 N a 1e-5 degree pixel is ~0.56 m wide and ~1.11 m tall."""
    grid = SceneGrid(
        from_origin(10.0, 60.001, 1e-5, 1e-5), 200, 200, rasterio.crs.CRS.from_epsg(4326)
    )
    north_south = LineString([(10.001, 59.9), (10.001, 60.1)])
    east_west = LineString([(9.9, 60.0005), (10.1, 60.0005)])
    lines = gpd.GeoDataFrame(geometry=[north_south], crs="EPSG:4326")
    across_x = centrelines_to_mask(lines, grid, width_m=10).sum(axis=1)  # pixels per row
    lines = gpd.GeoDataFrame(geometry=[east_west], crs="EPSG:4326")
    across_y = centrelines_to_mask(lines, grid, width_m=10).sum(axis=0)  # pixels per column
    assert np.median(across_x) == pytest.approx(10 / 0.557, abs=1.5)  # ~18 px
    assert np.median(across_y) == pytest.approx(10 / 1.112, abs=1.5)  # ~9 px


def test_width_from_lane_attribute_with_fallback():
    roads = _horizontal_road()
    other = LineString([(660100, 4000200), (660100, 3999900)])  # north-south, no lane count
    roads = gpd.GeoDataFrame(
        {"lane_number": [2, None]}, geometry=[roads.geometry[0], other], crs=UTM
    )
    mask = centrelines_to_mask(
        roads, UTM_GRID, width_m=4, width_attribute="lane_number", metres_per_unit=3.5
    )
    # 2 lanes x 3.5 m across the east-west road (edges fall on pixel centres: 7 or 8 px)
    assert 7 <= mask[:, 20].sum() <= 8
    assert mask[10, :].sum() == 4  # the fallback width across the north-south road
    with pytest.raises(InputError, match="lack a positive 'lane_number'"):
        centrelines_to_mask(roads, UTM_GRID, width_m=None, width_attribute="lane_number")
    with pytest.raises(InputError, match="no attribute 'lanes'"):
        centrelines_to_mask(roads, UTM_GRID, width_attribute="lanes")


def test_window_equals_slice_of_full_mask():
    roads = _horizontal_road()
    full = centrelines_to_mask(roads, UTM_GRID, width_m=6)
    window = Window(30, 40, 64, 32)
    part = centrelines_to_mask(roads, UTM_GRID, width_m=6, window=window)
    assert np.array_equal(part, full[40:72, 30:94])
    empty = centrelines_to_mask(roads, UTM_GRID, width_m=6, window=Window(0, 0, 50, 20))
    assert empty.shape == (20, 50) and not empty.any()


def test_local_metric_crs_is_the_utm_zone_of_the_scene_centre():
    assert local_metric_crs(UTM_GRID).to_epsg() == 32611
    south = SceneGrid(
        from_origin(151.2, -33.8, 1e-5, 1e-5), 10, 10, rasterio.crs.CRS.from_epsg(4326)
    )
    assert local_metric_crs(south).to_epsg() == 32756
    polar = SceneGrid(from_origin(20.0, 85.0, 1e-5, 1e-5), 10, 10, rasterio.crs.CRS.from_epsg(4326))
    assert "+proj=aeqd" in local_metric_crs(polar).srs


# --------------------------------------------------------------------------- files and errors


@pytest.mark.parametrize(("suffix", "driver"), [(".gpkg", "GPKG"), (".shp", "ESRI Shapefile")])
def test_vector_formats_give_the_same_mask(tmp_path: Path, suffix: str, driver: str):
    roads = _horizontal_road("EPSG:4326")
    geojson = tmp_path / "roads.geojson"
    roads.to_file(geojson, driver="GeoJSON")
    other = tmp_path / f"roads{suffix}"
    roads.to_file(other, driver=driver)
    expected = labels_to_mask(geojson, UTM_GRID, width_m=5)
    assert expected.sum() > 0
    assert np.array_equal(labels_to_mask(other, UTM_GRID, width_m=5), expected)


def test_missing_crs_needs_an_explicit_one(tmp_path: Path):
    path = tmp_path / "roads.shp"
    _horizontal_road().to_file(path)
    path.with_suffix(".prj").unlink()
    with pytest.raises(InputError, match="have no CRS"):
        read_centrelines(path)
    mask = centrelines_to_mask(path, UTM_GRID, width_m=4, crs=UTM)
    assert mask.sum(axis=0).mean() == pytest.approx(4, abs=0.5)


def test_bad_label_files(tmp_path: Path):
    with pytest.raises(InputError, match="not found"):
        read_centrelines(tmp_path / "nope.geojson")
    garbage = tmp_path / "garbage.geojson"
    garbage.write_text("{not json")
    with pytest.raises(InputError, match="cannot read labels"):
        read_centrelines(garbage)
    polygons = tmp_path / "polys.geojson"
    gpd.GeoDataFrame(geometry=_horizontal_road().buffer(3), crs=UTM).to_file(polygons)
    with pytest.raises(InputError, match="Polygon geometries, not road centrelines"):
        read_centrelines(polygons)
    with pytest.raises(InputError, match="width must be positive"):
        centrelines_to_mask(_horizontal_road(), UTM_GRID, width_m=0)


def _write_mask(path: Path, data: np.ndarray, transform: Affine, crs: str | None) -> Path:
    profile = {
        "driver": "GTiff",
        "width": data.shape[-1],
        "height": data.shape[-2],
        "count": 1,
        "dtype": data.dtype,
        "transform": transform,
        "crs": crs,
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data, 1)
    return path


def test_mask_raster_thresholds_by_content(tmp_path: Path):
    rng = np.random.default_rng(0)
    binary = (rng.random((100, 200)) > 0.8).astype(np.uint8)
    transform = UTM_GRID.transform
    ones = _write_mask(tmp_path / "ones.tif", binary, transform, UTM)
    assert np.array_equal(read_mask_labels(ones, UTM_GRID), binary)
    scaled = _write_mask(tmp_path / "scaled.tif", binary * 255, transform, UTM)
    assert np.array_equal(labels_to_mask(scaled, UTM_GRID), binary)
    prob = _write_mask(tmp_path / "prob.tif", binary * 0.9 + 0.05, transform, UTM)
    assert np.array_equal(read_mask_labels(prob, UTM_GRID), binary)
    window = Window(10, 20, 50, 30)
    assert np.array_equal(read_mask_labels(ones, UTM_GRID, window=window), binary[20:50, 10:60])


def test_georeferenced_mask_on_another_grid_is_resampled(tmp_path: Path):
    # the same roads at 2 m pixels must land on the 1 m scene grid
    coarse = np.zeros((50, 100), np.uint8)
    coarse[20:23, :] = 1  # 6 m wide band from y = 4000060 down to 4000054
    path = _write_mask(tmp_path / "coarse.tif", coarse, from_origin(660000, 4000100, 2.0, 2.0), UTM)
    mask = read_mask_labels(path, UTM_GRID)
    assert np.all(mask.sum(axis=0) == 6)
    assert mask[40:46].all() and not mask[:40].any() and not mask[46:].any()
    far = _write_mask(tmp_path / "far.tif", coarse, from_origin(0, 100, 2.0, 2.0), UTM)
    with pytest.raises(InputError, match="do not overlap"):
        read_mask_labels(far, UTM_GRID)


def test_mask_labels_with_nodata_are_not_road(tmp_path):
    """A {0,1} mask with nodata 255 (e.g. `roadprn synth --nodata-border`) keeps its roads."""
    import rasterio
    from rasterio.transform import from_origin

    from roadprn.raster.labels import SceneGrid, read_mask_labels

    data = np.zeros((1, 20, 20), np.uint8)
    data[0, 5, :] = 1
    data[0, :, :3] = 255
    path = tmp_path / "mask.tif"
    transform = from_origin(500000, 4000000, 1, 1)
    with rasterio.open(path, "w", driver="GTiff", width=20, height=20, count=1, dtype="uint8",
                       crs="EPSG:32633", transform=transform, nodata=255) as ds:
        ds.write(data)
    grid = SceneGrid.from_raster(path)
    mask = read_mask_labels(path, grid)
    assert mask[5, 3:].all() and mask.sum() == 17
