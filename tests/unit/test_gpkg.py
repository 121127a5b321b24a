"""GeoPackage / other formats: layers, types, CRS, provenance, embedded QGIS style, atomicity."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
import pytest
import shapely

from roadprn.errors import OutputError
from roadprn.vectorize import gpkg
from roadprn.vectorize.gpkg import output_paths, run_record, write_network


def frames(n: int, crs: str = "EPSG:32611") -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    lines = [shapely.LineString([(500000 + i, 4000000), (500010 + i, 4000020)]) for i in range(n)]
    roads = gpd.GeoDataFrame({"id": range(1, n + 1), "length_m": [22.4] * n,
                              "width_m": [6.0] * n, "prob_mean": [0.9] * n,
                              "scene": ["s"] * n}, geometry=lines, crs=crs)
    roads = roads.astype({"id": "int64", "scene": object})
    pts = [shapely.Point(500000 + i, 4000000) for i in range(n)]
    junctions = gpd.GeoDataFrame({"id": range(1, n + 1), "degree": [3] * n, "scene": ["s"] * n},
                                 geometry=pts, crs=crs).astype({"id": "int64", "degree": "int64",
                                                               "scene": object})
    return roads, junctions


@pytest.fixture()
def run(tmp_path: Path) -> dict[str, str]:
    src = tmp_path / "in.tif"
    src.write_bytes(b"not really a tif")
    return run_record(src, {"vectorize": {"spur_length_m": 10.0}}, {"prn": "abc123"})


def test_gpkg_has_layers_crs_provenance_and_default_style(tmp_path: Path, run) -> None:
    roads, junctions = frames(3)
    (path,) = write_network(roads, junctions, tmp_path, "scene", run)
    assert path == tmp_path / "scene_roads.gpkg"
    layers = dict(pyogrio.list_layers(path).tolist())
    assert layers["roads"] == "LineString" and layers["junctions"] == "Point"
    assert pyogrio.read_info(path, layer="roads")["crs"] == "EPSG:32611"
    back = gpd.read_file(path, layer="roads")
    assert list(back.columns[:5]) == ["id", "length_m", "width_m", "prob_mean", "scene"]
    assert len(back) == 3
    runs = pyogrio.read_dataframe(path, layer="runs")
    assert runs.input_sha256.iloc[0] == run["input_sha256"] and len(run["input_sha256"]) == 64
    assert json.loads(runs.model_hashes_json.iloc[0]) == {"prn": "abc123"}
    assert json.loads(runs.config_json.iloc[0])["vectorize"]["spur_length_m"] == 10.0
    styles = pyogrio.read_dataframe(path, layer="layer_styles")
    assert set(styles.f_table_name) == {"roads", "junctions"}
    assert styles.useAsDefault.astype(bool).all()
    roads_qml = styles.set_index("f_table_name").styleQML["roads"]
    assert "<renderer-v2" in roads_qml and "SimpleLine" in roads_qml


def test_empty_network_gives_valid_empty_layers(tmp_path: Path, run) -> None:
    roads, junctions = frames(0)
    (path,) = write_network(roads, junctions, tmp_path, "empty", run)
    layers = dict(pyogrio.list_layers(path).tolist())
    assert layers["roads"] == "LineString" and layers["junctions"] == "Point"
    assert pyogrio.read_info(path, layer="roads")["features"] == 0
    assert pyogrio.read_info(path, layer="junctions")["crs"] == "EPSG:32611"


@pytest.mark.parametrize("fmt", ["geojson", "fgb", "parquet"])
def test_other_formats_round_trip(tmp_path: Path, run, fmt: str) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    roads, junctions = frames(2)
    written = write_network(roads, junctions, tmp_path, "s", run, fmt=fmt)
    assert written == output_paths(tmp_path, "s", fmt)
    back = gpd.read_parquet(written[0]) if fmt == "parquet" else gpd.read_file(written[0])
    assert len(back) == 2 and set(back.geom_type) == {"LineString"}
    assert back.crs.to_epsg() == 32611
    assert json.loads(written[2].read_text())["input_sha256"] == run["input_sha256"]


def test_existing_output_needs_overwrite_and_leaves_no_temporaries(tmp_path: Path, run) -> None:
    roads, junctions = frames(1)
    write_network(roads, junctions, tmp_path, "s", run)
    before = (tmp_path / "s_roads.gpkg").read_bytes()
    with pytest.raises(OutputError, match="--overwrite"):
        write_network(roads, junctions, tmp_path, "s", run)
    assert (tmp_path / "s_roads.gpkg").read_bytes() == before
    write_network(frames(4)[0], junctions, tmp_path, "s", run, overwrite=True)
    assert pyogrio.read_info(tmp_path / "s_roads.gpkg", layer="roads")["features"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "s_roads.gpkg"]


def test_failed_write_removes_partial_file(tmp_path: Path, run, monkeypatch) -> None:
    roads, junctions = frames(1)

    def disk_full(layers: list[str]) -> pd.DataFrame:  # fails after roads/junctions are written
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gpkg, "_styles_frame", disk_full)
    with pytest.raises(OSError):
        write_network(roads, junctions, tmp_path, "s", run)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]
