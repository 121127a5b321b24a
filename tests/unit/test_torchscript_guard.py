"""The TorchScript guard: real exports pass (and still load and run), everything else that
could reach files, memory or the network is refused, without running the archive."""

from __future__ import annotations

import importlib.util
import io
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from roadprn.errors import ModelError
from roadprn.models.base import load_torchscript
from roadprn.models.torchscript_guard import (
    ALLOWED_ATEN,
    check_pickle,
    check_source,
    check_torchscript_archive,
    find_unsafe_construct,
)

REPO = Path(__file__).resolve().parents[2]


def _allowlist_script():
    spec = importlib.util.spec_from_file_location(
        "torchscript_allowlist", REPO / "scripts" / "torchscript_allowlist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> list:
    """Scripted and traced exports of the project's architectures and smp-style models."""
    return _allowlist_script().reference_exports(tmp_path_factory.mktemp("exports"))


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("plain") / "conv.pt"
    torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(3, 1, 1), torch.nn.Sigmoid())).save(
        str(path))
    return path


def test_every_reference_export_passes_loads_and_runs(exports):
    labels = {label for label, *_ in exports}
    assert {"tiny_unet (trace)", "tiny_unet (script)", "dlinknet34 (trace)",
            "prn_fast (trace)", "unet (script)", "segformerlike (script)",
            "tiny_unet (frozen)", "dlinknet18 (frozen)"} <= labels
    for label, path, model, bands in exports:
        assert find_unsafe_construct(path) is None, label
        loaded = load_torchscript(path)
        x = torch.rand(1, bands, 64, 64)
        with torch.no_grad():
            assert torch.allclose(loaded(x), model(x), atol=1e-4), label


def _source(body: str, header: str = "") -> str:
    return (f"{header}class M(Module):\n  __parameters__ = []\n  training : bool\n"
            f"  def forward(self: __torch__.M,\n    x: Tensor) -> Tensor:\n{body}")


@pytest.mark.parametrize("body,words", [
    ("    t = torch.from_file(\"/tmp/m\", True, 16)\n    return x\n", "calls torch.from_file"),
    ("    _0 = torch.save(x, \"/tmp/m\")\n    return x\n", "calls torch.save"),
    ("    _0 = ops.aten.from_file(\"/tmp/m\")\n    return x\n", "calls ops.aten.from_file"),
    ("    _0 = ops.c10d.broadcast(x)\n    return x\n", "calls ops.c10d.broadcast"),
    ("    _0 = ops.prim.rpc_sync(x)\n    return x\n", "calls ops.prim.rpc_sync"),
    ("    _0 = torch._unsafe_view(x, [4])\n    return x\n", "calls torch._unsafe_view"),
    ("    _0 = torch.empty([4])\n    return x\n", "calls torch.empty"),
    ("    return torch.set_(x, x)\n", "calls torch.set_"),
    ("    return x.set_(x)\n", "method or attribute .set_"),
    ("    return getattr(x, \"set_\")(x)\n", "method or attribute .set_"),
    ("    return math.from_file(\"/tmp/m\")\n", "name 'math'"),
    ("    f = torch\n    return x\n", "'torch'"),
    ("    return torch.jit.load(\"m.pt\")\n", "'torch.jit.load'"),
    ("    return ops.load_library(\"x.so\")\n", "'ops.load_library'"),
    ("    return open(\"/tmp/m\", \"w\")\n", "name 'open'"),
    ("    print(x)\n    return x\n", "name 'print'"),
    ("    y = fork(self.forward, x)\n    return x\n", "name 'fork'"),
    ("    y = __torch__.torch.classes.ns.C()\n    return x\n", "torch.classes"),
    ("    return f\"{x}\"\n", "string literal"),
    ("    return r\"x\"\n", "string literal"),
    ("    return \"\"\"x\"\"\"\n", "string literal"),
    ("    return (lambda: x)()\n", "Lambda"),
    ("    return x @ x\n", "'@'"),
])
def test_refused_constructs(body: str, words: str):
    finding = check_source(_source(body), "code/__torch__.py")
    assert finding is not None and words in f"{finding.where} {finding.what}", finding


@pytest.mark.parametrize("body,words", [
    ("    # note\r    _0 = torch.relu(x)\n    return x\n", "control character"),
    ("    _0 = torch.relu(x)\t\n    return x\n", "control character"),
    ("    \uff46 = torch.relu(x)\n    return x\n", "non-ASCII"),
])
def test_characters_a_lexer_might_read_differently(body: str, words: str):
    finding = check_source(_source(body), "code/__torch__.py")
    assert finding is not None and words in finding.what, finding


def test_refused_module_forms():
    for header, words in [("import os\n", "import os"),
                          ("from torch import save\n", "import save")]:
        finding = check_source(_source("    return x\n", header), "code/__torch__.py")
        assert finding is not None and words in finding.what, finding
    decorated = _source("    return x\n").replace("  def forward",
                                                    "  @torch.jit.export\n  def forward")
    finding = check_source(decorated, "code/__torch__.py")
    assert finding is not None and "'@'" in finding.what  # decorators and @ alike


def test_setstate_refused_even_with_allowed_operators():
    code = _source("    return x\n") + (
        "  def __setstate__(self: __torch__.M,\n    state: Tuple[bool]) -> NoneType:\n"
        "    self.training = (state)[0]\n    return None\n")
    finding = check_source(code, "code/__torch__.py")
    assert finding is not None and "__setstate__" in finding.what


def test_allowed_source_passes():
    body = ("    y = torch.relu(torch.conv2d(x, CONSTANTS.c0))\n"
            "    _0 = getattr(self, \"0\")\n    n = int(torch.size(y, 2))\n"
            "    z = annotate(List[Tensor], [])\n    _1 = torch.append(z, y)\n"
            "    return torch.cat(z, 1)\n")
    assert check_source(_source(body), "code/__torch__.py") is None


def test_the_allow_list_has_no_file_storage_or_raw_memory_operator():
    forbidden = {"from_file", "save", "load", "set_", "empty", "empty_like", "storage",
                 "_unsafe_view", "_unsafe_index", "as_strided", "data_ptr", "from_blob"}
    assert not forbidden & ALLOWED_ATEN


def _rewrite(source: Path, target: Path, *, extra: list[tuple[str, bytes]] = (),
             replace: dict[str, bytes] | None = None, prefix: bytes = b"") -> Path:
    buffer = io.BytesIO()
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(buffer, "w") as zout:
        for info in zin.infolist():
            data = (replace or {}).get(info.filename.split("/", 1)[1], zin.read(info.filename))
            zout.writestr(info, data)
        for name, data in extra:
            zout.writestr(name, data)
    target.write_bytes(prefix + buffer.getvalue())
    return target


def _root(path: Path) -> str:
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()[0].split("/", 1)[0]


def test_zip_tricks_refused(plain: Path, tmp_path: Path):
    root = _root(plain)
    with zipfile.ZipFile(plain) as archive:  # torch mangles names: take the archive's own
        code = next(n for n in archive.namelist() if n.endswith(".py"))
    upper = code.replace("/code/", "/CODE/")
    cases = [
        ("appears twice", _rewrite(plain, tmp_path / "dup.pt", extra=[(code, b"x")])),
        ("appears twice", _rewrite(plain, tmp_path / "case.pt", extra=[(upper, b"x")])),
        ("outside the archive's root", _rewrite(plain, tmp_path / "root.pt",
                                                extra=[("other/code/__torch__.py", b"x")])),
        ("not part of a TorchScript archive", _rewrite(plain, tmp_path / "unknown.pt",
                                                       extra=[(f"{root}/model.json", b"{}")])),
        ("does not start with a zip entry",  # a flatbuffer polyglot torch would read as such
         _rewrite(plain, tmp_path / "prefix.pt", prefix=b"\x00\x00\x00\x00PTMF")),
    ]
    for words, path in cases:
        finding = find_unsafe_construct(path)
        assert finding is not None and words in finding.what, (words, finding)
        with pytest.raises(ModelError, match="refused before loading"):
            load_torchscript(path)


def test_pickle_globals_checked_without_unpickling(plain: Path, tmp_path: Path):
    class Boom:
        def __reduce__(self):
            return (print, ("ran",))

    assert check_pickle(pickle.dumps(Boom(), protocol=2), "data.pkl", set()) is not None
    assert "STACK_GLOBAL" in check_pickle(pickle.dumps(Boom(), protocol=4), "data.pkl",
                                          set()).what
    custom = b"\x80\x02c__torch__.torch.classes.quantized\nConv2dPackedParamsBase\n)\x81."
    finding = check_pickle(custom, "data.pkl", set())
    assert finding is not None and "custom C++ class" in finding.what
    undefined = b"\x80\x02c__torch__\nNotInCode\n)\x81."
    assert "NotInCode" in check_pickle(undefined, "data.pkl", set()).what
    assert check_pickle(undefined, "data.pkl", {"__torch__.NotInCode"}) is None
    hostile = _rewrite(plain, tmp_path / "pkl.pt", replace={"constants.pkl": custom})
    with pytest.raises(ModelError, match="custom C\\+\\+ class"):
        check_torchscript_archive(hostile)


def test_the_guard_runs_before_torch_jit_load(plain: Path, tmp_path: Path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: calls.append("load"))
    root = _root(plain)
    bad = _rewrite(plain, tmp_path / "bad.pt",
                   extra=[(f"{root}/code/__torch__/evil.py",
                           _source("    return torch.save(x, \"m\")\n").encode())])
    with pytest.raises(ModelError, match=r"code/__torch__/evil.py line \d+ calls torch.save"):
        load_torchscript(bad)
    assert calls == []
