"""Opening, validating and reading scenes window by window.

Every reader in roadprn goes through here so that all stages agree on what a valid pixel is
(nodata, internal masks, alpha, NaN/Inf), how windows beyond the scene edge are padded, and how
raw band values of any bit depth become model inputs. Nothing here reads a whole scene.
"""

from __future__ import annotations

import contextlib
import html
import math
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from pyproj import Geod
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio._err import CPLE_BaseError
from rasterio.errors import CRSError, NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.io import DatasetReader
from rasterio.transform import Affine
from rasterio.windows import Window

from roadprn import gdal_guard
from roadprn.config import NormalizationConfig
from roadprn.errors import ConfigError, InputError
from roadprn.gdal_guard import is_network_path

# Before anything here opens a file: no input reaches the network unless the user gave a network
# path (every command and batch worker imports this module before its first open).
gdal_guard.install()

_GEOD = Geod(ellps="WGS84")

DEFAULT_GDAL_CACHE_MB = 64

#: Held around GDAL mask-band reads and writes that run on different threads at once (reader
#: threads reading a scene's masks while the writer thread writes an output's mask): one CI run
#: segfaulted with the two inside GDAL's mask code together. Both calls are short.
MASK_IO_LOCK = threading.Lock()

#: What GDAL raises through rasterio: rasterio's own errors, and the CPLE_* errors that escape
#: from attribute reads (a truncated TIFF fails in ``ds.colorinterp`` when the next directory is
#: read). Every GDAL call after opening catches both and says which file failed.
GDAL_ERRORS: tuple[type[BaseException], ...] = (RasterioError, CPLE_BaseError)


def limit_gdal_cache(megabytes: int = DEFAULT_GDAL_CACHE_MB) -> None:
    """Cap GDAL's block cache unless the user set GDAL_CACHEMAX.

    GDAL's default (5 % of RAM) fills up while a large scene streams through, so peak memory
    would grow with the scene; windows are read once (plus halos), so a small cache loses
    nothing. GDAL reads this when its cache is first used: call it before opening rasters.
    """
    os.environ.setdefault("GDAL_CACHEMAX", str(megabytes))


def bounded_gdal_cache(megabytes: int = DEFAULT_GDAL_CACHE_MB) -> rasterio.Env:
    """A ``rasterio.Env`` that caps GDAL's block cache while it is active (library calls).

    Scanning a scene keeps every block it read in the cache (5 % of RAM by default), so a scan
    of a 16384² raster held ~600 MB. The user's own GDAL_CACHEMAX wins.
    """
    if "GDAL_CACHEMAX" in os.environ:
        return rasterio.Env()
    return rasterio.Env(GDAL_CACHEMAX=megabytes)


@dataclass(frozen=True)
class SceneInfo:
    """What roadprn needs to know about a scene before reading any pixels."""

    path: str
    driver: str
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    crs: CRS | None
    transform: Affine
    nodata: float | None
    block_shape: tuple[int, int]
    overviews: tuple[int, ...]
    colorinterp: tuple[str, ...]
    mask_flags: tuple[tuple[str, ...], ...]
    resolution_m: tuple[float, float] | None
    footprint_wgs84: tuple[float, float, float, float] | None
    data_bands: tuple[int, ...] = field(default=())

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def res(self) -> tuple[float, float]:
        return abs(self.transform.a), abs(self.transform.e)

    @property
    def crs_name(self) -> str:
        if self.crs is None:
            return "none (pixel coordinates)"
        epsg = self.crs.to_epsg()
        if epsg is not None:
            return f"EPSG:{epsg}"
        name = self.crs.to_dict().get("proj")
        if not name:
            known = self.crs.is_geographic or self.crs.is_projected
            name = "custom" if known else "local engineering"
        return f"custom ({name}, no EPSG code)"

    def as_dict(self) -> dict[str, Any]:
        """Plain types only: for JSON output and raster tags."""
        return {
            "path": self.path,
            "driver": self.driver,
            "width": self.width,
            "height": self.height,
            "bands": self.count,
            "data_bands": list(self.data_bands),
            "dtypes": list(self.dtypes),
            "crs": self.crs_name,
            "crs_wkt": self.crs.to_wkt() if self.crs else None,
            "transform": list(self.transform)[:6],
            "resolution": list(self.res),
            "resolution_m": list(self.resolution_m) if self.resolution_m else None,
            "nodata": self.nodata,
            "block_shape": list(self.block_shape),
            "overviews": list(self.overviews),
            "colorinterp": list(self.colorinterp),
            "mask_flags": [list(f) for f in self.mask_flags],
            "footprint_wgs84": list(self.footprint_wgs84) if self.footprint_wgs84 else None,
        }


# --------------------------------------------------------------------------- opening


def _check_path(path: str | Path) -> str:
    text = str(path)
    if text.startswith("/vsi") or "://" in text:
        return text  # GDAL virtual / remote path: let GDAL decide
    p = Path(text)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, expected a raster file")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: file is empty (0 bytes)")
    return text


def open_dataset(path: str | Path) -> DatasetReader:
    """rasterio.open with a clear one-line error instead of a GDAL traceback; caller closes it.

    A local file may not make GDAL reach the network: GDAL itself refuses (see
    :mod:`roadprn.gdal_guard`), and :func:`refuse_network_sources` checks the file's references
    first, so the user learns which path was refused. Only a network path the user gave opens
    with network access.
    """
    gdal_guard.install()
    text = _check_path(path)
    if is_network_path(text):
        return _open(text, text)
    key = _file_key(text)
    checked = key is not None and key in _VERIFIED_LOCAL
    if not checked:
        # before GDAL opens it: a warped VRT opens its source inside rasterio.open
        _refuse_embedded_code(text, text)
    ds = _open(text, text)
    if not checked:
        try:
            refuse_network_sources(ds, text)
        except BaseException:
            ds.close()
            raise
        if key is not None:
            _VERIFIED_LOCAL.add(key)
    return ds


# Local files already checked by refuse_network_sources in this process, by (path, mtime, size):
# every reader thread and every vectoriser tile opens the scene again, and following a large
# VRT mosaic's thousands of sources each time would cost more than the reads.
_VERIFIED_LOCAL: set[tuple[str, int, int]] = set()


def _file_key(path: str) -> tuple[str, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (os.path.realpath(path), stat.st_mtime_ns, stat.st_size)


def _open(text: str, user_path: str, **kwargs: Any) -> DatasetReader:
    try:
        with warnings.catch_warnings(), gdal_guard.network_allowed(text):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(text, **kwargs)
    except RasterioIOError as exc:
        raise InputError(f"{user_path}: not a readable raster ({_gdal_reason(exc)})") from None
    except GDAL_ERRORS as exc:
        raise InputError(f"{user_path}: cannot open raster ({_gdal_reason(exc)})") from None


# GDAL drivers that fetch data over a network. A user who passes a network path asks for
# network access; a local file (a VRT, a WMS description) must not get it on its own, because
# archives of unknown origin could make roadprn fetch or leak data. GDAL no longer registers
# these (gdal_guard); the check names them should a GDAL build keep one.
_NETWORK_DRIVERS = frozenset(d.upper() for d in gdal_guard.NETWORK_DRIVERS)
#: Drivers whose file is an XML description of other sources: refused when their text cannot
#: be read for the checks below (a container GDAL reads but roadprn cannot).
_XML_DRIVERS = frozenset({"VRT", "GTI", "DERIVED"})
_MAX_REFERENCE_DEPTH = 8
_XML_SCAN_BYTES = 16 << 20
_XML_SNIFF_BYTES = 64 << 10  # enough to tell XML from an image behind blanks
_NOT_NETWORK = ("roadprn reaches the network only for paths given on the command line "
                "(pass that path itself)")


def refuse_network_sources(ds: DatasetReader, user_path: str,
                           scanned: dict[str, bool] | None = None) -> None:
    """Refuse a local dataset that would read from the network or run embedded code.

    GDAL opens VRT sources lazily, so nothing has been fetched yet when this runs: it follows
    the files the dataset references (nested VRTs included), refuses network paths and
    network-backed drivers, and refuses VRT pixel functions written in Python. ``scanned``:
    XML files already read in this check (path -> is XML).
    """
    scanned = {} if scanned is None else scanned
    seen: set[str] = set()
    pending: list[tuple[DatasetReader | None, str, int]] = [(ds, user_path, 0)]
    while pending:
        current, name, depth = pending.pop()
        opened = current is None
        if opened:
            try:
                current = _open(name, user_path)
            except InputError:
                continue  # an unreadable source fails later, when it is read, as any bad pixel
        assert current is not None
        try:
            driver = current.driver.upper()
            if driver in _NETWORK_DRIVERS:
                raise InputError(
                    f"{user_path}: {'references ' + name + ', ' if name != user_path else ''}"
                    f"a {current.driver} dataset that reads from a network service; roadprn "
                    "reaches the network only for paths given on the command line")
            if name not in seen:
                # before asking for the file list: GDAL opens a VRT's overviews to list them
                seen.add(name)
                is_xml = _refuse_embedded_code(name, user_path, depth, scanned)
                if not is_xml and driver in _XML_DRIVERS:
                    raise InputError(f"{user_path}: {_short(name)} is a {current.driver} "
                                     "description roadprn cannot read to check its sources; "
                                     "unpack it to a plain file")
            refs = list(current.files)
            if driver == "GTI":
                refs += _tile_index_locations(name, user_path, depth)
            for ref in refs:
                if is_network_path(ref):
                    raise InputError(f"{user_path}: references the network path "
                                     f"{_short(ref)}; {_NOT_NETWORK}")
                if ref in seen:
                    continue
                seen.add(ref)
                if _refuse_embedded_code(ref, user_path, depth + 1, scanned):
                    if ref == current.name:
                        continue
                    _check_depth(depth + 1, ref, user_path)
                    pending.append((None, ref, depth + 1))
        finally:
            if opened:
                current.close()


def _tile_index_locations(path: str, user_path: str, depth: int) -> list[str]:
    """The tile paths of a GDAL tile index (GTI): rows of a vector layer, in no file list.

    GDAL opens the tiles only when pixels are read, so without this a tile on the network is
    met only as a failed read (GDAL refuses it; see :mod:`roadprn.gdal_guard`). The index is
    read with pyogrio; an index that is itself XML (an OGR VRT) is scanned first.
    """
    import xml.etree.ElementTree as ET

    import pyogrio

    index, layer, field_name = path.removeprefix("GTI:"), None, "location"
    raw = _xml_text(path)
    if raw is not None:
        try:
            root = ET.fromstring(raw)
        except ET.ParseError:
            return []  # GDAL cannot open it either
        values = {child.tag.lower(): (child.text or "").strip() for child in root}
        index = values.get("indexdataset", "")
        if index and not index.startswith("/vsi") and not os.path.isabs(index):
            index = os.path.join(os.path.dirname(path), index)
        layer = values.get("indexlayer") or None
        field_name = values.get("locationfield") or field_name
    if not index or is_network_path(index):
        return [index] if index else []
    _refuse_embedded_code(index, user_path, depth + 1)
    try:
        if layer is None:
            layer = str(pyogrio.list_layers(index)[0][0])
        meta = pyogrio.read_info(index, layer=layer).get("layer_metadata") or {}
        field_name = meta.get("LOCATION_FIELD", field_name)
        _, _, _, columns = pyogrio.raw.read(index, layer=layer, columns=[field_name],
                                            read_geometry=False)
    except Exception as exc:  # noqa: BLE001 - any failure: refuse rather than not check
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{user_path}: cannot read the tile index {_short(index)} to check "
                         f"its tiles ({_short(reason, 150)})") from None
    folder = os.path.dirname(index)
    locations = [str(v) for v in columns[0] if v]
    return [v if is_network_path(v) or os.path.isabs(v) or v.startswith("/vsi")
            else os.path.join(folder, v) for v in locations]


def _check_depth(depth: int, ref: str, user_path: str) -> None:
    if depth > _MAX_REFERENCE_DEPTH:
        # GDAL recurses through each level on every read (and a deep chain crashed it):
        # refuse instead of silently not checking the rest
        raise InputError(
            f"{user_path}: VRT/XML files nested more than {_MAX_REFERENCE_DEPTH} levels deep "
            f"(at {Path(ref).name}); flatten the mosaic, e.g. point one VRT at the image files")


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _xml_text(path: str) -> bytes | None:
    """The file's bytes when it is XML (byte-order mark and any leading blanks dropped)."""
    try:
        head = gdal_guard.read_head(path, _XML_SNIFF_BYTES)
        if head is None:
            return None
        start = head.removeprefix(b"\xef\xbb\xbf").lstrip()
        if start and not start.startswith(b"<"):
            return None  # an image: only its first bytes were read
        raw = gdal_guard.read_head(path, _XML_SCAN_BYTES) if len(head) == _XML_SNIFF_BYTES else head
    except ValueError:
        return None  # a network path: refused by the caller
    if raw is None:
        return None
    body = raw.removeprefix(b"\xef\xbb\xbf").lstrip()
    return body if body.startswith(b"<") else None


def _is_xml(path: str) -> bool:
    return _xml_text(path) is not None


def _refuse_embedded_code(path: str, user_path: str, depth: int = 0,
                          scanned: dict[str, bool] | None = None) -> bool:
    """Refuse Python pixel functions and network paths anywhere in a VRT/XML file's text.

    The file list GDAL reports leaves out some references (a band's ``<Overview>`` and
    ``<MaskBand>`` sources are opened only when used, a warped VRT's source is opened before
    any list exists), so the XML itself is read too, and local XML files it names are read in
    turn. Returns whether ``path`` is XML (False: not XML or unreadable, nothing checked);
    ``scanned`` remembers the files already read in one check.
    """
    scanned = {} if scanned is None else scanned
    if path in scanned:
        return scanned[path]
    raw = _xml_text(path)
    scanned[path] = raw is not None
    if raw is None:
        return False
    text = html.unescape(raw.decode("utf-8", "replace")).lower()
    if "pixelfunctionlanguage" in text and "python" in text:
        raise InputError(f"{user_path}: {Path(path).name} holds a Python pixel function; roadprn "
                         "never runs code from input files")
    folder = os.path.dirname(path)
    for ref in _xml_paths(raw):
        if is_network_path(ref):
            raise InputError(f"{user_path}: references the network path {_short(ref)} "
                             f"(in {Path(path).name}); {_NOT_NETWORK}")
        if "\n" in ref or "<" in ref or len(ref) > 4096:
            continue  # free text (an unparseable file yields its whole text), never a path
        for candidate in {ref, os.path.join(folder, ref)}:
            if candidate != path and _is_local_xml_file(candidate):
                _check_depth(depth + 1, candidate, user_path)
                _refuse_embedded_code(candidate, user_path, depth + 1, scanned)
    return True


def _is_local_xml_file(path: str) -> bool:
    """A plain local file or /vsi container member named in XML that is itself XML."""
    if path.startswith("/vsi"):
        return _is_xml(path)
    try:
        return os.path.isfile(path) and _is_xml(path)
    except (OSError, ValueError):
        return False


#: XML elements whose text is never a file name (free text, or CRS definitions whose WKT2 may
#: hold URIs such as http://www.opengis.net/def/crs/...); also every element ending in "srs"
_XML_FREE_TEXT = frozenset({"metadata", "mdi", "description", "colortable", "entry",
                            "categorynames", "category", "unittype", "histograms", "gcplist"})


def _xml_paths(raw: bytes) -> list[str]:
    """Every element text and attribute value outside free-text elements (unparseable: all)."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(raw)
    except ET.ParseError:
        return [html.unescape(raw.decode("utf-8", "replace"))]
    found: list[str] = []
    stack = [root]
    while stack:
        element = stack.pop()
        tag = str(element.tag).lower()
        if tag in _XML_FREE_TEXT or tag.endswith("srs"):
            continue
        found.extend(v for v in (element.text, *element.attrib.values()) if v and v.strip())
        stack.extend(element)
    return [v.strip() for v in found]


@contextlib.contextmanager
def open_raster(path: str | Path) -> Iterator[DatasetReader]:
    """:func:`open_dataset` as a context manager."""
    with open_dataset(path) as ds:
        yield ds


def _gdal_reason(exc: BaseException) -> str:
    """GDAL's own words, following rasterio's "see previous exception" chain to the cause."""
    seen = exc
    while "previous exception" in str(seen) and (seen.__cause__ or seen.__context__):
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    text = str(seen).strip()
    return (text.splitlines()[0] if text else type(seen).__name__)[:200]


def scene_info(ds: DatasetReader) -> SceneInfo:
    """Everything about ``ds`` but its pixels; a file GDAL cannot describe is a bad input.

    GDAL reads some of a TIFF's directories lazily (overviews, masks), so a truncated file can
    open and then fail in ``ds.colorinterp`` or ``ds.overviews``: those errors name the file.
    """
    try:
        return _scene_info(ds)
    except GDAL_ERRORS as exc:
        raise InputError(f"{ds.name}: raster is unreadable, file truncated or corrupt "
                         f"({_gdal_reason(exc)})") from None


def _scene_info(ds: DatasetReader) -> SceneInfo:
    crs = ds.crs if _has_georeferencing(ds) else None
    transform = ds.transform
    geometry_ok = crs is not None and _usable_transform(transform)
    resolution = None
    if geometry_ok and crs is not None:
        try:
            resolution = pixel_size_m(crs, transform, ds.width, ds.height)
        except InputError as exc:
            raise InputError(f"{ds.name}: {exc}") from None
    return SceneInfo(
        path=ds.name,
        driver=ds.driver,
        width=ds.width,
        height=ds.height,
        count=ds.count,
        dtypes=tuple(ds.dtypes),
        crs=crs,
        transform=transform,
        nodata=ds.nodata,
        block_shape=tuple(ds.block_shapes[0]) if ds.count else (0, 0),
        overviews=tuple(ds.overviews(1)) if ds.count else (),
        colorinterp=tuple(ci.name for ci in ds.colorinterp),
        mask_flags=tuple(tuple(f.name for f in flags) for flags in ds.mask_flag_enums),
        resolution_m=resolution,
        footprint_wgs84=footprint_wgs84(crs, ds.bounds) if geometry_ok and crs else None,
        data_bands=data_bands(ds),
    )


def _usable_transform(transform: Affine) -> bool:
    """Finite coefficients and a non-zero pixel size on both axes (else no metres, no grid)."""
    return (all(math.isfinite(v) for v in tuple(transform)[:6])
            and math.hypot(transform.a, transform.d) > 0
            and math.hypot(transform.b, transform.e) > 0)


def _has_georeferencing(ds: DatasetReader) -> bool:
    return ds.crs is not None and ds.transform != Affine.identity()


def data_bands(ds: DatasetReader) -> tuple[int, ...]:
    """1-based indexes of bands carrying data (alpha bands are masks, not model input)."""
    return tuple(i for i, ci in enumerate(ds.colorinterp, start=1) if ci != ColorInterp.alpha)


def open_scene(
    path: str | Path,
    *,
    allow_ungeoreferenced: bool = False,
    check_readable: bool = True,
) -> SceneInfo:
    """Open and validate a scene; the dataset is closed again (readers reopen per thread)."""
    with open_raster(path) as ds:
        info = scene_info(ds)
        validate_scene(ds, info, allow_ungeoreferenced=allow_ungeoreferenced)
        if check_readable:
            check_blocks_readable(ds)
    return info


def validate_scene(ds: DatasetReader, info: SceneInfo, *, allow_ungeoreferenced: bool) -> None:
    if info.width < 1 or info.height < 1 or info.count < 1:
        raise InputError(f"{info.path}: raster is empty ({info.width}x{info.height}, {info.count} bands)")
    if not info.data_bands:
        raise InputError(f"{info.path}: raster has only alpha bands, no data bands")
    if info.crs is None and not allow_ungeoreferenced:
        raise InputError(
            f"{info.path}: raster has no CRS/georeferencing; pass --allow-ungeoreferenced "
            "to work in pixel coordinates"
        )
    if info.crs is not None:
        _validate_georeferencing(ds, info)
    for dtype in info.dtypes:
        if np.dtype(dtype).kind == "c":
            raise InputError(f"{info.path}: complex-valued bands ({dtype}) are not imagery")


#: latitudes a hair beyond ±90 come from rounding in pixel-is-point / edge-of-pixel footprints
_LATITUDE_SLACK = 1e-6


def _validate_georeferencing(ds: DatasetReader, info: SceneInfo) -> None:
    """Refuse georeferencing that would give NaN metres or a degenerate inference grid."""
    t = info.transform
    if not _usable_transform(t):
        raise InputError(f"{info.path}: the geotransform has a zero or non-finite pixel size "
                         f"({', '.join(f'{v:g}' for v in tuple(t)[:6])}); georeferencing is broken")
    if info.crs is not None and info.crs.is_geographic:
        left, bottom, right, top = ds.bounds
        south, north = min(bottom, top), max(bottom, top)
        if south < -90 - _LATITUDE_SLACK or north > 90 + _LATITUDE_SLACK:
            raise InputError(f"{info.path}: latitudes {south:.6g} .. {north:.6g} lie beyond "
                             f"±90° in {info.crs_name}; the geotransform or CRS is wrong")
    if info.resolution_m is not None and not all(
            math.isfinite(v) and v > 0 for v in info.resolution_m):
        raise InputError(f"{info.path}: pixel size in metres is undefined at the scene centre "
                         f"({info.resolution_m[0]:g} x {info.resolution_m[1]:g} m); the "
                         "geotransform or CRS is wrong")


def check_blocks_readable(ds: DatasetReader) -> None:
    """Read the first and last block of every level: catches truncated files cheaply.

    GDAL writes a level's blocks in order, and overviews and masks after (or, in a COG, before)
    the full-resolution data, so a file cut anywhere loses the last block of some level: the
    full-resolution bands (first and last band, for band-separate files), the mask and each
    overview level. That is two blocks per level, however large the scene.
    """
    try:
        _read_level_corners(ds, ds.name)
        for level in range(len(ds.overviews(1))):
            with gdal_guard.network_allowed(ds.name), \
                    rasterio.open(ds.name, overview_level=level) as ovr:
                _read_level_corners(ovr, ds.name)
    except GDAL_ERRORS as exc:
        raise InputError(f"{ds.name}: raster data is unreadable, file truncated or corrupt "
                         f"({_gdal_reason(exc)})") from None


def _read_level_corners(ds: DatasetReader, name: str) -> None:
    bh, bw = ds.block_shapes[0]
    bh, bw = min(bh, ds.height), min(bw, ds.width)
    last = Window(ds.width - bw, ds.height - bh, bw, bh)
    explicit_mask = _explicit_mask_bands(ds, (1,))
    for window in (Window(0, 0, bw, bh), last):
        ds.read(1, window=window)
        if explicit_mask:
            with MASK_IO_LOCK:
                ds.read_masks(1, window=window)
    if ds.count > 1:
        ds.read(ds.count, window=last)


def check_band_count(info: SceneInfo, bands: Sequence[int] | None, expected: int | None) -> tuple[int, ...]:
    """The 1-based bands to read, checked against the scene and what the model expects."""
    if bands:
        bad = [b for b in bands if b < 1 or b > info.count]
        if bad:
            raise InputError(f"{info.path}: band(s) {bad} do not exist; the scene has {info.count} band(s)")
        chosen = tuple(bands)
    else:
        chosen = info.data_bands
        if expected is not None and len(chosen) > expected:
            raise InputError(
                f"{info.path}: scene has {len(chosen)} bands but the model expects {expected}; "
                f"choose them with --bands (e.g. --bands {','.join(map(str, range(1, expected + 1)))})"
            )
    if expected is not None and len(chosen) != expected:
        raise InputError(
            f"{info.path}: {len(chosen)} band(s) selected but the model expects {expected}"
        )
    palette = sorted({b for b in chosen
                      if b <= len(info.colorinterp) and info.colorinterp[b - 1] == "palette"})
    if palette:
        # colour-table indexes are labels, not intensities: any model would see noise
        raise InputError(
            f"{info.path}: band(s) {palette} hold colour-table (palette) indexes, not intensities; "
            "expand them to RGB first, e.g. gdal_translate -of VRT -expand rgb "
            f"{Path(info.path).name} {Path(info.path).stem}_rgb.vrt")
    return chosen


# --------------------------------------------------------------------------- geometry


def pixel_size_m(crs: CRS, transform: Affine, width: int, height: int) -> tuple[float, float]:
    """True pixel size (x, y) in metres at the scene centre.

    For geographic CRSs a degree of longitude shrinks with latitude, so pixels are not square in
    metres; for projected CRSs the CRS's linear unit is honoured (e.g. US survey feet).
    """
    if crs.is_geographic:
        cx, cy = transform @ (width / 2.0, height / 2.0)
        dx, dy = abs(transform.a), abs(transform.e)
        _, _, x_m = _GEOD.inv(cx - dx / 2, cy, cx + dx / 2, cy)
        _, _, y_m = _GEOD.inv(cx, cy - dy / 2, cx, cy + dy / 2)
        return float(x_m), float(y_m)
    factor = linear_unit_m(crs)
    return (math.hypot(transform.a, transform.d) * factor,
            math.hypot(transform.b, transform.e) * factor)


def linear_unit_m(crs: CRS) -> float:
    """Metres per CRS unit, for projected and for local engineering CRSs (no geographic base).

    rasterio's ``linear_units_factor`` is defined for projected CRSs only and raises on a local
    engineering CRS, whose axes still carry a unit (site grids in metres or feet).
    """
    try:
        return float(crs.linear_units_factor[1]) if crs.linear_units_factor else 1.0
    except CRSError:
        pass
    try:
        name, factor = crs.units_factor
    except CRSError:
        name, factor = "unknown", float("nan")
    if not (math.isfinite(factor) and factor > 0):
        raise InputError(f"CRS {crs.to_string()[:80]!r} has no linear unit ({name}); pixel sizes "
                         "in metres are unknown")
    return float(factor)


def footprint_wgs84(crs: CRS, bounds: Any) -> tuple[float, float, float, float] | None:
    """(west, south, east, north) in degrees, densified so curved edges are covered."""
    from rasterio.warp import transform_bounds

    try:
        west, south, east, north = transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21)
    except Exception:  # noqa: BLE001 - a CRS PROJ cannot invert: the footprint is optional
        return None
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        return None
    return float(west), float(south), float(east), float(north)


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class ValiditySources:
    """Where a scene's per-pixel validity comes from, each source taken on its own.

    GDAL's own mask band picks one source (an explicit mask shadows nodata, nodata shadows an
    alpha band), so an RGBA scene with a nodata value, or with an internal mask, would lose its
    alpha. roadprn combines them all: a pixel is valid when no band read is nodata, the alpha
    band (if any) is non-zero and the explicit mask (if any) is non-zero; non-finite values are
    invalid too (:func:`read_valid`).
    """

    nodata: tuple[tuple[int, float], ...]  # (band, nodata value) for the bands read
    alpha: int | None  # the alpha band's index
    mask_bands: tuple[int, ...]  # bands read whose GDAL mask is an explicit mask (not derived)

    @property
    def trivial(self) -> bool:
        """True when only non-finite values can make a pixel invalid."""
        return not (self.nodata or self.alpha or self.mask_bands)


def validity_sources(ds: DatasetReader, bands: Sequence[int]) -> ValiditySources:
    """The validity sources of ``bands`` of ``ds`` (a few GDAL attribute reads, no pixels)."""
    alpha = next((i for i, ci in enumerate(ds.colorinterp, start=1) if ci == ColorInterp.alpha),
                 None)
    nodata = tuple((b, float(v)) for b in bands
                   if (v := ds.nodatavals[b - 1]) is not None)
    return ValiditySources(nodata, alpha, _explicit_mask_bands(ds, bands))


def _explicit_mask_bands(ds: DatasetReader, bands: Sequence[int]) -> tuple[int, ...]:
    """Bands whose mask band is stored (internal/.msk/VRT mask), not derived from nodata/alpha."""
    derived = {MaskFlags.all_valid, MaskFlags.nodata, MaskFlags.alpha}
    return tuple(b for b in bands if not derived & set(ds.mask_flag_enums[b - 1]))


def read_valid(ds: DatasetReader, bands: Sequence[int], window: Window | None = None, *,
               out_shape: tuple[int, int] | None = None,
               sources: ValiditySources | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw values of ``bands`` in ``window`` and their validity (see :class:`ValiditySources`).

    ``out_shape=(h, w)`` reads decimated (nearest), e.g. from overviews. GDAL errors propagate.
    """
    sources = sources or validity_sources(ds, bands)
    bands = list(bands)
    extra = [sources.alpha] if sources.alpha is not None and sources.alpha not in bands else []
    kwargs: dict[str, Any] = {"window": window}
    if out_shape is not None:
        kwargs.update(out_shape=(len(bands) + len(extra), *out_shape),
                      resampling=Resampling.nearest)
    raw = ds.read(bands + extra, **kwargs)
    data = raw[:len(bands)]
    valid = np.ones(data.shape[1:], bool)
    for band, value in sources.nodata:
        values = data[bands.index(band)]
        if values.dtype.kind == "f":
            valid &= ~np.isnan(values) if math.isnan(value) else values != values.dtype.type(value)
        else:
            valid &= values != value
    if sources.alpha is not None:
        valid &= (raw[len(bands)] if extra else data[bands.index(sources.alpha)]) > 0
    if sources.mask_bands:
        mask_kwargs = dict(kwargs)
        if out_shape is not None:
            mask_kwargs["out_shape"] = (len(sources.mask_bands), *out_shape)
        with MASK_IO_LOCK:
            masks = ds.read_masks(list(sources.mask_bands), **mask_kwargs)
        valid &= np.all(masks > 0, axis=0)
    if data.dtype.kind == "f":
        valid &= np.all(np.isfinite(data), axis=0)
    return data, valid


def read_window(
    ds: DatasetReader | Any,
    window: Window,
    *,
    bands: Sequence[int],
    halo: int = 0,
    pad_mode: str = "reflect",
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``window`` grown by ``halo`` on each side, padded beyond the scene edge.

    Returns ``(data, valid)``: data float32 (bands, h + 2·halo, w + 2·halo) with raw values,
    valid bool (h + 2·halo, w + 2·halo): False for padding, nodata, masked/alpha and non-finite
    pixels. Invalid pixels in data are filled (0, or reflected neighbours for padding) so that a
    model never sees NaN. ``ds`` is a dataset or anything with ``width``, ``height``, ``name``
    and its own ``read_valid(bands, window)`` (a scene seen on a resampled grid,
    :class:`roadprn.grid.ResampledScene`).
    """
    col0 = int(window.col_off) - halo
    row0 = int(window.row_off) - halo
    out_w = int(window.width) + 2 * halo
    out_h = int(window.height) + 2 * halo
    c0, r0 = max(col0, 0), max(row0, 0)
    c1, r1 = min(col0 + out_w, ds.width), min(row0 + out_h, ds.height)
    if c1 <= c0 or r1 <= r0:
        return (np.zeros((len(bands), out_h, out_w), np.float32), np.zeros((out_h, out_w), bool))
    inner = Window(c0, r0, c1 - c0, r1 - r0)
    reader = getattr(ds, "read_valid", None)
    try:
        if reader is not None:
            raw, valid = reader(bands, inner)
        else:
            raw, valid = read_valid(ds, bands, inner)
    except GDAL_ERRORS as exc:
        raise InputError(f"{ds.name}: cannot read window {_window_text(inner)} ({_gdal_reason(exc)})") from None
    data = raw.astype(np.float32, copy=False)  # a fresh read (or copy): ours to change
    if not valid.all():
        data[:, ~valid] = 0.0
    pad = ((r0 - row0, row0 + out_h - r1), (c0 - col0, col0 + out_w - c1))
    if any(p for pair in pad for p in pair):
        mode = "symmetric" if pad_mode == "reflect" else "constant"
        data = np.pad(data, ((0, 0), *pad), mode=mode)
        valid = np.pad(valid, pad, mode="constant", constant_values=False)
    return data, valid


def _window_text(window: Window) -> str:
    return f"col {int(window.col_off)} row {int(window.row_off)} size {int(window.width)}x{int(window.height)}"


# --------------------------------------------------------------------------- normalisation


@dataclass(frozen=True)
class BandNormalizer:
    """``x * scale + offset`` per band, then clipped to [0, 1]: cheap to apply per tile."""

    scale: tuple[float, ...]
    offset: tuple[float, ...]
    clip: bool = True

    def __call__(self, data: np.ndarray) -> np.ndarray:
        scale = np.asarray(self.scale, np.float32).reshape(-1, 1, 1)
        offset = np.asarray(self.offset, np.float32).reshape(-1, 1, 1)
        out = data * scale + offset
        if self.clip:
            np.clip(out, 0.0, 1.0, out=out)
        return out.astype(np.float32, copy=False)

    def as_dict(self) -> dict[str, Any]:
        return {"scale": list(self.scale), "offset": list(self.offset), "clip": self.clip}


def dtype_range(dtype: str) -> tuple[float, float]:
    kind = np.dtype(dtype)
    if kind.kind in "ui":
        info = np.iinfo(kind)
        return float(info.min), float(info.max)
    return 0.0, 1.0


def make_normalizer(
    ds: DatasetReader, bands: Sequence[int], spec: NormalizationConfig
) -> BandNormalizer:
    """Build the per-band transform from a spec; percentiles come from a small sample read."""
    n = len(bands)
    mode = "percentile" if spec.mode == "auto" else spec.mode
    if mode == "fixed":
        assert spec.scale is not None
        scale = _per_band(spec.scale, n, "scale")
        offset = _per_band(spec.offset or [0.0], n, "offset")
        for name, values in (("scale", scale), ("offset", offset)):
            if not all(math.isfinite(v) for v in values):
                # NaN would make every pixel NaN and the model's output meaningless, silently
                raise ConfigError(f"bad value for config key 'input.normalization.{name}': got "
                                  f"{values}; every value must be a finite number")
        if not any(scale):
            raise ConfigError(f"bad value for config key 'input.normalization.scale': got {scale}; "
                              "a scale of 0 makes every band constant")
        return BandNormalizer(tuple(scale), tuple(offset))
    if mode == "dtype":
        lows, highs = zip(*(dtype_range(ds.dtypes[b - 1]) for b in bands), strict=True)
    else:
        lows, highs = estimate_percentiles(ds, bands, spec.percentiles, spec.sample_size)
    scale = tuple(1.0 / (h - lo) if h > lo else 1.0 for lo, h in zip(lows, highs, strict=True))
    offset = tuple(-lo * s for lo, s in zip(lows, scale, strict=True))
    return BandNormalizer(scale, offset)


def _per_band(values: Sequence[float], n: int, name: str) -> list[float]:
    if len(values) == 1:
        return [float(values[0])] * n
    if len(values) != n:
        raise InputError(f"normalization.{name} lists {len(values)} values for {n} selected band(s)")
    return [float(v) for v in values]


#: a scene at most this many times the sample's pixels is read decimated even without overviews
DECIMATED_READ_MAX_RATIO = 4
SAMPLE_GRID = 8  # windows per side when sampling a large scene without overviews


def estimate_percentiles(
    ds: DatasetReader,
    bands: Sequence[int],
    percentiles: tuple[float, float],
    sample_size: int = 1024,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-band low/high percentiles of valid pixels from a sample of about ``sample_size``².

    Cost and memory do not grow with the scene: a decimated read when GDAL can serve it from
    overviews (or the scene is small), else a grid of small windows (see :func:`sample_windows`).
    """
    try:
        sources = validity_sources(ds, bands)
        if ds.overviews(bands[0]) or \
                ds.width * ds.height <= DECIMATED_READ_MAX_RATIO * sample_size**2:
            sample, valid = _decimated_sample(ds, bands, sample_size, sources)
        else:
            reads = [read_valid(ds, bands, w, sources=sources)
                     for w in sample_windows(ds.height, ds.width, ds.block_shapes[0], sample_size)]
            sample = np.concatenate([r.reshape(len(bands), -1) for r, _ in reads], axis=1)
            valid = np.concatenate([m.reshape(-1) for _, m in reads])
    except GDAL_ERRORS as exc:
        raise InputError(f"{ds.name}: cannot read a sample for normalisation "
                         f"({_gdal_reason(exc)})") from None
    sample = sample.reshape(len(bands), -1).astype(np.float64, copy=False)
    valid = valid.reshape(-1)
    if not valid.any():
        raise InputError(f"{ds.name}: no valid pixels (all nodata, masked or non-finite)")
    lows, highs = [], []
    for band in sample:
        lo, hi = np.percentile(band[valid], percentiles)
        lows.append(float(lo))
        highs.append(float(hi))
    return tuple(lows), tuple(highs)


def _decimated_sample(ds: DatasetReader, bands: Sequence[int], sample_size: int,
                      sources: ValiditySources) -> tuple[np.ndarray, np.ndarray]:
    """The scene read at most ``sample_size`` pixels on its long side (nearest), with validity."""
    factor = max(1.0, max(ds.width, ds.height) / sample_size)
    shape = (max(1, round(ds.height / factor)), max(1, round(ds.width / factor)))
    return read_valid(ds, bands, out_shape=shape, sources=sources)


def sample_windows(height: int, width: int, block_shape: tuple[int, int],
                   sample_size: int, grid: int = SAMPLE_GRID) -> list[Window]:
    """``grid``² windows of (sample_size / grid)² pixels spread evenly over the scene.

    Without overviews a decimated read decodes every block of the file (13 s for a 16384²
    3-band uint16 scene, and a split batch scene paid it once per band); these windows sit
    inside one block each where blocks are large enough, so at most ``grid``² blocks (or, for a
    strip-organised file, the strips of ``grid`` bands of rows) are decoded.
    """
    side = max(1, sample_size // grid)
    side_r, side_c = min(height, side), min(width, side)

    def starts(extent: int, length: int, block: int) -> list[int]:
        out = []
        for k in range(grid):
            centre = int((k + 0.5) * extent / grid)
            start = centre - length // 2
            if block >= length:  # moved the least that puts it inside the block of its centre
                first = centre // block * block
                start = min(max(start, first), min(first + block, extent) - length)
            out.append(min(max(start, 0), extent - length))
        return out

    block_h, block_w = block_shape
    return [Window(c, r, side_c, side_r) for r in starts(height, side_r, block_h)
            for c in starts(width, side_c, block_w)]


def mask_flags_text(flags: Sequence[MaskFlags]) -> str:
    return "+".join(f.name for f in flags)
