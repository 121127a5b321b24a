"""Hostile TorchScript archives for the tests: each, if torch.jit.load'ed and run, creates
``marker`` (so a test can tell whether any of its code ran).

Built with torch.jit.script where TorchScript's Python frontend accepts the construct, and by
editing the saved code where only the archive's own source importer accepts it (an attacker
writes the archive, not Python).
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from torch import nn

SIDECAR = {"bands": [1, 2, 3], "normalization": {"mode": "dtype"}, "gsd_m": 0.5,
           "tile_size": 64, "halo": 8, "output": "logits"}


def write_sidecar(model: Path) -> Path:
    sidecar = model.with_suffix(".yaml")
    sidecar.write_text(yaml.safe_dump(SIDECAR))
    return sidecar


def _save(module: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript
        torch.jit.script(module).save(str(path))
    write_sidecar(path)
    return path


def forward_writes(path: Path, marker: Path) -> Path:
    """forward() creates ``marker`` with torch.from_file(shared=True) and writes through it."""

    class WritesInForward(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 1, 1)
            self.target = str(marker)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            mapped = torch.from_file(self.target, shared=True, size=16, dtype=torch.uint8)
            mapped.fill_(65)  # kept alive below, or TorchScript drops the call as dead code
            return self.conv(x) + mapped.float().sum() * 0

    return _save(WritesInForward(), path)


def setstate_writes(path: Path, marker: Path) -> Path:
    """__setstate__ writes ``marker`` while torch.jit.load runs, before roadprn sees a model."""

    class WritesWhileLoading(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 1, 1)
            self.k = 1
            self.target = str(marker)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

        @torch.jit.export
        def __getstate__(self) -> tuple[int, bool, str]:
            return (self.k, self.training, self.target)

        @torch.jit.export
        def __setstate__(self, state: tuple[int, bool, str]) -> None:
            mapped = torch.from_file(state[2], shared=True, size=16, dtype=torch.uint8)
            mapped.fill_(66)
            self.k = state[0] + int(mapped.sum().item()) * 0
            self.training = state[1]
            self.target = state[2]

    return _save(WritesWhileLoading(), path)


def reads_second_file(path: Path, secret: Path, marker: Path) -> Path:
    """forward() loads another file by path (``secret``) and copies it into ``marker``."""

    class ReadsAFile(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 1, 1)
            self.source, self.target = str(secret), str(marker)
            self.size = secret.stat().st_size

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            size = self.size
            stolen = torch.from_file(self.source, shared=False, size=size, dtype=torch.uint8)
            out = torch.from_file(self.target, shared=True, size=size, dtype=torch.uint8)
            out.copy_(stolen)
            return self.conv(x) + out.float().sum() * 0

    return _save(ReadsAFile(), path)


def edit_code(source: Path, path: Path, edit: Callable[[str], str]) -> Path:
    """A copy of the archive ``source`` with ``edit`` applied to the code file that holds its
    hostile call (the one mentioning ``from_file``)."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(path, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith(".py") and b"from_file" in data:
                data = edit(data.decode()).encode()
            zout.writestr(info, data)
    write_sidecar(path)
    return path


def forward_saves(path: Path, marker: Path, scratch: Path) -> Path:
    """forward() calls torch.save(x, marker): not scriptable from Python, but the archive's
    source importer compiles it."""
    plain = forward_writes(scratch, marker)
    text_from = "torch.from_file(target, True, 16, dtype=0)"

    def edit(code: str) -> str:
        assert text_from in code, code
        return code.replace(text_from,
                            "torch.zeros([16], dtype=0)\n    _9 = torch.save(x, target)")

    return edit_code(plain, path, edit)


def ops_namespace_writes(path: Path, marker: Path, scratch: Path) -> Path:
    """The same write spelled ops.aten.from_file."""
    plain = forward_writes(scratch, marker)
    return edit_code(plain, path, lambda code: code.replace("torch.from_file(",
                                                            "ops.aten.from_file("))


def all_hostile(folder: Path, marker: Path) -> dict[str, Path]:
    """Every hostile archive, by case name, each writing ``marker`` if its code runs."""
    folder.mkdir(parents=True, exist_ok=True)
    secret = folder / "secret.txt"
    secret.write_text("SECRET")
    return {
        "forward from_file": forward_writes(folder / "forward.pt", marker),
        "__setstate__ from_file": setstate_writes(folder / "setstate.pt", marker),
        "reads a second file": reads_second_file(folder / "reads.pt", secret, marker),
        "torch.save": forward_saves(folder / "save.pt", marker, folder / "scratch1.pt"),
        "ops.aten.from_file": ops_namespace_writes(folder / "ops.pt", marker,
                                                   folder / "scratch2.pt"),
    }


def custom_class(path: Path, scratch: Path) -> Path:
    """A plain model whose constants.pkl names a custom C++ class (TorchScript would build it
    and run its C++ __setstate__ while loading)."""

    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    plain = _save(Plain(), scratch)
    custom = b"\x80\x02c__torch__.torch.classes.quantized\nConv2dPackedParamsBase\n)\x81."
    with zipfile.ZipFile(plain) as zin, zipfile.ZipFile(path, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            zout.writestr(info, custom if info.filename.endswith("/constants.pkl") else data)
    write_sidecar(path)
    return path


def refused_constructs(folder: Path, marker: Path) -> dict[str, Path]:
    """Archives with a construct the guard refuses that this torch would not run as written
    (no ``torch.load`` builtin, a custom class it lacks), by case name: for the refusal and
    the absent marker only."""
    folder.mkdir(parents=True, exist_ok=True)
    writes = forward_writes(folder / "scratch3.pt", marker)
    return {
        "torch.load": edit_code(writes, folder / "load.pt",
                                lambda code: code.replace("torch.from_file(", "torch.load(")),
        "op outside the allow-list": edit_code(
            writes, folder / "unsafe.pt",
            lambda code: code.replace("torch.from_file(", "torch._unsafe_view(")),
        "custom class": custom_class(folder / "custom.pt", folder / "scratch4.pt"),
    }
