"""``roadprn vectorize`` end to end: real SpaceNet mask, probability rasters, errors."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from rasterio.features import rasterize
from rasterio.transform import from_origin

from tests.helpers import invoke


def write_raster(path: Path, data: np.ndarray, crs: str = "EPSG:32611",
                 nodata: float | None = None) -> Path:
    profile = dict(driver="GTiff", height=data.shape[0], width=data.shape[1], count=1,
                   dtype=data.dtype, crs=crs, transform=from_origin(500000, 4000000, 0.5, 0.5),
                   nodata=nodata)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return path


def cross_probability(n: int = 600) -> np.ndarray:
    """uint8 probability: 230 on a cross of 6 m wide roads, 40 elsewhere."""
    transform = from_origin(500000, 4000000, 0.5, 0.5)
    lines = [shapely.LineString([(500000, 3999850), (500300, 3999850)]),
             shapely.LineString([(500150, 4000000), (500150, 3999700)])]
    road = rasterize([(g.buffer(3), 1) for g in lines], out_shape=(n, n), transform=transform)
    return np.where(road > 0, 230, 40).astype(np.uint8)


@pytest.mark.realdata
def test_real_spacenet_mask_lines_lie_on_the_labels(realdata: Path, tmp_path: Path) -> None:
    vegas = realdata / "spacenet_vegas_pan"
    result = invoke("vectorize", str(vegas / "sample_road_raster_mask.tif"), "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    gpkg = tmp_path / "sample_road_raster_mask_roads.gpkg"
    roads = gpd.read_file(gpkg, layer="roads")
    assert roads.crs.to_epsg() == 4326
    assert set(roads.geom_type) == {"LineString"} and roads.is_valid.all()
    labels = gpd.read_file(vegas / "sample_roads_for_masking.geojson")
    with rasterio.open(vegas / "sample_road_raster_mask.tif") as src:
        scene = shapely.box(*src.bounds)
    utm = roads.estimate_utm_crs()
    truth = shapely.union_all(labels.clip(scene).to_crs(utm).geometry.values)
    found = shapely.union_all(roads.to_crs(utm).geometry.values)
    recall = truth.intersection(found.buffer(3.0)).length / truth.length
    precision = found.intersection(truth.buffer(3.0)).length / found.length
    assert recall >= 0.95 and precision >= 0.95, (recall, precision)
    assert roads.length_m.sum() == pytest.approx(found.length, rel=0.01)


def test_probability_raster_thresholded_with_attributes(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "prob.tif", cross_probability())
    out = tmp_path / "out"
    result = invoke("vectorize", str(src), "--out", str(out), "--dst-crs", "EPSG:4326")
    assert result.exit_code == 0, result.output
    gpkg = out / "prob_roads.gpkg"
    roads = gpd.read_file(gpkg, layer="roads")
    junctions = gpd.read_file(gpkg, layer="junctions")
    assert roads.crs.to_epsg() == 4326 and len(roads) == 4
    assert list(junctions.degree) == [4]
    assert roads.prob_mean.to_numpy() == pytest.approx(230 / 255, abs=0.01)
    assert roads.width_m.to_numpy() == pytest.approx(6.0, abs=0.6)
    assert roads.length_m.sum() == pytest.approx(600, rel=0.03)
    # a threshold above every road value leaves nothing, but still a valid file
    again = invoke("vectorize", str(src), "--out", str(out), "--threshold", "0.95", "--overwrite")
    assert again.exit_code == 0, again.output
    assert pyogrio.read_info(gpkg, layer="roads")["features"] == 0


def test_command_runs_on_its_own_without_the_root_group(tmp_path: Path) -> None:
    """scripts/qgis_check.sh calls the command directly (no root context object)."""
    from roadprn.cli.vectorize import vectorize

    src = write_raster(tmp_path / "prob.tif", cross_probability())
    result = CliRunner().invoke(vectorize, [str(src), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "prob_roads.gpkg").is_file()


def test_empty_mask_and_nodata(tmp_path: Path) -> None:
    data = np.zeros((200, 200), np.uint8)
    data[:, :100] = 255  # left half would be one big road, but it is nodata
    src = write_raster(tmp_path / "empty.tif", data, nodata=255)
    result = invoke("vectorize", str(src), "--out", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    gpkg = tmp_path / "o" / "empty_roads.gpkg"
    layers = dict(pyogrio.list_layers(gpkg).tolist())
    assert layers["roads"] == "LineString" and layers["junctions"] == "Point"
    assert pyogrio.read_info(gpkg, layer="roads")["features"] == 0


def test_user_errors_are_one_line_with_exit_codes(tmp_path: Path) -> None:
    missing = invoke("vectorize", str(tmp_path / "nope.tif"), "--out", str(tmp_path))
    assert missing.exit_code == 3 and "nope.tif" in missing.output
    src = write_raster(tmp_path / "m.tif", np.zeros((64, 64), np.uint8))
    bad = invoke("vectorize", str(src), "--out", str(tmp_path), "--spur-length-m", "-1")
    assert bad.exit_code == 2 and "--spur-length-m" in bad.output
    crs = invoke("vectorize", str(src), "--out", str(tmp_path), "--dst-crs", "EPSG:99999999")
    assert crs.exit_code == 2
    values = write_raster(tmp_path / "v.tif", np.full((64, 64), 7, np.int16))
    wrong = invoke("vectorize", str(values), "--out", str(tmp_path))
    assert wrong.exit_code == 3 and "v.tif" in wrong.output
    assert invoke("vectorize", str(src), "--out", str(tmp_path)).exit_code == 0
    exists = invoke("vectorize", str(src), "--out", str(tmp_path))
    assert exists.exit_code == 4 and "--overwrite" in exists.output
    for r in (missing, bad, crs, wrong, exists):
        assert r.output.count("\n") == 1 and r.output.startswith("roadprn: error:")


@pytest.mark.slow
def test_two_process_workers_and_flatgeobuf(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "p.tif", cross_probability(1200))
    result = invoke("vectorize", src, "--out", tmp_path, "--workers", "2", "--tile-size-px", "256",
                    "--format", "fgb")
    assert result.exit_code == 0, result.output
    roads = gpd.read_file(tmp_path / "p_roads.fgb")
    junctions = gpd.read_file(tmp_path / "p_junctions.fgb")
    assert len(roads) == 4 and list(junctions.degree) == [4]
    assert (tmp_path / "p_run.json").is_file()


@pytest.mark.parametrize("option,value", [("--simplify-tolerance-m", "inf"),
                                          ("--spur-length-m", "nan"),
                                          ("--bridge-max-gap-m", "1e12"),
                                          ("--tile-size-px", "100000000")])
def test_non_finite_or_absurd_options_are_refused(tmp_path, option, value):
    mask = tmp_path / "m.tif"
    with rasterio.open(mask, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8",
                       crs="EPSG:32631", transform=from_origin(600000, 5800000, 0.5, 0.5)) as ds:
        ds.write(np.zeros((1, 64, 64), np.uint8))
    result = invoke("vectorize", str(mask), "--out", str(tmp_path / "o"),
                    option, value)
    assert result.exit_code == 2, result.output
    assert option in result.output
    assert not (tmp_path / "o").exists()
