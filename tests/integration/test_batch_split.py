"""Large scenes split across batch workers in bands of tile rows (issue 9, item 4).

The shared LocalCluster (2 worker processes) and tiny tiles, so that small synthetic scenes
split into 3 bands: outputs equal `extract`, pieces are cleaned up, a failing band fails only
its scene.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from roadprn.batch import run_batch
from roadprn.batch.config import BatchConfig
from roadprn.batch.inputs import SceneInput, scene_folder_name
from roadprn.batch.manifest import MANIFEST_NAME, latest_scene_records
from roadprn.batch.split import (
    band_ranges,
    choose_splits,
    piece_path,
    predict_band,
    read_pieces,
)
from roadprn.config import load_config
from roadprn.outputs.atomic import TMP_MARKER

TILING = {"tile_size": 32, "halo": 8}  # stride 16: a 230-row scene has 15 tile rows
SPLIT = BatchConfig(split_tiles=20)


def inputs(*paths: Path) -> list[SceneInput]:
    return [SceneInput(str(p), scene_folder_name(str(p))) for p in paths]


def records(out: Path) -> dict[str, dict]:
    return {Path(r["scene"]).name: r for r in latest_scene_records(out / MANIFEST_NAME).values()}


def no_leftovers(out: Path) -> None:
    assert not list(out.rglob(f"*{TMP_MARKER}*"))
    for record in records(out).values():
        folder = out / record["name"]
        if record["status"] == "failed":
            assert not folder.exists()
        else:
            assert sorted(p.name for p in folder.iterdir()) == sorted(
                Path(f["path"]).name for f in record["files"].values())


# --------------------------------------------------------------------------- fast, no cluster


@pytest.mark.parametrize("rows,workers", [(15, 2), (16, 8), (7, 2), (3, 4), (100, 3), (1, 1)])
def test_band_ranges_cover_rows_in_bands_of_several_rows(rows, workers):
    bands = band_ranges(rows, workers)
    assert bands[0][0] == 0 and bands[-1][1] == rows
    assert all(a < b for a, b in bands)
    assert all(b == c for (_, b), (c, _) in zip(bands, bands[1:], strict=False))
    assert len(bands) <= max(1, 2 * workers)
    if len(bands) > 1:
        assert min(b - a for a, b in bands) >= 4
        assert max(b - a for a, b in bands) - min(b - a for a, b in bands) <= 1


def test_only_scenes_beyond_threshold_and_fair_share_split():
    from roadprn.infer.tiling import TilePlan

    def plan(size):  # stride 448: size 4096 -> 10x10 tiles
        return TilePlan(size, size, 512, 32)

    archive = {f"s{i}": plan(4096) for i in range(8)}
    assert choose_splits(archive, 64, 2) == {}  # 8 similar scenes on 2 workers: one task each
    one_huge = {"huge": plan(8192), "a": plan(1024), "b": plan(2048), "bad": None}
    assert choose_splits(one_huge, 64, 2) == {"huge": band_ranges(19, 2)}
    assert len(choose_splits(one_huge, 64, 2)["huge"]) == 4
    assert choose_splits(one_huge, 0, 2) == {} and choose_splits(one_huge, 400, 2) == {}
    assert choose_splits({"alone": plan(4096)}, 64, 1) == {}  # one worker: nothing to gain
    assert choose_splits({"alone": plan(4096)}, 64, 4) == {"alone": [(0, 5), (5, 10)]}


def test_pieces_with_a_gap_are_refused_and_leave_no_outputs(tmp_path, tiny_model):
    from roadprn.infer.base_stage import ExtractPaths, extract_probability
    from roadprn.models.loading import load_segmentation_model
    from roadprn.synth import generate_scene

    scene = generate_scene(tmp_path / "s.tif", width=70, height=100, seed=2).image_path
    config = load_config(None, {"model": str(tiny_model), "tiling": TILING})
    model = load_segmentation_model(str(tiny_model))
    pieces = [piece_path(tmp_path, i, rows) for i, rows in enumerate([(0, 3), (3, 7)])]
    for piece, rows in zip(pieces, [(0, 3), (3, 7)], strict=True):
        predict_band(str(scene), config, model, rows, piece)
    strips = list(read_pieces(pieces, rows_per_strip=32))
    assert [s.row_off for s in strips] == [0, 32, 64, 96] and strips[-1].prob.shape == (4, 70)
    with pytest.raises(ValueError, match="holds rows 48-100, expected a piece from row 0"):
        list(read_pieces(pieces[1:]))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="end at row 96 of a 100-row grid"):
        extract_probability(scene, model, config, out, precomputed_strips=iter(strips[:-1]))
    paths = ExtractPaths.for_scene(scene, out)
    assert not paths.mask.exists() and not paths.probability.exists()
    assert not list(out.glob(f"*{TMP_MARKER}*"))


# --------------------------------------------------------------------------- on a cluster


@pytest.mark.slow
def test_split_scenes_equal_extract_and_leave_no_pieces(dask_client, tiny_model, tmp_path):
    import geopandas as gpd

    from roadprn.extract import run_extract
    from roadprn.synth import generate_scene

    folder = tmp_path / "scenes"
    border = generate_scene(folder / "border.tif", width=200, height=230, seed=4,
                            nodata_border=True).image_path
    resampled = generate_scene(folder / "fine.tif", width=210, height=230, seed=6,
                               resolution_m=0.3).image_path  # model grid 0.5 m: 126x138 px
    small = generate_scene(folder / "small.tif", width=60, height=60, seed=1).image_path
    config = load_config(None, {"model": str(tiny_model), "tiling": TILING})
    out = tmp_path / "batch"

    summary = run_batch(inputs(border, small), config, out, SPLIT, client=dask_client)
    assert summary.as_dict()["done"] == 2, summary.records
    summary = run_batch(inputs(resampled), config, out, SPLIT, client=dask_client)
    assert summary.as_dict()["done"] == 1, summary.records
    found = records(out)
    assert found["border.tif"]["bands"] == 3 and found["fine.tif"]["bands"] == 2
    assert "bands" not in found["small.tif"]  # small scenes stay one task
    assert found["border.tif"]["stage_seconds"]["bands"] > 0
    assert len(found["border.tif"]["band_workers"]) == 2  # split across both workers
    no_leftovers(out)

    for scene in (border, resampled):
        record = found[scene.name]
        single = run_extract(scene, config, tmp_path / "single" / scene.stem)
        assert record["tiles"] == single.base.tiles
        assert record["road_length_m"] == pytest.approx(single.road_length_m, abs=0.01)
        for key in ("mask", "probability"):
            with rasterio.open(out / record["files"][key]["path"]) as a, \
                    rasterio.open(single.files[key]) as b:
                np.testing.assert_array_equal(a.read(), b.read())
                np.testing.assert_array_equal(a.read_masks(), b.read_masks())
                assert a.transform == b.transform
                tags_a, tags_b = a.tags(), b.tags()
                for tags in (tags_a, tags_b):  # batch sizes torch threads to the worker
                    tags.pop("ROADPRN_CONFIG")
                assert tags_a == tags_b
        roads_a = gpd.read_file(out / record["files"]["roads"]["path"], layer="roads")
        roads_b = gpd.read_file(single.files["roads"], layer="roads")
        assert len(roads_a) == len(roads_b) and roads_a.geometry.geom_equals(roads_b.geometry).all()

    # resume holds for split scenes: nothing to redo
    again = run_batch(inputs(border, resampled, small), config, out, SPLIT, client=dask_client)
    assert (again.as_dict()["done"], again.as_dict()["skipped"]) == (0, 3)


def corrupt_block(path: Path, block_col: int, block_row: int) -> None:
    """Overwrite the compressed bytes of one TIFF block: that block alone becomes unreadable."""
    with rasterio.open(path) as ds:
        offset = int(ds.get_tag_item(f"BLOCK_OFFSET_{block_col}_{block_row}", "TIFF", bidx=1))
        size = int(ds.get_tag_item(f"BLOCK_SIZE_{block_col}_{block_row}", "TIFF", bidx=1))
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\xff" * size)  # not a zlib stream


@pytest.mark.slow
def test_a_failing_band_fails_only_its_scene(dask_client, tiny_model, tmp_path):
    from roadprn.synth import generate_scene

    folder = tmp_path / "scenes"
    good = generate_scene(folder / "good.tif", width=60, height=70, seed=8).image_path
    source = generate_scene(folder / "src.tif", width=200, height=230, seed=9).image_path
    bad = folder / "bad.tif"
    with rasterio.open(source) as src:  # 16-px deflate blocks: block row 2 is scene rows 32-47
        profile = {**src.profile, "tiled": True, "blockxsize": 16, "blockysize": 16,
                   "compress": "deflate"}
        with rasterio.open(bad, "w", **profile) as dst:
            dst.write(src.read())
    corrupt_block(bad, 5, 2)  # read by tile rows 1-3 only: the first of the 3 bands
    # fixed normalisation: no sample read touches the bad block outside the bands
    config = load_config(None, {"model": str(tiny_model), "tiling": TILING,
                                "input": {"normalization": {"mode": "dtype"}},
                                "vectorize": {"enabled": False}})
    out = tmp_path / "out"

    summary = run_batch(inputs(good, bad), config, out, SPLIT, client=dask_client)
    found = records(out)
    assert {n: r["status"] for n, r in found.items()} == {"good.tif": "done", "bad.tif": "failed"}
    assert "bands" not in found["good.tif"]
    failure = found["bad.tif"]
    assert "bad.tif" in failure["error"] and "cannot read window" in failure["error"]
    assert [e["tile_rows"] for e in failure["band_errors"]] == [[0, 5]]  # the others succeeded
    assert [r["scene"] for r in summary.failed] == [str(bad)]
    no_leftovers(out)
