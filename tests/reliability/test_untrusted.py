"""Untrusted files: nothing a file says is executed, nothing reaches the network unless the user
gave a network path, checkpoints load with weights_only only.

Output names derived from input paths cannot escape --out: see
tests/integration/test_batch.py::test_derived_folder_never_escapes_out and
::test_unsafe_folder_names_refused; extract names its outputs from the scene's stem only
(tested below).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

from roadprn.errors import InputError
from roadprn.raster.scene import open_dataset, open_scene
from roadprn.runtime.gdal_guard import is_network_path
from tests.helpers import REPO_ROOT, assert_clean_failure, invoke, leftovers, write_test_raster

SOURCES = sorted([*(REPO_ROOT / "roadprn").rglob("*.py"), *(REPO_ROOT / "scripts").rglob("*.py")])


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return f"{_name(func.value)}.{func.attr}"
    return ""


def _findings():
    for path in SOURCES:
        tree = ast.parse(path.read_text(), filename=str(path))
        rel = path.relative_to(REPO_ROOT)
        for call in _calls(tree):
            name = _name(call.func)
            kwargs = {k.arg: k.value for k in call.keywords}
            where = f"{rel}:{call.lineno}"
            if name in ("eval", "exec", "compile", "__import__", "builtins.eval", "builtins.exec"):
                yield where, f"{name}()"
            if name.endswith(("pickle.load", "pickle.loads", "marshal.loads", "dill.load",
                              "joblib.load", "shelve.open", "yaml.load", "yaml.unsafe_load",
                              "numpy.load", "np.load")):
                allow = kwargs.get("allow_pickle")
                safe_flag = allow is None or (isinstance(allow, ast.Constant)
                                              and allow.value is False)
                if not (name.endswith(("np.load", "numpy.load")) and safe_flag):
                    yield where, f"{name}()"
            if name == "torch.load" or name.endswith(".torch.load"):
                wo = kwargs.get("weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    yield where, "torch.load without weights_only=True"
            if "shell" in kwargs and not (isinstance(kwargs["shell"], ast.Constant)
                                          and kwargs["shell"].value is False):
                yield where, f"{name}(shell=...)"
            if name in ("os.system", "os.popen", "subprocess.getoutput",
                        "subprocess.getstatusoutput"):
                yield where, f"{name}() runs a shell"


def test_the_scan_finds_what_it_looks_for(tmp_path, monkeypatch):
    """The checker itself: a file with every forbidden call is flagged on each line."""
    bad = tmp_path / "bad.py"
    bad.write_text("import torch, pickle, subprocess, os, yaml\n"
                   "eval('1')\nexec('x=1')\npickle.loads(b'')\ntorch.load('m.pt')\n"
                   "torch.load('m.pt', weights_only=False)\nsubprocess.run('ls', shell=True)\n"
                   "os.system('ls')\nyaml.load('a')\n"
                   "torch.load('m.pt', weights_only=True)\nmodel.eval()\n")
    global SOURCES
    saved, SOURCES = SOURCES, [bad]
    try:
        monkeypatch.setattr(Path, "relative_to", lambda self, other: self.name)
        found = [line for line, _ in _findings()]
    finally:
        SOURCES = saved
    assert found == [f"bad.py:{n}" for n in range(2, 10)]


def test_no_code_execution_or_unsafe_loading_in_the_code_base():
    assert len(SOURCES) > 50
    assert list(_findings()) == []


def test_pyyaml_is_only_used_safely():
    unsafe = [f"{p.relative_to(REPO_ROOT)}:{n}" for p in SOURCES
              for n, line in enumerate(p.read_text().splitlines(), 1)
              if re.search(r"yaml\.(load|unsafe_load|full_load)\(|Loader=yaml\.(Unsafe)?Loader",
                           line)]
    assert unsafe == []


# --------------------------------------------------------------------------- GDAL network


def _vrt(path: Path, source: str, extra: str = "") -> Path:
    path.write_text(f"""<VRTDataset rasterXSize="64" rasterYSize="64">
  <SRS>EPSG:32631</SRS><GeoTransform>600000, 0.5, 0, 5750000, 0, -0.5</GeoTransform>
  <VRTRasterBand dataType="Byte" band="1"{extra}>
    <SimpleSource>
      <SourceFilename relativeToVRT="0">{source}</SourceFilename><SourceBand>1</SourceBand>
      <SourceProperties RasterXSize="64" RasterYSize="64" DataType="Byte"
                        BlockXSize="64" BlockYSize="64"/>
      <SrcRect xOff="0" yOff="0" xSize="64" ySize="64"/>
      <DstRect xOff="0" yOff="0" xSize="64" ySize="64"/>
    </SimpleSource>
  </VRTRasterBand>
</VRTDataset>""")
    return path


REMOTE_SOURCES = ["/vsicurl/http://{host}/secret.tif", "http://{host}/direct.tif",
                  "/vsizip//vsicurl/http://{host}/a.zip/x.tif", "/vsis3/bucket/key.tif",
                  "/VSICURL/HTTP://{host}/upper.tif"]


@pytest.mark.parametrize("source", REMOTE_SOURCES)
def test_local_vrt_pointing_at_the_network_is_refused(tmp_path, server, source, monkeypatch):
    host, hits = server
    monkeypatch.setenv("AWS_NO_SIGN_REQUEST", "YES")
    monkeypatch.setenv("AWS_S3_ENDPOINT", host)
    monkeypatch.setenv("AWS_HTTPS", "NO")
    vrt = _vrt(tmp_path / "scene.vrt", source.format(host=host))
    with pytest.raises(InputError, match="network"):
        open_scene(vrt)
    result = invoke("info", vrt)
    assert_clean_failure(result, 3, "scene.vrt", "network")
    out = tmp_path / "out"
    assert_clean_failure(invoke("extract", vrt, "--out", out), 3, "network", out=out)
    assert hits == []


def test_nested_vrt_pointing_at_the_network_is_refused(tmp_path, server):
    host, hits = server
    inner = _vrt(tmp_path / "inner.vrt", f"/vsicurl/http://{host}/nested.tif")
    outer = _vrt(tmp_path / "outer.vrt", str(inner))
    with pytest.raises(InputError, match=r"outer.vrt: references the network path /vsicurl/"):
        open_dataset(outer)
    assert hits == []


def test_local_wms_description_is_refused(tmp_path, server):
    host, hits = server
    wms = tmp_path / "tiles.xml"
    url = f"http://{host}/${{z}}/${{x}}/${{y}}.png"
    wms.write_text(f"""<GDAL_WMS><Service name="TMS"><ServerUrl>{url}</ServerUrl></Service>
<DataWindow><UpperLeftX>-20037508.34</UpperLeftX><UpperLeftY>20037508.34</UpperLeftY>
<LowerRightX>20037508.34</LowerRightX><LowerRightY>-20037508.34</LowerRightY>
<TileLevel>18</TileLevel><TileCountX>1</TileCountX><TileCountY>1</TileCountY></DataWindow>
<Projection>EPSG:3857</Projection><BlockSizeX>256</BlockSizeX><BlockSizeY>256</BlockSizeY>
<BandsCount>3</BandsCount><Cache/></GDAL_WMS>""")
    # refused from its <ServerUrl> before GDAL opens it; GDAL no longer has a WMS driver either
    assert_clean_failure(invoke("info", wms), 3, "tiles.xml", "network path")
    assert hits == []


def test_vrt_with_a_python_pixel_function_is_refused(tmp_path, make_raster):
    src = make_raster(np.ones((1, 64, 64), np.uint8))
    vrt = _vrt(tmp_path / "code.vrt", str(src), extra=' subClass="VRTDerivedRasterBand"')
    text = vrt.read_text().replace(
        "<SimpleSource>", "<PixelFunctionType>f</PixelFunctionType>"
        "<PixelFunctionLanguage>Python</PixelFunctionLanguage>"
        "<PixelFunctionCode><![CDATA[\nimport os\ndef f(*a, **k):\n"
        "    os.system('touch PWNED')\n]]>"
        "</PixelFunctionCode><SimpleSource>")
    vrt.write_text(text)
    assert_clean_failure(invoke("info", vrt), 3, "Python pixel function")
    assert not (REPO_ROOT / "PWNED").exists() and not (tmp_path / "PWNED").exists()


def test_local_vrt_of_local_files_still_works(tmp_path, make_raster):
    src = make_raster(np.arange(64 * 64, dtype=np.uint32).reshape(1, 64, 64).astype(np.uint8))
    vrt = _vrt(tmp_path / "ok.vrt", str(src))
    info = open_scene(vrt)
    assert (info.width, info.height, info.driver) == (64, 64, "VRT")


def test_a_network_path_the_user_gives_passes_through(server):
    """Given by the user, a URL is allowed: GDAL is asked for it (and the server sees it)."""
    host, hits = server
    with pytest.raises(InputError):
        open_scene(f"/vsicurl/http://{host}/asked_for.tif")
    assert any("asked_for.tif" in h for h in hits)


@pytest.mark.parametrize("path,network", [
    ("/vsicurl/https://h/x.tif", True), ("https://h/x.tif", True), ("/vsis3/b/k.tif", True),
    ("/vsizip//vsicurl/http://h/a.zip/x.tif", True), ("/vsigs/b/x.tif", True),
    ("/vsiaz/c/x.tif", True), ("/data/x.tif", False), ("/vsizip/local.zip/x.tif", False),
    ("relative/x.tif", False)])
def test_network_path_classification(path, network):
    assert is_network_path(path) is network


# --------------------------------------------------------------------------- output names


@pytest.mark.parametrize("name", ["..tif", "...tif", "-rf.tif", "a b;rm x.tif", "ü$(x).tif"])
def test_extract_output_names_stay_in_out(tmp_path, tiny_model, name):
    """Odd scene names give odd output names, but always directly inside --out."""
    rng = np.random.default_rng(0)
    scene = write_test_raster(tmp_path / name, rng.integers(0, 255, (3, 40, 40), np.uint8))
    out = tmp_path / "out"
    result = invoke("extract", scene, "--model", tiny_model, "--out", out, "--no-vectorize")
    assert result.exit_code == 0, result.output
    files = leftovers(out)
    assert files and all(p.parent == out for p in files)
    assert {p.name for p in tmp_path.iterdir()} == {name, "out"}


# --------------------------------------------------------------------------- TorchScript models
# A TorchScript archive carries code that torch.jit.load compiles and may run (__setstate__
# runs while loading). roadprn inspects the archive without running it and refuses anything
# outside its allow-list of tensor operators (roadprn/models/torchscript_guard.py).


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    from .hostile_torchscript import all_hostile

    folder = tmp_path_factory.mktemp("hostile")
    marker = folder / "MARKER"
    return all_hostile(folder / "models", marker), marker


def test_the_hostile_archives_really_write_when_loaded_by_torch(hostile, tmp_path):
    """Control: without roadprn's check, each archive writes its marker (so the refusals below
    are what keeps the marker away)."""
    import torch

    archives, marker = hostile
    for case, path in archives.items():
        marker.unlink(missing_ok=True)
        try:
            torch.jit.load(str(path))(torch.zeros(1, 3, 8, 8))
        except RuntimeError:  # the __setstate__ one fails to load, *after* writing
            assert case == "__setstate__ from_file"
        assert marker.exists(), case
    marker.unlink()


@pytest.mark.parametrize("case", ["forward from_file", "__setstate__ from_file",
                                  "reads a second file", "torch.save", "ops.aten.from_file"])
def test_hostile_torchscript_refused_by_extract_and_info(hostile, good_scene, tmp_path, case):
    archives, marker = hostile
    model = archives[case]
    marker.unlink(missing_ok=True)
    out = tmp_path / "out"
    result = invoke("extract", good_scene, "--model", model, "--out", out, "--no-vectorize")
    line = assert_clean_failure(result, 5, str(model), "refused before loading", out=out)
    assert not marker.exists(), (case, line)
    result = invoke("info", model)
    assert_clean_failure(result, 5, str(model), "refused before loading")
    assert not marker.exists(), case


def test_hostile_torchscript_names_the_construct(hostile, good_scene, tmp_path):
    archives, _ = hostile
    expected = {
        "forward from_file": "calls torch.from_file",
        "__setstate__ from_file": "defines __getstate__",  # the hooks come first in the file
        "reads a second file": "calls torch.from_file",
        "torch.save": "calls torch.save",
        "ops.aten.from_file": "calls ops.aten.from_file",
    }
    for case, words in expected.items():
        result = invoke("info", archives[case])
        assert_clean_failure(result, 5, words, "code/__torch__/tests/reliability/")


@pytest.fixture(scope="module")
def refused(hostile):
    from .hostile_torchscript import refused_constructs

    archives, marker = hostile
    return refused_constructs(marker.parent / "refused", marker)


@pytest.mark.parametrize("case,words", [("torch.load", "calls torch.load"),
                                        ("op outside the allow-list", "calls torch._unsafe_view"),
                                        ("custom class", "custom C++ class")])
def test_other_refused_constructs_through_extract_and_info(hostile, refused, good_scene,
                                                           tmp_path, case, words):
    _, marker = hostile
    marker.unlink(missing_ok=True)
    out = tmp_path / "out"
    result = invoke("extract", good_scene, "--model", refused[case], "--out", out,
                    "--no-vectorize")
    assert_clean_failure(result, 5, "refused before loading", words, out=out)
    assert_clean_failure(invoke("info", refused[case]), 5, "refused before loading", words)
    assert not marker.exists(), case


@pytest.mark.parametrize("case", ["__setstate__ from_file", "forward from_file",
                                  "reads a second file", "torch.save", "ops.aten.from_file",
                                  "torch.load", "op outside the allow-list", "custom class"])
def test_hostile_torchscript_refused_by_batch(hostile, refused, good_scene, tmp_path, case):
    archives, marker = hostile
    marker.unlink(missing_ok=True)
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    (scenes / "a.tif").symlink_to(good_scene)
    out = tmp_path / "out"
    result = invoke("batch", scenes, "--model", {**archives, **refused}[case], "--out", out,
                    "--workers", "1")
    assert result.exit_code == 5, result.output
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("roadprn: error: ")]
    assert len(errors) == 1 and "refused before loading" in errors[0], result.stderr
    assert "Traceback" not in result.output
    assert not marker.exists()


def test_legitimate_torchscript_still_runs_through_extract_and_info(tmp_path, good_scene):
    """A traced and a scripted export of the project's tiny U-Net pass the check and run."""
    import warnings

    import torch

    from roadprn.models.base import build_model

    from .hostile_torchscript import write_sidecar

    model = build_model("tiny_unet", in_channels=3).eval()
    traced, scripted = tmp_path / "traced.pt", tmp_path / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(model, torch.zeros(1, 3, 64, 64), check_trace=False).save(str(traced))
    torch.jit.script(model).save(str(scripted))
    for path in (traced, scripted):
        write_sidecar(path)
        out = tmp_path / f"out-{path.stem}"
        result = invoke("extract", good_scene, "--model", path, "--out", out, "--no-vectorize")
        assert result.exit_code == 0, result.output
        assert (out / "good_probability.tif").is_file()
        result = invoke("info", path)
        assert result.exit_code == 0 and "code check" in result.output, result.output
