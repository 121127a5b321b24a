"""`roadprn merge` / `batch --merge`: neighbouring scenes' networks joined into one (issue #19).

A synthetic scene is cut into a 3 x 3 grid of overlapping scenes (windows written with rasterio),
the centre one reprojected into the neighbouring UTM zone; the merged network is compared with
the network of the whole scene: total length, junctions, dangling ends near internal scene
borders, APLS.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from rasterio.warp import Resampling, calculate_default_transform, reproject
from rasterio.windows import Window, bounds

from roadprn.batch.manifest import MANIFEST_NAME, latest_scene_records
from roadprn.batch.merge import NETWORK_NAME, _to_crs, merge_run, scene_footprint
from roadprn.evaluate.apls import apls
from tests.helpers import invoke

ORIGIN = "700000,5000000"  # EPSG:32631, 5.6 E: zone 32 begins 30 km east
NEIGHBOUR_ZONE = "EPSG:32632"


def cut_grid(src_path: Path, out: Path, overlap: int, resampling: Resampling,
             reprojected: tuple[int, int] = (1, 1)) -> list[Path]:
    """3 x 3 overlapping windows of ``src_path`` as GeoTIFFs; ``reprojected`` warped into the
    neighbouring UTM zone (nodata 0 outside, or 255 for masks)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    with rasterio.open(src_path) as src:
        side = (src.width + 2 * overlap) // 3
        offsets = [0, side - overlap, 2 * (side - overlap)]
        mask = src.count == 1
        nodata = 255 if mask else 0
        for i, row in enumerate(offsets):
            for j, col in enumerate(offsets):
                win = Window(col, row, side, side)
                data = src.read(window=win)
                profile = {**src.profile, "width": side, "height": side,
                           "transform": src.window_transform(win), "tiled": True,
                           "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
                profile.pop("photometric", None)
                if (i, j) == reprojected:
                    transform, width, height = calculate_default_transform(
                        src.crs, NEIGHBOUR_ZONE, side, side, *bounds(win, src.transform),
                        resolution=src.res[0])
                    warped = np.full((src.count, height, width), nodata, dtype=data.dtype)
                    reproject(data, warped, src_transform=src.window_transform(win),
                              src_crs=src.crs, dst_transform=transform, dst_crs=NEIGHBOUR_ZONE,
                              resampling=resampling, src_nodata=nodata if mask else None,
                              dst_nodata=nodata)
                    profile.update(crs=NEIGHBOUR_ZONE, transform=transform, width=width,
                                   height=height, nodata=nodata)
                    data = warped
                path = out / f"g{i}{j}.tif"
                with rasterio.open(path, "w", **profile) as dst:
                    dst.write(data)
                paths.append(path)
    return paths


def _dead_ends(lines: gpd.GeoSeries) -> np.ndarray:
    ends: Counter[tuple[float, float]] = Counter()
    for geom in lines:
        xy = shapely.get_coordinates(geom)
        for p in (xy[0], xy[-1]):
            ends[(round(float(p[0]), 2), round(float(p[1]), 2))] += 1
    return np.array([k for k, n in ends.items() if n == 1]).reshape(-1, 2)


def compare(merged_path: Path, whole_path: Path, run_dir: Path) -> dict[str, float]:
    """The issue's measures of the merged network against the whole scene's."""
    merged = gpd.read_file(merged_path, layer="roads")
    whole = gpd.read_file(whole_path, layer="roads").to_crs(merged.crs)
    n_merged = len(gpd.read_file(merged_path, layer="junctions"))
    n_whole = len(gpd.read_file(whole_path, layer="junctions"))
    footprints = []
    for record in latest_scene_records(run_dir / MANIFEST_NAME).values():
        if record["status"] == "done":
            fp, crs, _ = scene_footprint(run_dir / record["files"]["mask"]["path"])
            footprints.append(_to_crs(fp, crs, merged.crs.to_wkt()))
    inner = shapely.unary_union(footprints).buffer(-20.0)
    borders = shapely.unary_union([fp.boundary for fp in footprints])
    whole_ends = _dead_ends(whole.geometry)
    dangling = 0
    for p in _dead_ends(merged.geometry):
        point = shapely.Point(p)
        if inner.contains(point) and borders.distance(point) <= 20.0:
            nearest = np.hypot(*(whole_ends - p).T).min() if len(whole_ends) else np.inf
            dangling += int(nearest > 10.0)  # the whole scene has no dead end there
    score = apls(list(whole.geometry), list(merged.geometry))
    return {"length_diff": float(merged.length_m.sum() / whole.length_m.sum() - 1),
            "junction_diff": n_merged / n_whole - 1, "junctions": n_merged,
            "junctions_whole": n_whole, "dangling": dangling, "apls": score.apls,
            "length_m": float(merged.length_m.sum()),
            "length_whole_m": float(whole.length_m.sum())}


def _fake_run(run_dir: Path, scenes: list[Path], failed: str | None = None) -> None:
    """A run folder whose scenes are masks vectorised in place (the merge reads only the
    manifest, each scene's roads and its mask)."""
    lines = []
    for path in scenes:
        folder = path.parent.name
        roads = f"{folder}/{path.stem}_roads.gpkg"
        lines.append({"type": "scene", "status": "done", "name": folder, "scene": str(path),
                      "files": {k: {"path": v, "sha256": "0", "bytes": 0} for k, v in
                                (("mask", f"{folder}/{path.name}"), ("roads", roads))}})
    if failed:
        lines.append({"type": "scene", "status": "failed", "name": failed, "scene": failed,
                      "error": "file truncated or corrupt"})
    (run_dir / MANIFEST_NAME).write_text("".join(json.dumps(r) + "\n" for r in lines))


def test_merge_of_a_cut_mask_matches_the_whole_mask(tmp_path):
    """Same pixels, cut and one piece reprojected: the merge itself adds (almost) nothing."""
    assert invoke("-q", "synth", tmp_path / "s.tif", "--size", 1024,
                  "--origin", ORIGIN).exit_code == 0
    assert invoke("-q", "vectorize", tmp_path / "s_mask.tif", "-o", tmp_path / "whole"
                  ).exit_code == 0
    run_dir = tmp_path / "run"
    pieces = cut_grid(tmp_path / "s_mask.tif", tmp_path / "grid", 64, Resampling.nearest)
    scenes = []
    for piece in pieces:
        folder = run_dir / piece.stem
        result = invoke("-q", "vectorize", piece, "-o", folder)
        assert result.exit_code == 0, result.stderr
        scene = folder / piece.name
        scene.write_bytes(piece.read_bytes())
        scenes.append(scene)
    _fake_run(run_dir, scenes, failed="broken-0123abcd")
    result = invoke("merge", run_dir, "--cell-size", 200, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    merged = run_dir / NETWORK_NAME
    assert report["path"] == str(merged) and report["cells"] == 9
    assert report["dst_crs"] == "EPSG:32631"  # 8 of the 9 scenes
    assert [g["name"] for g in report["gaps"]] == ["broken-0123abcd"]
    runs = pyogrio.read_dataframe(merged, layer="runs")
    assert runs["command"][0] == "merge"
    assert json.loads(runs["gaps_json"][0])[0]["error"] == "file truncated or corrupt"
    assert len(pyogrio.read_dataframe(merged, layer="layer_styles")) == 2
    m = compare(merged, tmp_path / "whole" / "s_mask_roads.gpkg", run_dir)
    print("cut mask vs whole mask:", m)
    assert abs(m["length_diff"]) <= 0.01
    assert abs(m["junction_diff"]) <= 0.02 or abs(m["junctions"] - m["junctions_whole"]) <= 1
    assert m["dangling"] == 0
    assert m["apls"] >= 0.97  # measured: +0.05 %, 50 vs 50 junctions, 0 dangling, 0.998
    # cells are seamless: one big cell gives the same network
    one = merge_run(run_dir, tmp_path / "one.gpkg", cell_m=10_000, workers=1)
    assert one.cells == 1
    assert (one.roads, one.junctions) == (report["roads"], report["junctions"])
    assert one.length_m == pytest.approx(report["road_length_m"], rel=1e-4)
    # another CRS on request (lengths geodesic there), the same network
    wgs = merge_run(run_dir, tmp_path / "wgs.gpkg", "EPSG:4326", workers=2)
    assert pyogrio.read_info(tmp_path / "wgs.gpkg", layer="roads")["crs"] == "EPSG:4326"
    assert wgs.roads == one.roads and wgs.length_m == pytest.approx(one.length_m, rel=2e-3)


@pytest.mark.slow
def test_batch_merge_matches_extract_on_the_whole_scene(tmp_path, dask_client):
    """The issue's target: 3 x 3 scenes (overlap 128 px, the centre one in the next UTM zone)
    through `batch --merge` vs `extract` on the whole scene. 2048² instead of the issue's 4096²
    (a 2-core machine: the batch alone takes ~2 minutes at 2048²)."""
    assert invoke("-q", "synth", tmp_path / "s.tif", "--size", 2048,
                  "--origin", ORIGIN).exit_code == 0
    grid = tmp_path / "grid"
    cut_grid(tmp_path / "s.tif", grid, 128, Resampling.bilinear)
    result = invoke("-q", "extract", tmp_path / "s.tif", "-o", tmp_path / "whole")
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "out"
    result = invoke("-q", "batch", grid, "-o", out, "--merge", "--json",
                    "--scheduler", dask_client.scheduler.address)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["merge"]["scenes"] == 9 and not report["merge"]["gaps"]
    m = compare(out / NETWORK_NAME, tmp_path / "whole" / "s_roads.gpkg", out)
    print("batch --merge vs whole-scene extract:", m)
    # measured (2048², 2 cores): length +0.39 %, 101 vs 100 junctions, APLS 0.961, one dangling
    # end: not a missed join but a detection difference (a dead-end road at 700688 E,
    # 4999943 N that scene g01's model sees 21 m longer than the whole scene's, 16 m from a
    # border, with no road beyond it in either). The same grid cut from the whole scene's own
    # mask gives +0.01 %, 100 vs 100, 0 dangling, 0.9994: what is left here is the model seeing
    # each scene differently, not the merge.
    assert abs(m["length_diff"]) <= 0.02
    assert abs(m["junction_diff"]) <= 0.02
    assert m["dangling"] <= 1
    assert m["apls"] >= 0.95
