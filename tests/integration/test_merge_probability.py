"""`roadprn merge --merge-level probability`: the run's rasters blended and vectorised once.

The issue's archive (4096², 3 x 3 scenes, batch vs whole-scene extract) is measured in
tests/integration/test_merge.py (``issue_probability``); here the level's plumbing on a small
grid cut from one mask (scenes without a probability raster: blended from their masks).
"""

from __future__ import annotations

import json

import pyogrio
from rasterio.warp import Resampling

from roadprn.batch.merge import NETWORK_NAME
from tests.helpers import invoke
from tests.integration.test_merge import ORIGIN, _fake_run, compare, cut_grid


def test_probability_level_of_a_cut_mask_matches_the_whole_mask(tmp_path):
    assert invoke("-q", "synth", tmp_path / "s.tif", "--size", 1024,
                  "--origin", ORIGIN).exit_code == 0
    assert invoke("-q", "vectorize", tmp_path / "s_mask.tif", "-o", tmp_path / "whole"
                  ).exit_code == 0
    run_dir = tmp_path / "run"
    scenes = []
    for piece in cut_grid(tmp_path / "s_mask.tif", tmp_path / "grid", 64, Resampling.nearest):
        folder = run_dir / piece.stem
        assert invoke("-q", "vectorize", piece, "-o", folder).exit_code == 0
        scene = folder / piece.name
        scene.write_bytes(piece.read_bytes())
        scenes.append(scene)
    _fake_run(run_dir, scenes, failed="broken-0123abcd")
    result = invoke("merge", run_dir, "--merge-level", "probability", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    merged = run_dir / NETWORK_NAME
    assert report["path"] == str(merged) and report["dst_crs"] == "EPSG:32631"
    assert [g["name"] for g in report["gaps"]] == ["broken-0123abcd"]
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == []  # staging
    runs = pyogrio.read_dataframe(merged, layer="runs")
    config = json.loads(runs["config_json"][0])["merge"]
    assert config["level"] == "probability" and len(config["mask_scenes"]) == 9
    assert json.loads(runs["gaps_json"][0])[0]["error"] == "file truncated or corrupt"
    roads = pyogrio.read_dataframe(merged, layer="roads")
    assert list(roads.columns) == ["id", "length_m", "width_m", "prob_mean", "scene",
                                   "geometry"]
    assert set(roads["scene"]) <= {p.parent.name for p in scenes} and len(set(roads["scene"])) > 3
    junctions = pyogrio.read_dataframe(merged, layer="junctions")
    assert list(junctions.columns) == ["id", "degree", "geometry"]
    m = compare(merged, tmp_path / "whole" / "s_mask_roads.gpkg", run_dir)
    print("probability level, cut mask vs whole mask:", m)
    assert abs(m["length_diff"]) <= 0.01
    assert abs(m["junction_diff"]) <= 0.02 or abs(m["junctions"] - m["junctions_whole"]) <= 1
    assert m["dangling"] == 0
    assert m["apls"] >= 0.97


def test_unknown_merge_level_is_one_line(tmp_path):
    from roadprn.batch.merge import merge_run
    from roadprn.errors import ConfigError

    try:
        merge_run(tmp_path, level="raster")
    except ConfigError as exc:
        assert "unknown merge level 'raster'" in str(exc)
    else:
        raise AssertionError("no error")
