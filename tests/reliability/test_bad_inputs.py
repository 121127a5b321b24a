"""Bad inputs to `extract` (and `info`): each is one line on stderr, a documented exit code, no
traceback, and nothing left in the output folder. Good-but-odd inputs succeed."""

from __future__ import annotations

import errno
import json
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
import torch

from roadprn.outputs.atomic import TMP_MARKER
from tests.helpers import (
    BOUND_S,
    assert_clean_failure,
    cli_process,
    invoke,
    leftovers,
    make_prn,
    temp_files,
)


@pytest.fixture
def out(tmp_path):
    return tmp_path / "out"


def extract(scene, model, out, *extra):
    return invoke("extract", scene, "--model", model, "--out", out, *extra)


# --------------------------------------------------------------------------- unreadable scenes


def _truncated(src, dst):
    shutil.copy(src, dst)
    with open(dst, "r+b") as fh:
        fh.truncate(dst.stat().st_size // 2)
    return dst


def _written(path, content: bytes):
    path.write_bytes(content)
    return path


BROKEN_SCENES = {
    "missing": (lambda d, good: d / "nope.tif", ["no such file"]),
    "directory": (lambda d, good: d, ["is a directory"]),
    "zero_bytes": (lambda d, good: _written(d / "empty.tif", b""), ["empty"]),
    "text_as_tif": (lambda d, good: _written(d / "notes.tif", b"just some text\n" * 50),
                    ["not a readable raster"]),
    "truncated": (lambda d, good: _truncated(good, d / "cut.tif"), ["truncated or corrupt"]),
}


@pytest.mark.parametrize("case", sorted(BROKEN_SCENES))
@pytest.mark.parametrize("command", ["extract", "info"])
def test_unreadable_scene_is_one_clean_line(tmp_path, out, good_scene, tiny_model, case, command):
    make, words = BROKEN_SCENES[case]
    folder = tmp_path / "in"
    folder.mkdir()
    scene = make(folder, good_scene)
    if command == "info":
        result = invoke("info", scene)
    else:
        result = extract(scene, tiny_model, out)
    line = assert_clean_failure(result, 3, *words, out=out)
    assert scene.name in line


def test_no_crs_refused_unless_allowed(make_raster, out, tiny_model):
    rng = np.random.default_rng(1)
    scene = make_raster(rng.integers(0, 255, (3, 70, 90), dtype=np.uint8), crs=None,
                        transform=rasterio.Affine.identity())
    assert_clean_failure(extract(scene, tiny_model, out), 3, "no CRS", "--allow-ungeoreferenced",
                         out=out)
    assert_clean_failure(invoke("info", scene), 3, "no CRS")
    ok = extract(scene, tiny_model, out, "--allow-ungeoreferenced")
    assert ok.exit_code == 0, ok.output
    names = {p.name for p in leftovers(out)}
    # rasters in pixel coordinates; no road network (lengths need metres): said on stderr
    assert {f"{scene.stem}_mask.tif", f"{scene.stem}_probability.tif",
            f"{scene.stem}_mask.qml", f"{scene.stem}_probability.qml"} == names
    assert "not georeferenced" in ok.stderr
    assert invoke("info", scene, "--allow-ungeoreferenced").exit_code == 0


def test_wrong_band_count_for_the_model(make_raster, out, tiny_model):
    scene = make_raster(np.full((2, 40, 40), 7, np.uint8))
    assert_clean_failure(extract(scene, tiny_model, out), 3, "band", out=out)
    assert_clean_failure(extract(scene, tiny_model, out, "--bands", "1,2,5"), 3, "[5] do not exist",
                         out=out)


def test_all_nodata_scene(make_raster, out, tiny_model):
    scene = make_raster(np.zeros((3, 50, 60), np.uint16), nodata=0)
    assert_clean_failure(extract(scene, tiny_model, out), 3, "no valid pixels", out=out)


def test_nan_and_inf_are_nodata_not_a_crash(make_raster, out, tiny_model):
    rng = np.random.default_rng(2)
    data = rng.random((3, 80, 96)).astype(np.float32)
    data[:, 10:20, 10:30] = np.nan
    data[1, 40:45, 50:60] = np.inf
    data[2, 60:62, 0:5] = -np.inf
    scene = make_raster(data)
    result = extract(scene, tiny_model, out, "--no-vectorize")
    assert result.exit_code == 0, result.output
    with rasterio.open(out / f"{scene.stem}_mask.tif") as ds:
        mask = ds.read(1)
        valid = ds.dataset_mask() > 0
    bad = ~np.all(np.isfinite(data), axis=0)
    assert np.all(mask[bad] == 255) and not valid[bad].any()
    assert set(np.unique(mask[~bad])) <= {0, 1} and valid[~bad].all()
    with rasterio.open(out / f"{scene.stem}_probability.tif") as ds:
        assert not (ds.dataset_mask()[bad] > 0).any()


# --------------------------------------------------------------------------- labels


@pytest.mark.realdata
def test_labels_with_a_wrong_declared_crs(realdata, out):
    """Albers metres declared as EPSG:4326: refused with the reason, via `train base`."""
    scene = realdata / "robustness" / "sample_geotiff_custom_proj.tif"
    labels = realdata / "robustness" / "geotiff_custom_proj_labels.geojson"
    result = invoke("train", "base", "--pair", scene, labels, "--arch", "tiny_unet",
                    "--out", out / "m.pt")
    line = assert_clean_failure(result, 3, labels.name, out=out)
    assert "CRS" in line


# --------------------------------------------------------------------------- checkpoints


class Payload:  # a custom class: its pickle needs a global, which weights_only refuses
    def __reduce__(self):
        return (print, ("this must never run",))


def _saved(obj, path):
    torch.save(obj, path)
    return path


def _corrupt(src, dst):
    """Flip bytes inside the tensor data (the zip still opens; the checksum must catch it)."""
    shutil.copy(src, dst)
    with zipfile.ZipFile(dst) as zf:
        info = max(zf.infolist(), key=lambda i: i.file_size)
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    with open(dst, "r+b") as fh:
        fh.seek(start + info.file_size // 2)
        chunk = fh.read(64)
        fh.seek(start + info.file_size // 2)
        fh.write(bytes(b ^ 0xFF for b in chunk))
    return dst


BAD_CHECKPOINTS = {
    "truncated": (lambda d, good: _written(d / "m.pt", good.read_bytes()[:3000]), ["corrupt"]),
    "flipped_bytes": (lambda d, good: _corrupt(good, d / "m.pt"), ["corrupt"]),
    "plain_state_dict": (lambda d, good: _saved({"w": torch.zeros(3)}, d / "m.pt"),
                         ["not a roadprn checkpoint"]),
    "pickled_object": (lambda d, good: _saved({"x": Payload()}, d / "m.pt"), ["refuses to load"]),
    "raw_pickle": (lambda d, good: _written(d / "m.pt", pickle.dumps(Payload())), ["m.pt"]),
    "text": (lambda d, good: _written(d / "m.pt", b"hello"), ["m.pt"]),
    "missing": (lambda d, good: d / "m.pt", ["not found"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS))
def test_bad_checkpoints_are_refused(tmp_path, out, good_scene, tiny_model, case, capfd):
    make, words = BAD_CHECKPOINTS[case]
    folder = tmp_path / "models"
    folder.mkdir()
    model = make(folder, tiny_model)
    result = extract(good_scene, model, out)
    line = assert_clean_failure(result, 5, "m.pt", *words, out=out)
    assert_clean_failure(invoke("info", model), 5, "m.pt")
    # roadprn's words, not PyTorch's advice about torch.load defaults
    assert "weights_only" not in line and "PyTorch 2.6" not in line, line
    assert "this must never run" not in capfd.readouterr().out + result.output


def test_prn_of_another_base_model_warns(tmp_path, out, good_scene, tiny_model):
    prn = make_prn(tmp_path / "prn.pt", "a" * 64)
    result = extract(good_scene, tiny_model, out, "--prn", prn, "--refine", "prn",
                     "--no-vectorize")
    assert result.exit_code == 0, result.output
    assert "trained on base model aaaaaaaaaaaa" in result.stderr and "retrain" in result.stderr
    assert (out / f"{good_scene.stem}_refined_mask.tif").exists()


# --------------------------------------------------------------------------- outputs


def test_unwritable_output_folder(tmp_path, good_scene, tiny_model):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = extract(good_scene, tiny_model, blocker / "out")
    assert_clean_failure(result, 4, "cannot create output folder")
    assert blocker.read_text() == "x"


@pytest.mark.skipif(hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() == 0,
                    reason="root writes into read-only folders")
def test_read_only_output_folder(tmp_path, good_scene, tiny_model):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert_clean_failure(extract(good_scene, tiny_model, folder), 4, "not writable", out=folder)
    finally:
        folder.chmod(0o755)


def _disk_full(original, after_bytes: int = 4096):
    """Wrap a writer: it writes a little to its destination, then the disk is full."""

    def wrapper(*args, **kwargs):
        dst = next(a for a in (*args[1:2], kwargs.get("dst")) if a is not None)
        with open(dst, "wb") as fh:
            fh.write(b"\0" * after_bytes)
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    return wrapper


def test_disk_full_while_writing_rasters(monkeypatch, out, good_scene, tiny_model):
    import roadprn.infer.base_stage as pipeline

    monkeypatch.setattr(pipeline, "to_cog", _disk_full(pipeline.to_cog))
    result = extract(good_scene, tiny_model, out)
    assert_clean_failure(result, 1, "no space left on device", str(out), out=out)


def test_disk_full_while_writing_the_network(monkeypatch, out, good_scene, tiny_model):
    import roadprn.vectorize.gpkg as gpkg

    def full(frame, path, layer, fmt):
        path.write_bytes(b"\0" * 4096)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(gpkg, "_write_layer", full)
    result = extract(good_scene, tiny_model, out)
    # all or nothing: the rasters finished before the network are removed too
    assert_clean_failure(result, 1, "no space left on device", str(out), out=out)
    assert temp_files(out) == []


@pytest.mark.parametrize("fmt", ["geojson", "fgb"])
def test_multi_file_network_is_all_or_nothing(monkeypatch, tmp_path, fmt):
    """Formats written as several files: a failure on the second leaves none of them."""
    import geopandas as gpd
    from shapely.geometry import LineString, Point

    import roadprn.vectorize.gpkg as gpkg

    roads = gpd.GeoDataFrame({"id": [1], "length_m": [1.0]},
                             geometry=[LineString([(0, 0), (1, 1)])], crs="EPSG:32631")
    junctions = gpd.GeoDataFrame({"id": [1]}, geometry=[Point(0, 0)], crs="EPSG:32631")
    original = gpkg._write_layer

    def second_fails(frame, path, layer, fmt_):
        if layer == "junctions":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return original(frame, path, layer, fmt_)

    monkeypatch.setattr(gpkg, "_write_layer", second_fails)
    with pytest.raises(OSError):
        gpkg.write_network(roads, junctions, tmp_path, "scene", {"command": "t"}, fmt)
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- config


BAD_CONFIG = [
    (["--set", "tiling.tyle_size=5"], "tiling.tyle_size"),
    (["--set", "tiling.halo=-3"], "tiling.halo"),
    (["--set", "output.threshold=1.5"], "output.threshold"),
    (["--threshold", "-0.1"], "threshold"),
    (["--set", "nonsense"], "nonsense"),
    (["--tile-size", "32", "--halo", "16"], "tiling.tile_size"),
    (["--bands", "one,two"], "--bands"),
    # non-finite or absurd values used to be accepted silently
    (["--set", "vectorize.simplify_tolerance_m=inf"], "vectorize.simplify_tolerance_m"),
    (["--set", "vectorize.spur_length_m=1e9"], "vectorize.spur_length_m"),
    (["--set", "resolution.tolerance=nan"], "resolution.tolerance"),
    (["--set", "vectorize.tile_size_px=1000000"], "vectorize.tile_size_px"),
]


@pytest.mark.parametrize("args,word", BAD_CONFIG, ids=[w for _, w in BAD_CONFIG])
def test_bad_config_values(out, good_scene, tiny_model, args, word):
    assert_clean_failure(extract(good_scene, tiny_model, out, *args), 2, word, out=out)


@pytest.mark.parametrize("text,word", [("tiling: [1, 2\n", "my.yaml"), ("- a list\n", "my.yaml"),
                                       ("tiling:\n  blend: gauss\n", "tiling.blend")])
def test_bad_config_files(tmp_path, out, good_scene, tiny_model, text, word):
    config = tmp_path / "my.yaml"
    config.write_text(text)
    assert_clean_failure(extract(good_scene, tiny_model, out, "--config", config), 2, word, out=out)


def test_missing_config_file(tmp_path, out, good_scene, tiny_model):
    result = extract(good_scene, tiny_model, out, "--config", tmp_path / "none.yaml")
    assert result.exit_code == 2 and "none.yaml" in result.output
    assert "Traceback" not in result.output
    assert leftovers(out) == []


# --------------------------------------------------------------------------- a real process


@pytest.mark.slow
def test_a_real_process_prints_one_line_and_the_code(tmp_path, tiny_model):
    """Outside CliRunner too: the installed entry point, a bad scene, stderr is one line."""
    (tmp_path / "x.tif").write_text("not a raster")
    proc = cli_process(["extract", str(tmp_path / "x.tif"), "--model", str(tiny_model),
                        "--out", str(tmp_path / "o")])
    stdout, stderr = proc.communicate(timeout=BOUND_S)
    assert proc.returncode == 3
    assert stderr.strip().count("\n") == 0 and stderr.startswith("roadprn: error: "), stderr
    assert stdout == "" and not (tmp_path / "o").exists() or leftovers(tmp_path / "o") == []


def test_no_temp_marker_in_names_left_by_successful_run(out, good_scene, tiny_model):
    result = extract(good_scene, tiny_model, out)
    assert result.exit_code == 0, result.output
    assert not [p for p in leftovers(out) if TMP_MARKER in p.name]


# --------------------------------------------------------------------------- red-team cases


@pytest.fixture(scope="module")
def scene_with_overviews(tmp_path_factory):
    """A GeoTIFF whose overview directories and data come after the full-resolution data."""
    from roadprn.synth import generate_scene

    folder = tmp_path_factory.mktemp("ovr")
    path = Path(generate_scene(folder / "ovr.tif", width=600, height=500, seed=1).image_path)
    with rasterio.open(path) as ds:
        assert ds.overviews(1), "the fixture needs overviews"
    cog = folder / "cog.tif"
    rasterio.shutil.copy(path, cog, driver="COG", BLOCKSIZE=128, OVERVIEW_COUNT=2)
    return {"gtiff": path, "cog": cog}


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.99])
@pytest.mark.parametrize("layout", ["gtiff", "cog"])
@pytest.mark.parametrize("command", ["info", "extract"])
def test_truncated_anywhere_is_one_line(tmp_path, out, scene_with_overviews, tiny_model,
                                       layout, fraction, command):
    """Cut at 50 % the TIFF directory of the overviews is gone (GDAL failed inside
    ``ds.colorinterp``: a traceback); at 90 and 99 % the last overview blocks are (``info``
    said valid). The last block of every level is read, so all are refused before any work."""
    src = scene_with_overviews[layout]
    scene = tmp_path / f"cut_{layout}.tif"
    scene.write_bytes(src.read_bytes()[:int(src.stat().st_size * fraction)])
    result = invoke("info", scene) if command == "info" else extract(scene, tiny_model, out)
    line = assert_clean_failure(result, 3, scene.name, "truncated or corrupt", out=out)
    assert "Traceback" not in line


def _vrt_of(path: Path, source: Path, geotransform: str, size: tuple[int, int],
            srs: str = "EPSG:32631", extra: str = "") -> Path:
    width, height = size
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="0">{source}</SourceFilename><SourceBand>{b}</SourceBand>'
        f'</SimpleSource>{extra if b == 1 else ""}</VRTRasterBand>' for b in (1, 2, 3))
    path.write_text(f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>{srs}</SRS>'
                    f'<GeoTransform>{geotransform}</GeoTransform>{bands}</VRTDataset>')
    return path


def test_zero_pixel_size_is_refused(tmp_path, out, good_scene, tiny_model):
    """A geotransform with a zero pixel size used to end in a ZeroDivisionError."""
    vrt = _vrt_of(tmp_path / "zero.vrt", good_scene, "600000, 0, 0, 5750000, 0, -0.5", (160, 140))
    for result in (invoke("info", vrt), extract(vrt, tiny_model, out)):
        assert_clean_failure(result, 3, "zero.vrt", "zero or non-finite pixel size", out=out)


def test_latitude_beyond_90_is_refused(make_raster, out, tiny_model):
    """EPSG:4326 rows at latitude 95: roads came out with length_m NaN, without a word."""
    scene = make_raster(np.full((3, 60, 60), 90, np.uint8), crs="EPSG:4326",
                        transform=rasterio.Affine(3e-6, 0, 10.0, 0, -3e-6, 95.0))
    for result in (invoke("info", scene), extract(scene, tiny_model, out)):
        assert_clean_failure(result, 3, scene.name, "beyond ±90", out=out)


def test_local_engineering_crs_works(make_raster, out, tiny_model):
    """A site grid in metres with no geographic base: rasterio's linear_units_factor raised
    CRSError (a traceback from info and extract); its axes' unit gives the metres."""
    from rasterio.crs import CRS

    local = CRS.from_wkt('LOCAL_CS["Site grid",LOCAL_DATUM["Site",32767],UNIT["metre",1],'
                         'AXIS["X",EAST],AXIS["Y",NORTH]]')
    rng = np.random.default_rng(4)
    scene = make_raster(rng.integers(0, 255, (3, 90, 100), dtype=np.uint8), crs=local,
                        transform=rasterio.Affine(0.5, 0, 100.0, 0, -0.5, 300.0))
    info = invoke("info", scene, "--json")
    assert info.exit_code == 0, info.output
    described = json.loads(info.stdout)
    assert described["resolution_m"] == [0.5, 0.5] and "local engineering" in described["crs"]
    result = extract(scene, tiny_model, out)
    assert result.exit_code == 0, result.output
    with rasterio.open(scene) as src, rasterio.open(out / f"{scene.stem}_mask.tif") as ds:
        assert ds.crs == src.crs and ds.shape == (90, 100) and ds.transform == src.transform


def test_vrt_overview_on_the_network_is_refused(tmp_path, out, good_scene, tiny_model, server):
    """A band's <Overview> is not in GDAL's file list and was fetched when listed (then a
    ZeroDivisionError); the VRT's own text is checked before GDAL lists anything."""
    host, hits = server
    overview = (f'<Overview><SourceFilename relativeToVRT="0">/vsicurl/http://{host}/o.tif'
                '</SourceFilename><SourceBand>1</SourceBand></Overview>')
    vrt = _vrt_of(tmp_path / "ovr.vrt", good_scene, "600000, 0.5, 0, 5750000, 0, -0.5",
                  (160, 140), extra=overview)
    for result in (invoke("info", vrt), extract(vrt, tiny_model, out)):
        assert_clean_failure(result, 3, "ovr.vrt", "network path", out=out)
    assert hits == []


@pytest.mark.parametrize("depth,ok", [(9, True), (10, False), (20, False), (60, False)])
def test_deeply_nested_vrts_are_refused(tmp_path, out, good_scene, tiny_model, depth, ok):
    """Each VRT the source of the next: 60 levels made GDAL run out of its dataset pool and
    extract segfault; beyond 8 nested levels the chain is refused before any read."""
    source = good_scene
    for level in range(depth):
        source = _vrt_of(tmp_path / f"level{level:02d}.vrt", source,
                         "600000, 0.5, 0, 5750000, 0, -0.5", (160, 140))
    result = extract(source, tiny_model, out, "--no-vectorize")
    if ok:
        assert result.exit_code == 0, result.output
        return
    assert_clean_failure(result, 3, source.name, "nested more than 8 levels", out=out)
    assert_clean_failure(invoke("info", source), 3, "nested more than 8 levels")


def test_info_json_with_nan_nodata_is_strict_json(make_raster):
    scene = make_raster(np.full((1, 20, 20), 0.5, np.float32), nodata=float("nan"))
    result = invoke("info", scene, "--json")
    assert result.exit_code == 0, result.output

    def refuse(constant):
        raise AssertionError(f"not JSON: {constant}")

    assert json.loads(result.stdout, parse_constant=refuse)["nodata"] == "nan"


def test_bands_the_model_ignores_are_named(make_raster, out, tiny_model):
    """A 16-band scene ran on bands 1-3 without a word; now one warning says so."""
    rng = np.random.default_rng(5)
    scene = make_raster(rng.integers(0, 2000, (16, 70, 80), dtype=np.uint16))
    result = extract(scene, tiny_model, out, "--no-vectorize")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "16 data bands" in lines[0] and "ignores bands 4-16" in lines[0], \
        lines
    chosen = extract(scene, tiny_model, out, "--no-vectorize", "--bands", "5,6,7", "--overwrite")
    assert chosen.exit_code == 0 and chosen.stderr.strip() == "", chosen.stderr


@pytest.mark.parametrize("key,value", [("scale", "[.nan]"), ("offset", "[.inf]"),
                                       ("scale", "[0]")])
def test_non_finite_fixed_normalisation_is_refused(out, good_scene, tiny_model, key, value):
    """``normalization.scale=[.nan]`` made every input NaN and the outputs meaningless."""
    result = extract(good_scene, tiny_model, out, "--set", "input.normalization.mode=fixed",
                     "--set", "input.normalization.scale=[0.004]",
                     "--set", f"input.normalization.{key}={value}")
    assert_clean_failure(result, 2, f"input.normalization.{key}", out=out)


def test_palette_image_is_refused_with_the_way_out(tmp_path, out, tiny_model):
    from .corpus import palette

    layout = palette(tmp_path)
    assert_clean_failure(extract(layout.path, tiny_model, out, "--bands", "1,1,1"), 3,
                         "palette", "-expand rgb", out=out)
    # without --bands, a 3-band model gets the same line, not "pick --bands 1,1,1" (that would
    # feed colour-table indexes to the model); the way out fixes both problems
    assert_clean_failure(extract(layout.path, tiny_model, out), 3,
                         "palette", "-expand rgb", out=out)
