"""Digests of what `roadprn extract` writes, as decoded content (pixels, masks, georeferencing,
geometries, attributes), so that a refactoring can prove its outputs are bitwise unchanged.

File bytes cannot be compared: a GeoPackage carries timestamps and the run record carries
paths and the version. Regenerate the committed digests (only when outputs are meant to change):

    python -m tests.golden.digests --update   # from the repository root
"""

from __future__ import annotations

import hashlib
import json
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


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def raster_digest(path: Path) -> dict:
    import rasterio

    with rasterio.open(path) as ds:
        levels = {}
        for factor in [1, *ds.overviews(1)]:
            shape = (ds.count, max(1, ds.height // factor), max(1, ds.width // factor))
            pixels = ds.read(out_shape=shape) if factor > 1 else ds.read()
            levels[str(factor)] = _sha(np.ascontiguousarray(pixels).tobytes())
        return {
            "dtype": ds.dtypes[0],
            "shape": [ds.count, ds.height, ds.width],
            "crs": ds.crs.to_wkt() if ds.crs else None,
            "transform": list(ds.transform)[:6],
            "nodata": ds.nodata,
            "mask": _sha(np.ascontiguousarray(ds.dataset_mask()).tobytes()),
            "pixels_by_overview_factor": levels,
        }


def vector_digest(path: Path) -> dict:
    import geopandas as gpd
    import pyogrio

    out: dict = {}
    for name, _geometry_type in pyogrio.list_layers(path):
        frame = gpd.read_file(path, layer=name) if name != "layer_styles" else None
        if name == "layer_styles":
            styles = pyogrio.read_dataframe(path, layer=name, read_geometry=False)
            out[name] = _sha(styles.drop(columns=["update_time"], errors="ignore")
                             .to_json(orient="records").encode())
            continue
        if name == "runs":
            out[name] = {c: frame[c].tolist() for c in STABLE_RUN_COLUMNS if c in frame}
            continue
        record = {"rows": len(frame), "crs": frame.crs.to_wkt() if frame.crs else None}
        if "geometry" in frame:
            record["geometry"] = _sha(b"".join(frame.geometry.to_wkb()))
        attributes = frame.drop(columns=["geometry"], errors="ignore")
        as_json = attributes.to_json(orient="split", double_precision=15)
        record["attributes"] = _sha(as_json.encode())
        out[name] = record
    return out


def output_digests(folder: Path) -> dict:
    digests = {}
    for path in sorted(folder.iterdir()):
        if path.suffix == ".tif":
            digests[path.name] = raster_digest(path)
        elif path.suffix == ".gpkg":
            digests[path.name] = vector_digest(path)
    return digests


def run_extract(scene: Path, out_dir: Path) -> dict:
    """Run `roadprn extract` with default models and options and digest its outputs."""
    subprocess.run(
        [sys.executable, "-m", "roadprn", "extract", str(scene), "--out", str(out_dir)],
        check=True, capture_output=True, text=True,
    )
    return output_digests(out_dir)


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        digests = {name: run_extract(scene, Path(tmp) / name) for name, scene in SCENES.items()}
    text = json.dumps(digests, indent=1, sort_keys=True) + "\n"
    if "--update" in argv:
        GOLDEN_FILE.write_text(text)
        print(f"wrote {GOLDEN_FILE}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
