"""Crash-safe output files: write to a temporary sibling, rename when complete.

A crash, Ctrl-C or full disk therefore never leaves a file under the final name that looks
finished. Every output of roadprn goes through :func:`atomic_output`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from roadprn.errors import OutputError

TMP_MARKER = ".roadprn-tmp-"


def safe_name(text: str) -> str:
    """``text`` with every character but letters, digits, ``.``, ``_`` and ``-`` replaced.

    For the names roadprn makes up (temporary files, staging folders): GDAL and pyogrio read
    some characters of a path as syntax (pyogrio's URI parsing cuts a path at ``;``, GDAL
    treats ``?``, ``!`` and ``,`` specially in some drivers), so a made-up name never carries
    the user's odd characters; only the final rename gives a file its user-chosen name.
    """
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def temporary_sibling(final: Path) -> Path:
    """A unique temporary name in the same folder (so the final rename is atomic)."""
    return final.with_name(f"{safe_name(final.stem)}{TMP_MARKER}{uuid.uuid4().hex[:8]}"
                           f"{safe_name(final.suffix)}")


def check_writable(final: Path, overwrite: bool) -> None:
    """Fail before any work starts if ``final`` exists or its folder cannot be written."""
    if final.exists() and not overwrite:
        raise OutputError(f"{final} exists; pass --overwrite to replace it")
    folder = final.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {folder}: {exc.strerror}") from exc
    if not os.access(folder, os.W_OK):
        raise OutputError(f"output folder is not writable: {folder}")


@contextlib.contextmanager
def atomic_output(final: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path; on success rename it to ``final``, on any failure delete it.

    Works for files and folders (e.g. a GeoPackage or a shapefile set written as a folder).
    """
    final = Path(final)
    check_writable(final, overwrite)
    tmp = temporary_sibling(final)
    try:
        yield tmp
        if not tmp.exists():
            raise OutputError(f"nothing was written for {final}")
        if final.is_dir() and not tmp.is_dir():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        remove_with_sidecars(tmp)
        raise


def remove_with_sidecars(path: Path) -> None:
    """Remove ``path`` and GDAL's sidecars of it (``.aux.xml``, ``.ovr``, ``-journal``).

    Matched by name prefix, never by a glob pattern: a scene called ``scene[1].tif`` makes
    ``[1]`` a character class in a pattern, which matched nothing and left the files behind.
    """
    _remove(path)
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return
    for sibling in siblings:
        if sibling.name.startswith(path.name):
            _remove(sibling)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Checksum of a file, streamed (scenes can be many GB); the one used for every output,
    input and checkpoint hash in roadprn."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def ogr_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """A name for ``path`` that pyogrio hands to GDAL unchanged.

    pyogrio parses a path as a URI first: it cuts it at ``;`` (URL parameters) and reads ``!``
    as an archive separator, so ``out;1/roads.gpkg`` or ``a!b.gpkg`` reach GDAL as other files.
    Such a path is reached through a symbolic link with a plain name in a private temporary
    folder (to the file's folder, or to the file itself when its own name is the problem).
    """
    from pyogrio.util import vsi_path

    text = os.fspath(path)
    if vsi_path(text) == text:
        yield text
        return
    target = Path(text).absolute()
    with tempfile.TemporaryDirectory(prefix="roadprn-ogr-") as tmp:
        if vsi_path(target.name) == target.name and vsi_path(tmp) == tmp:
            link = Path(tmp) / "folder"
            os.symlink(target.parent, link, target_is_directory=True)
            yield str(link / target.name)
        else:
            link = Path(tmp) / f"file{safe_name(target.suffix)}"
            os.symlink(target, link)
            yield str(link)
