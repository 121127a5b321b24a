"""Local files that would reach the network or run code: VRTs, tile indexes and their nested
references, scanned without letting GDAL fetch anything."""

from __future__ import annotations

import html
import os
import warnings
from pathlib import Path
from typing import Any

import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.io import DatasetReader

from roadprn.errors import InputError, gdal_reason, one_line
from roadprn.raster.gdal_env import GDAL_ERRORS
from roadprn.runtime import gdal_guard
from roadprn.runtime.gdal_guard import is_network_path

#: what GDAL says when it recognised a format but its structures end early or do not decode
TRUNCATION_SIGNS = ("TIFFReadDirectory", "TIFFFetch", "Failed to read", "Read error",
                    "Cannot read", "short read", "truncated", "IReadBlock failed")


def open_guarded(text: str, user_path: str, **kwargs: Any) -> DatasetReader:
    try:
        with warnings.catch_warnings(), gdal_guard.network_allowed(text):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(text, **kwargs)
    except RasterioIOError as exc:
        reason = gdal_reason(exc)
        if any(sign in reason for sign in TRUNCATION_SIGNS):  # a raster, cut short or damaged
            raise InputError(f"{user_path}: raster is unreadable, file truncated or corrupt "
                             f"({reason})") from None
        raise InputError(f"{user_path}: not a readable raster ({reason})") from None
    except GDAL_ERRORS as exc:
        raise InputError(f"{user_path}: cannot open raster ({gdal_reason(exc)})") from None


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
                current = open_guarded(name, user_path)
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
                is_xml = refuse_embedded_code(name, user_path, depth, scanned)
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
                if refuse_embedded_code(ref, user_path, depth + 1, scanned):
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
    met only as a failed read (GDAL refuses it; see :mod:`roadprn.runtime.gdal_guard`). The index is
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
    refuse_embedded_code(index, user_path, depth + 1)
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
    return one_line(text, limit + 1, more="…")


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


def refuse_embedded_code(path: str, user_path: str, depth: int = 0,
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
                refuse_embedded_code(candidate, user_path, depth + 1, scanned)
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
