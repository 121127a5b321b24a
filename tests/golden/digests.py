"""Digests of what `roadprn extract` writes, as decoded content (pixels, masks, georeferencing,
geometries, attributes), so that a refactoring can prove its outputs are unchanged.

File bytes cannot be compared: a GeoPackage carries timestamps and the run record carries
paths and the version. Pixels cannot be compared bit for bit across machines either: PyTorch
picks its CPU kernels by instruction set (AVX-512, AVX2, ...), whose float sums round
differently, so a few probability pixels move by one grey level between CPUs (11 of the bundled
example's 1 M pixels with `ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41` on an AVX-512
machine). So each output has two records: `exact` (sha256 of the decoded content; equal on the
machine that wrote the digests) and `fingerprint` (block means, histograms, lengths per grid
cell), which `compare` checks within tolerances far below what a real change of the outputs
moves (a one-pixel shift of the probability raster, a changed blend, a lost road).

Regenerate the committed digests (only when outputs are meant to change):

    python -m tests.golden.digests --update   # from the repository root
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

GOLDEN_FILE = Path(__file__).with_name("golden_outputs.json")
REPO_ROOT = Path(__file__).resolve().parents[2]
# the README's bundled example (RGB model + PRN, scene grid) and a real panchromatic SpaceNet
# chip in EPSG:4326 (panchromatic model, resampled to the model's GSD and back)
SCENES = {
    "bundled_example": REPO_ROOT / "examples" / "synthetic_scene.tif",
    "spacenet_vegas_pan": REPO_ROOT.parent / "shared" / "realdata" / "spacenet_vegas_pan"
    / "road_mask_input.tif",
}
# the run record's columns that do not depend on where or when the run happened
STABLE_RUN_COLUMNS = ("command", "model_hashes_json", "input_sha256")

# fingerprint resolution and tolerances
RASTER_BLOCK_PX = 32
VECTOR_GRID_CELLS = 8
# mean of a 32 x 32 block, as a share of the band's largest value: four of its 1024 pixels
# flipped from 0 to the largest value, or all of them moved by a 250th of the range
BLOCK_MEAN_TOLERANCE_SHARE = 0.004
# share of all pixels whose histogram bin may differ (L1 distance / 2 / pixel count)
HISTOGRAM_TOLERANCE = 0.001
# a line layer: its length in a grid cell, in metres (a spur at the pruning limit is 15 m)
CELL_LENGTH_TOLERANCE_M = 20.0
CELL_LENGTH_TOLERANCE_SHARE = 0.05
TOTAL_LENGTH_TOLERANCE_SHARE = 0.01  # on top of the cell's absolute tolerance
# rows of a layer, and points per grid cell
ROWS_TOLERANCE = (3, 0.05)  # (absolute, share): the larger one applies
CELL_POINTS_TOLERANCE = 2


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def block_moments(pixels: np.ndarray, block: int = RASTER_BLOCK_PX) -> dict[str, list]:
    """Mean of each `block` x `block` cell of a 2-D array (edge cells are partial), and its
    first moments (mean of value times the column / row offset from the cell's centre, in
    pixels): the means alone do not see a content shifted within its cells."""
    values = pixels.astype(np.float64)
    rows, cols = math.ceil(values.shape[0] / block), math.ceil(values.shape[1] / block)
    means, x_moments, y_moments = [], [], []
    for r in range(rows):
        for grid in (means, x_moments, y_moments):
            grid.append([])
        for c in range(cols):
            cell = values[r * block:(r + 1) * block, c * block:(c + 1) * block]
            dy = np.arange(cell.shape[0]) - (cell.shape[0] - 1) / 2
            dx = np.arange(cell.shape[1]) - (cell.shape[1] - 1) / 2
            means[-1].append(round(float(cell.mean()), 3))
            x_moments[-1].append(round(float((cell * dx[None, :]).mean()), 2))
            y_moments[-1].append(round(float((cell * dy[:, None]).mean()), 2))
    return {"mean": means, "x_moment": x_moments, "y_moment": y_moments}


def raster_digest(path: Path) -> dict:
    import rasterio

    with rasterio.open(path) as ds:
        full = ds.read()
        levels, overview_means = {"1": _sha(np.ascontiguousarray(full).tobytes())}, {}
        for factor in ds.overviews(1):
            shape = (ds.count, max(1, ds.height // factor), max(1, ds.width // factor))
            pixels = ds.read(out_shape=shape)
            levels[str(factor)] = _sha(np.ascontiguousarray(pixels).tobytes())
            overview_means[str(factor)] = [block_moments(band)["mean"] for band in pixels]
        dataset_mask = ds.dataset_mask()
        return {
            "dtype": ds.dtypes[0],
            "shape": [ds.count, ds.height, ds.width],
            "crs": ds.crs.to_wkt() if ds.crs else None,
            "transform": list(ds.transform)[:6],
            "nodata": ds.nodata,
            "overview_factors": [int(f) for f in ds.overviews(1)],
            "exact": {
                "mask": _sha(np.ascontiguousarray(dataset_mask).tobytes()),
                "pixels_by_overview_factor": levels,
            },
            "fingerprint": {
                "mask_blocks": block_moments(dataset_mask),
                "band_blocks": [block_moments(band) for band in full],
                "band_largest_values": [float(band.max(initial=0)) for band in full],
                "overview_block_means": overview_means,
                "band_histograms": [np.bincount(band.ravel().astype(np.int64),
                                                minlength=256).tolist() for band in full],
            },
        }


def _grid(bounds: tuple[float, float, float, float], cells: int = VECTOR_GRID_CELLS):
    from shapely.geometry import box

    left, bottom, right, top = bounds
    width, height = (right - left) / cells, (top - bottom) / cells
    return [box(left + c * width, top - (r + 1) * height, left + (c + 1) * width, top - r * height)
            for r in range(cells) for c in range(cells)]


def _layer_fingerprint(frame, scene_bounds) -> dict:
    import geopandas as gpd

    from roadprn.vectorize.describe import length_m

    fingerprint: dict = {"rows": len(frame)}
    if "geometry" not in frame or frame.geometry.isna().all() or scene_bounds is None:
        return fingerprint
    geometry_type = frame.geometry.iloc[0].geom_type if len(frame) else None
    cells = gpd.GeoSeries(_grid(scene_bounds), crs=frame.crs)
    if geometry_type in ("LineString", "MultiLineString"):
        # lengths in metres as `roadprn info` measures them
        fingerprint["length_m"] = round(length_m(frame), 2)
        fingerprint["cell_lengths_m"] = [
            round(length_m(gpd.GeoDataFrame(geometry=frame.geometry.intersection(cell),
                                            crs=frame.crs)), 2)
            for cell in cells]
    elif geometry_type == "Point":
        fingerprint["cell_points"] = [int(frame.geometry.within(cell).sum()) for cell in cells]
    return fingerprint


def vector_digest(path: Path, scene_bounds: tuple[float, float, float, float] | None) -> dict:
    """`scene_bounds`: the scene's bounds in the layers' CRS, the frame of the cell grid."""
    import geopandas as gpd
    import pyogrio

    out: dict = {}
    for name, _geometry_type in pyogrio.list_layers(path):
        if name == "layer_styles":
            styles = pyogrio.read_dataframe(path, layer=name, read_geometry=False)
            out[name] = _sha(styles.drop(columns=["update_time"], errors="ignore")
                             .to_json(orient="records").encode())
            continue
        frame = gpd.read_file(path, layer=name)
        if name == "runs":
            out[name] = {c: frame[c].tolist() for c in STABLE_RUN_COLUMNS if c in frame}
            continue
        crs = getattr(frame, "crs", None)
        record: dict = {"columns": list(frame.columns), "crs": crs.to_wkt() if crs else None,
                        "exact": {"rows": len(frame)}}
        if "geometry" in frame:
            record["exact"]["geometry"] = _sha(b"".join(frame.geometry.to_wkb()))
        attributes = frame.drop(columns=["geometry"], errors="ignore")
        as_json = attributes.to_json(orient="split", double_precision=15)
        record["exact"]["attributes"] = _sha(as_json.encode())
        record["fingerprint"] = _layer_fingerprint(frame, scene_bounds)
        out[name] = record
    return out


def _scene_bounds(folder: Path) -> tuple[float, float, float, float] | None:
    import rasterio

    masks = sorted(folder.glob("*_mask.tif"))
    if not masks:
        return None
    with rasterio.open(masks[0]) as ds:
        return tuple(ds.bounds)


def output_digests(folder: Path) -> dict:
    digests = {}
    bounds = _scene_bounds(folder)
    for path in sorted(folder.iterdir()):
        if path.suffix == ".tif":
            digests[path.name] = raster_digest(path)
        elif path.suffix == ".gpkg":
            digests[path.name] = vector_digest(path, bounds)
    return digests


def _rows_tolerance(rows: int) -> float:
    absolute, share = ROWS_TOLERANCE
    return max(absolute, share * rows)


def _compare_grids(name: str, expected: list, actual: list, tolerance: float) -> list[str]:
    expected_array, actual_array = np.asarray(expected, float), np.asarray(actual, float)
    if expected_array.shape != actual_array.shape:
        return [f"{name}: grid {actual_array.shape} instead of {expected_array.shape}"]
    difference = np.abs(expected_array - actual_array)
    if difference.max(initial=0) <= tolerance:
        return []
    worst = np.unravel_index(int(difference.argmax()), difference.shape)
    return [f"{name}: {int((difference > tolerance).sum())} cell(s) beyond {tolerance}, worst "
            f"{tuple(int(i) for i in worst)}: {expected_array[worst]} -> {actual_array[worst]}"]


def compare_fingerprints(expected: dict, actual: dict) -> list[str]:
    """What differs beyond tolerance between two fingerprints of one output (empty: alike)."""
    problems: list[str] = []
    if "band_blocks" in expected:
        blocks = [("dataset mask", expected["mask_blocks"], actual["mask_blocks"], 255.0)]
        blocks += [(f"band {band}", want, got, max(largest, 1.0)) for band, (want, got, largest)
                   in enumerate(zip(expected["band_blocks"], actual["band_blocks"],
                                    expected["band_largest_values"], strict=True), 1)]
        for label, want, got, largest in blocks:
            tolerance = BLOCK_MEAN_TOLERANCE_SHARE * largest
            problems += _compare_grids(f"{label} block means", want["mean"], got["mean"],
                                       tolerance)
            for moment in ("x_moment", "y_moment"):  # offsets reach half a block
                problems += _compare_grids(f"{label} block {moment}s", want[moment],
                                           got[moment], tolerance * RASTER_BLOCK_PX / 2)
        largest = max([*expected["band_largest_values"], 1.0])
        for factor, bands in expected["overview_block_means"].items():
            got_bands = actual["overview_block_means"].get(factor, [])
            if len(got_bands) != len(bands):
                problems.append(f"overview {factor}: {len(got_bands)} band(s)")
                continue
            for band, (want, got) in enumerate(zip(bands, got_bands, strict=True), 1):
                problems += _compare_grids(f"overview {factor} band {band} block means", want,
                                           got, BLOCK_MEAN_TOLERANCE_SHARE * largest)
        for band, (want, got) in enumerate(zip(expected["band_histograms"],
                                               actual["band_histograms"], strict=True), 1):
            moved = np.abs(np.subtract(want, got)).sum() / 2
            if moved > HISTOGRAM_TOLERANCE * sum(want):
                problems.append(f"band {band} histogram: {int(moved)} pixels changed grey level")
        return problems
    if abs(expected["rows"] - actual["rows"]) > _rows_tolerance(expected["rows"]):
        problems.append(f"rows: {expected['rows']} -> {actual['rows']}")
    if "length_m" in expected:
        total = expected["length_m"]
        allowed = CELL_LENGTH_TOLERANCE_M + TOTAL_LENGTH_TOLERANCE_SHARE * total
        if abs(total - actual.get("length_m", 0.0)) > allowed:
            problems.append(f"total length: {total} m -> {actual.get('length_m')} m")
        for index, (want, got) in enumerate(zip(expected["cell_lengths_m"],
                                                actual["cell_lengths_m"], strict=True)):
            if abs(want - got) > CELL_LENGTH_TOLERANCE_M + CELL_LENGTH_TOLERANCE_SHARE * want:
                problems.append(f"length in grid cell {divmod(index, VECTOR_GRID_CELLS)}: "
                                f"{want} m -> {got} m")
    if "cell_points" in expected:
        for index, (want, got) in enumerate(zip(expected["cell_points"],
                                                actual["cell_points"], strict=True)):
            if abs(want - got) > CELL_POINTS_TOLERANCE:
                problems.append(f"points in grid cell {divmod(index, VECTOR_GRID_CELLS)}: "
                                f"{want} -> {got}")
    return problems


def compare_output(expected: dict, actual: dict) -> tuple[list[str], list[str]]:
    """(problems, exact_differences) of one output file's digest: problems fail the golden test
    (metadata differs, or a fingerprint beyond tolerance); exact differences within tolerance
    are expected between CPUs and only reported."""
    problems: list[str] = []
    inexact: list[str] = []
    if "exact" in expected:  # a raster
        for key in expected:
            if key not in ("exact", "fingerprint") and expected[key] != actual.get(key):
                problems.append(f"{key}: {expected[key]!r} -> {actual.get(key)!r}")
        if expected["exact"] != actual["exact"]:
            inexact.append("pixels")
            problems += compare_fingerprints(expected["fingerprint"], actual["fingerprint"])
        return problems, inexact
    if sorted(expected) != sorted(actual):
        return [f"layers {sorted(actual)} instead of {sorted(expected)}"], inexact
    for layer, want in expected.items():
        got = actual[layer]
        if not isinstance(want, dict) or "exact" not in want:  # styles, run record
            if want != got:
                problems.append(f"layer {layer} differs")
            continue
        for key in ("columns", "crs"):
            if want[key] != got[key]:
                problems.append(f"layer {layer} {key}: {want[key]!r} -> {got[key]!r}")
        if want["exact"] != got["exact"]:
            inexact.append(f"layer {layer}")
            problems += [f"layer {layer} {p}" for p in
                         compare_fingerprints(want["fingerprint"], got["fingerprint"])]
    return problems, inexact


def run_extract(scene: Path, out_dir: Path) -> dict:
    """Run `roadprn extract` with default models and options and digest its outputs."""
    subprocess.run(
        [sys.executable, "-m", "roadprn", "extract", str(scene), "--out", str(out_dir)],
        check=True, capture_output=True, text=True,
    )
    return output_digests(out_dir)


def to_json(digests: dict) -> str:
    """Indented JSON with each list of numbers on one line, so that a diff stays readable."""
    text = json.dumps(digests, indent=1, sort_keys=True)
    return re.sub(r"\[\n[-0-9.,\s]*\]",
                  lambda m: re.sub(r"\s+", "", m.group(0)).replace(",", ", "), text) + "\n"


USAGE = "usage: python -m tests.golden.digests [--update]  (print, or rewrite, the digests)"


def main(argv: list[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv) or set(argv) - {"--update"}:
        print(USAGE)
        return 0 if set(argv) & {"-h", "--help"} else 2
    with tempfile.TemporaryDirectory() as tmp:
        digests = {name: run_extract(scene, Path(tmp) / name) for name, scene in SCENES.items()}
    text = to_json(digests)
    if "--update" in argv:
        GOLDEN_FILE.write_text(text)
        print(f"wrote {GOLDEN_FILE}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
