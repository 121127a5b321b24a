"""``roadprn info`` on road networks: layers, counts, CRS, length in metres, junctions, runs."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
import shapely

from roadprn.vectorize.describe import describe_vector, format_vector, length_m
from roadprn.vectorize.gpkg import run_record, write_network
from tests.helpers import invoke


def network(crs: str = "EPSG:32611") -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """A '+' of four 100 m roads meeting at (500100, 4000100), plus one 50 m road alone."""
    c = (500100.0, 4000100.0)
    ends = [(500000.0, 4000100.0), (500200.0, 4000100.0), (500100.0, 4000000.0),
            (500100.0, 4000200.0)]
    lines = [shapely.LineString([c, e]) for e in ends]
    lines.append(shapely.LineString([(501000.0, 4000000.0), (501050.0, 4000000.0)]))
    roads = gpd.GeoDataFrame({"id": range(1, 6), "length_m": [100.0] * 4 + [50.0]},
                             geometry=lines, crs=crs).astype({"id": "int64"})
    junctions = gpd.GeoDataFrame({"id": [1], "degree": [4]}, geometry=[shapely.Point(c)],
                                 crs=crs).astype({"id": "int64", "degree": "int64"})
    return roads, junctions


@pytest.fixture()
def written(tmp_path: Path) -> dict[str, Path]:
    src = tmp_path / "scene.tif"
    src.write_bytes(b"scene bytes")
    run = run_record(src, {"vectorize": {"spur_length_m": 10.0}}, {"base": "abc"},
                     command="extract")
    roads, junctions = network()
    (gpkg,) = write_network(roads, junctions, tmp_path / "gpkg", "scene", run)
    geojson = write_network(roads.to_crs("EPSG:4326"), junctions.to_crs("EPSG:4326"),
                            tmp_path / "geojson", "scene", run, fmt="geojson")[0]
    fgb = write_network(roads, junctions, tmp_path / "fgb", "scene", run, fmt="fgb")[0]
    return {"gpkg": gpkg, "geojson": geojson, "fgb": fgb}


def test_gpkg_layers_length_junctions_and_run(written) -> None:
    desc = describe_vector(written["gpkg"])
    assert desc["driver"] == "GPKG"
    layers = {layer["name"]: layer for layer in desc["layers"]}
    assert set(layers) == {"roads", "junctions"}
    assert layers["roads"]["features"] == 5 and layers["roads"]["geometry_type"] == "LineString"
    assert layers["junctions"]["geometry_type"] == "Point"
    assert layers["roads"]["crs"].startswith("EPSG:32611")
    assert layers["roads"]["extent"] == [500000.0, 4000000.0, 501050.0, 4000200.0]
    assert desc["road_length_km"] == pytest.approx(0.45)
    assert desc["junctions_by_degree"] == {"source": "junctions layer", "by_degree": {"4": 1},
                                           "junctions": 1}
    assert set(desc["tables"]) == {"runs", "layer_styles"}
    run = desc["run"]
    assert run["command"] == "extract" and len(run["input_sha256"]) == 64
    assert run["model_hashes"] == {"base": "abc"}
    assert run["config"]["vectorize"]["spur_length_m"] == 10.0
    text = format_vector(desc)
    assert "0.450 km" in text and "degree 4: 1" in text and "run command" in text


def test_geojson_in_degrees_is_measured_in_metres(written) -> None:
    desc = describe_vector(written["geojson"])
    (roads,) = desc["layers"]
    assert roads["crs"].startswith("EPSG:4326")
    assert "UTM zone 11N" in roads["length_crs"]
    # 450 m in UTM 11N, measured again in UTM 11N after a round trip through degrees
    assert desc["road_length_km"] == pytest.approx(0.45, abs=1e-3)
    # no junctions layer in the roads file: computed from the line ends
    junctions = desc["junctions_by_degree"]
    assert junctions["source"] == "line ends"
    assert junctions["by_degree"] == {"1": 6, "4": 1} and junctions["junctions"] == 1
    assert desc["run"]["command"] == "extract"  # from scene_run.json beside it


def test_flatgeobuf_and_parquet(written, tmp_path: Path) -> None:
    assert describe_vector(written["fgb"])["road_length_km"] == pytest.approx(0.45)
    pytest.importorskip("pyarrow")
    roads, _ = network()
    path = tmp_path / "scene_roads.parquet"
    roads.to_parquet(path)
    desc = describe_vector(path)
    assert desc["driver"] == "GeoParquet" and desc["layers"][0]["features"] == 5
    assert desc["road_length_km"] == pytest.approx(0.45)


def test_length_in_feet_crs_is_converted_to_metres() -> None:
    line = gpd.GeoDataFrame(geometry=[shapely.LineString([(0, 0), (1000, 0)])],
                            crs="EPSG:2227")  # California zone 3, US survey feet
    assert length_m(line) == pytest.approx(1000 * 1200 / 3937)


@pytest.mark.parametrize("fmt", ["gpkg", "geojson"])
def test_cli_info_on_networks(written, fmt) -> None:
    path = written[fmt]
    text = invoke("info", path)
    assert text.exit_code == 0, text.output
    assert "road length" in text.output and "0.45" in text.output
    assert "junctions" in text.output and "not a readable raster" not in text.output
    as_json = invoke("info", path, "--json")
    assert as_json.exit_code == 0, as_json.output
    desc = json.loads(as_json.stdout)
    assert desc["road_length_km"] == pytest.approx(0.45, abs=1e-3)
    assert desc["junctions_by_degree"]["junctions"] == 1
    assert desc["run"]["command"] == "extract"


def test_cli_info_on_a_broken_vector_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.gpkg"
    bad.write_bytes(b"not a geopackage")
    result = invoke("info", bad, catch_exceptions=True)
    assert result.exit_code != 0 and "not a readable vector file" in result.output
