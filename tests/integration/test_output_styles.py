"""What a GIS sees of extract's rasters: band descriptions, the masks' colour table, QGIS
styles beside every raster, the refined mask's provenance tags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rasterio

from tests.helpers import invoke, make_checkpoint, make_prn


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> tuple[Path, dict, Path, Path]:
    from roadprn.models.checkpoint import file_sha256
    from roadprn.synth import generate_scene

    folder = tmp_path_factory.mktemp("styles")
    base = make_checkpoint(folder / "base.pt", 3, tile=64, halo=8)
    prn = make_prn(folder / "prn.pt", file_sha256(base))
    scene = generate_scene(folder / "s.tif", width=200, height=160, seed=4).image_path
    result = invoke("extract", str(scene), "--model", str(base), "--prn", str(prn),
                    "--out", str(folder / "o"), "--no-vectorize", "--json")
    assert result.exit_code == 0, result.output
    return Path(scene), json.loads(result.stdout)["files"], base, prn


def test_style_files_are_written_and_reported(extracted) -> None:
    _, files, _, _ = extracted
    for raster in ("probability", "mask", "refined_mask"):
        style = Path(files[f"{raster}_style"])
        assert style == Path(files[raster]).with_suffix(".qml") and style.is_file()
        assert "<rasterrenderer" in style.read_text()
    assert "singlebandpseudocolor" in Path(files["probability_style"]).read_text()
    assert 'type="paletted"' in Path(files["refined_mask_style"]).read_text()
    folder = Path(files["mask"]).parent
    assert not [p for p in folder.iterdir() if ".roadprn-" in p.name]  # nothing half-written


def test_band_descriptions_and_mask_colour_tables(extracted) -> None:
    _, files, _, _ = extracted
    expected = {"probability": "road probability", "mask": "road mask",
                "refined_mask": "refined road mask"}
    for key, description in expected.items():
        with rasterio.open(files[key]) as ds:
            assert ds.descriptions == (description,)
            if key == "probability":
                continue
            assert ds.colorinterp[0].name == "palette"
            colormap = ds.colormap(1)
            assert colormap[1] == (255, 214, 0, 255)
            # TIFF palettes hold no alpha (GDAL reads 255 back): 0 is black there, and
            # transparent in QGIS through the .qml
            assert colormap[0][:3] == (0, 0, 0) and colormap[255][:3] == (0, 0, 0)


def test_refined_mask_tags_name_version_models_and_config(extracted) -> None:
    from roadprn import __version__
    from roadprn.models.checkpoint import file_sha256

    scene, files, base, prn = extracted
    with rasterio.open(files["refined_mask"]) as ds:
        tags = ds.tags()
    assert tags["ROADPRN_VERSION"] == __version__
    assert tags["ROADPRN_MODEL_SHA256"] == file_sha256(base)
    assert tags["ROADPRN_PRN_SHA256"] == file_sha256(prn)
    assert "refine" in json.loads(tags["ROADPRN_CONFIG"])
    assert tags["ROADPRN_SOURCE"] == str(scene.resolve())
    assert tags["ROADPRN_PROBABILITY"] == str(Path(files["probability"]).resolve())
    for key in ("probability", "mask"):
        with rasterio.open(files[key]) as ds:
            assert Path(ds.tags()["ROADPRN_SOURCE"]).is_absolute()
