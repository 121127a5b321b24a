"""GDAL settings that keep input files off the network and stop them running code.

roadprn reaches the network only for a path the user gives on purpose (a URL, ``/vsicurl/…``,
``/vsis3/…``). Parsing a VRT for network paths alone was bypassed many ways (zip and gzip
containers, byte-order marks, leading blanks, warped VRTs that GDAL opens inside
``rasterio.open``, GDAL tile indexes whose tiles live in a vector table), so the rule is enforced
by GDAL itself for the whole process, and only the open of a user's network path is let through
(:func:`network_allowed`). The XML scan in :mod:`roadprn.raster` stays as a second line.

What is set, and why (GDAL 3.10, https://gdal.org/en/stable/user/configoptions.html and
https://gdal.org/en/stable/user/virtual_file_systems.html#vsicurl):

- ``CPL_VSIL_CURL_ALLOWED_EXTENSIONS`` to an extension no file has: ``/vsicurl/`` and every file
  system built on it (``/vsis3/``, ``/vsigs/``, ``/vsiaz/``, ``/vsiadls/``, ``/vsioss/``,
  ``/vsiswift/``, ``/vsiwebhdfs/``, and the ``http://``/``https://``/``ftp://`` URLs rasterio
  turns into ``/vsicurl/``) then refuses to open any file, before any request is sent. The check
  is made when a file is opened, so a user's remote scene opened under :func:`network_allowed`
  keeps reading afterwards.
- ``GDAL_SKIP`` (rasterio's GDAL) of the drivers that fetch through GDAL's other HTTP client
  (``CPLHTTPFetch``, not subject to the option above): WMS, WMTS, WCS, the HTTP driver, STAC,
  OGC API, Earth Engine, Planet, NextGIS, DAAS; also the GeoJSON family (a tile index's
  ``<IndexDataset>http://…`` was fetched that way) and netCDF (its OPeNDAP client fetched
  ``NETCDF:"http://…"`` with its own curl). GDAL reads GDAL_SKIP when drivers are registered, so
  registration is run again after setting it.
- ``GDAL_VRT_ENABLE_PYTHON=NO``: no VRT pixel function written in Python runs, whatever the XML
  says or how it spells ``Python`` (https://gdal.org/en/stable/drivers/raster/vrt.html).
- ``GML_DOWNLOAD_SCHEMA=NO``: a local GML file (a vector ``evaluate`` input) whose
  ``xsi:schemaLocation`` is a WFS URL made the GML driver fetch the schema with CPLHTTPFetch
  (https://gdal.org/en/stable/drivers/vector/gml.html; both GDAL copies know this name, 3.12
  calls the older ``GML_DOWNLOAD_WFS_SCHEMA`` deprecated).
- pyogrio's own GDAL (3.12, vector inputs of ``evaluate`` and ``info``) has the same network
  drivers deregistered, and also OGR_VRT and GDALG: a file named ``truth.geojson`` holding an
  ``<OGRVRTDataSource>`` whose source is ``http://…``, or a GDALG pipeline reading a URL, was
  fetched by the GeoJSON driver's own HTTP client, which pyogrio must keep for local GeoJSON.

The options are environment variables, so they reach every copy of GDAL in the process
(rasterio's and pyogrio's own) and the batch worker processes started afterwards; the skipped
drivers are deregistered in each copy. A user's own ``CPL_VSIL_CURL_ALLOWED_EXTENSIONS`` is kept
for their network opens, a user's own ``GDAL_SKIP`` is kept in addition.

Not set: GDAL 3.10 has no option for a VRT nesting limit (only a fixed recursion limit of its
own), so roadprn's XML scan refuses chains deeper than 8 levels; ``GDAL_HTTP_*`` options
configure the HTTP client rather than forbid it, and ``GDAL_DISABLE_READDIR_ON_OPEN`` only saves
directory listings of network paths, which are refused anyway.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Iterator

#: An extension no file ends with: /vsicurl/ and the file systems built on it refuse every file.
NO_NETWORK = ".roadprn-refuses-network-for-local-inputs"

#: Network file systems of GDAL; a path holding one of them (anywhere, also inside a chain such
#: as /vsizip//vsicurl/...) was given for the network on purpose.
NETWORK_FILESYSTEMS = ("/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls", "/vsioss",
                       "/vsiswift", "/vsihdfs", "/vsiwebhdfs")

#: Drivers that talk to network services through CPLHTTPFetch (raster and vector names; a
#: name the GDAL copy does not have is ignored), plus GPSBabel (runs an external program),
#: ADBC (loads driver libraries) and GDALG (runs GDAL pipelines described by the file).
NETWORK_DRIVERS = ("WMS", "WMTS", "WCS", "HTTP", "DAAS", "EEDA", "EEDAI", "PLMOSAIC",
                   "PLSCENES", "OGCAPI", "STACIT", "STACTA", "NGW", "WFS", "OAPIF", "CSW",
                   "Carto", "AmigoCloud", "Elasticsearch", "GPSBabel", "ADBC", "GDALG")

#: Skipped in rasterio's GDAL only (pyogrio reads GeoJSON references for ``evaluate``): these
#: fetch an ``http://`` name with a client of their own.
RASTERIO_ONLY_SKIPS = ("GeoJSON", "GeoJSONSeq", "ESRIJSON", "TopoJSON", "netCDF")

#: Skipped in pyogrio's GDAL only: OGR VRT and GDALG files open other datasets by name, and
#: pyogrio keeps GeoJSON (which fetches an ``http://`` name itself) for local files.
PYOGRIO_ONLY_SKIPS = ("OGR_VRT",)

#: Environment options set for every copy of GDAL in the process.
PROCESS_OPTIONS = {"GDAL_VRT_ENABLE_PYTHON": "NO", "GML_DOWNLOAD_SCHEMA": "NO"}

# Every printable ASCII character but the list separators: as CPL_VSIL_CURL_ALLOWED_EXTENSIONS
# (suffixes, compared without the query string) this lets every URL through.
_ALLOW_ALL = ",".join(c for c in map(chr, range(33, 127)) if c != ",") + ",{noext}"

_LOCK = threading.Lock()
_installed = False
_user_allowed_extensions: str | None = None


def is_network_path(path: str) -> bool:
    """True for URLs and GDAL network file systems, also inside chains (/vsizip//vsicurl/...)."""
    text = str(path).lower()
    return "://" in text or any(prefix in text for prefix in NETWORK_FILESYSTEMS)


def install() -> None:
    """Forbid network access and Python pixel functions in GDAL for the whole process.

    Idempotent and cheap after the first call; :mod:`roadprn.raster` calls it on import and
    before every open, so every command and every batch worker has it before its first open.
    """
    global _installed, _user_allowed_extensions
    if _installed:
        return
    with _LOCK:
        if _installed:
            return
        own = os.environ.get("CPL_VSIL_CURL_ALLOWED_EXTENSIONS")
        if own != NO_NETWORK:
            _user_allowed_extensions = own
        os.environ["CPL_VSIL_CURL_ALLOWED_EXTENSIONS"] = NO_NETWORK
        os.environ.update(PROCESS_OPTIONS)
        _skip_network_drivers()
        _skip_pyogrio_network_drivers()
        _installed = True


def _skip_network_drivers() -> None:
    """Deregister rasterio's network drivers (GDAL_SKIP), also when registered before this.

    GDAL reads GDAL_SKIP only when it registers drivers; GDALAllRegister registers what is
    missing and then drops the drivers in GDAL_SKIP (GDALDriverManager::AutoSkipDrivers).
    Only names this GDAL has are listed: an unknown one makes GDAL print a warning on stderr.
    Set as a rasterio config option, not in the environment, so pyogrio's copy of GDAL keeps
    its GeoJSON driver.
    """
    import rasterio
    from rasterio.env import get_gdal_config, set_gdal_config

    unwanted = {d.upper() for d in (*NETWORK_DRIVERS, *RASTERIO_ONLY_SKIPS)}
    with rasterio.Env() as env:  # registers the drivers, GDAL messages go to rasterio's log
        present = [d for d in env.drivers() if d.upper() in unwanted]
    if not present:
        return
    own = str(get_gdal_config("GDAL_SKIP") or "").replace(",", " ").split()
    set_gdal_config("GDAL_SKIP", " ".join(dict.fromkeys([*own, *present])))
    _gdal_library().GDALAllRegister()
    with rasterio.Env() as env:
        left = sorted(set(env.drivers()) & set(present))
    if left:
        raise RuntimeError(f"GDAL kept the network drivers {', '.join(left)} after GDAL_SKIP")


def _skip_pyogrio_network_drivers() -> None:
    """The same for pyogrio's copy of GDAL (its own libgdal), keeping its GeoJSON driver."""
    import pyogrio
    import pyogrio._ogr

    unwanted = {d.upper() for d in (*NETWORK_DRIVERS, *PYOGRIO_ONLY_SKIPS)}
    present = [d for d in pyogrio.list_drivers() if d.upper() in unwanted]
    if not present:
        return
    own = str(pyogrio.get_gdal_config_option("GDAL_SKIP") or "").replace(",", " ").split()
    pyogrio.set_gdal_config_options({"GDAL_SKIP": " ".join(dict.fromkeys([*own, *present]))})
    library = ctypes.CDLL(pyogrio._ogr.__file__)
    library.GDALAllRegister.restype = None
    library.GDALAllRegister.argtypes = []
    library.GDALAllRegister()
    left = sorted(set(pyogrio.list_drivers()) & set(present))
    if left:
        raise RuntimeError(f"pyogrio's GDAL kept the drivers {', '.join(left)} after GDAL_SKIP")


_LIBRARY: ctypes.CDLL | None = None


def _gdal_library() -> ctypes.CDLL:
    """rasterio's own libgdal (symbols are looked up through the extension's dependencies)."""
    global _LIBRARY
    if _LIBRARY is None:
        import rasterio._base

        lib = ctypes.CDLL(rasterio._base.__file__)
        lib.VSIFOpenL.restype = ctypes.c_void_p
        lib.VSIFOpenL.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        lib.VSIFReadL.restype = ctypes.c_size_t
        lib.VSIFReadL.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t,
                                  ctypes.c_void_p]
        lib.VSIFCloseL.restype = ctypes.c_int
        lib.VSIFCloseL.argtypes = [ctypes.c_void_p]
        lib.GDALAllRegister.restype = None
        lib.GDALAllRegister.argtypes = []
        _LIBRARY = lib
    return _LIBRARY


def read_head(path: str, limit: int) -> bytes | None:
    """The first ``limit`` bytes of a local file as GDAL sees it, None when it cannot be read.

    Read through GDAL's own virtual file systems, so a VRT inside ``/vsizip/``, ``/vsigzip/``,
    ``/vsitar/`` (or a chain of them) is scanned as GDAL will parse it. Never for network paths.
    """
    if is_network_path(path):
        raise ValueError(f"{path}: read_head is for local files only")
    if not path.startswith("/vsi"):
        try:
            with open(path, "rb") as fh:
                return fh.read(limit)
        except OSError:
            return None
    install()
    lib = _gdal_library()
    handle = lib.VSIFOpenL(os.fsencode(path), b"rb")
    if not handle:
        return None
    try:
        buffer = ctypes.create_string_buffer(limit)
        count = lib.VSIFReadL(buffer, 1, limit, handle)
        return buffer.raw[:count]
    finally:
        lib.VSIFCloseL(handle)


@contextlib.contextmanager
def network_allowed(path: str) -> Iterator[None]:
    """Let GDAL open ``path`` over the network when the user gave a network path, else nothing.

    Scoped with ``rasterio.Env``: thread-local in worker threads, and in the main thread only
    for the duration of the open (GDAL checks the allowed extensions when a file is opened, so
    the dataset keeps reading afterwards).
    """
    install()
    if not is_network_path(path):
        yield
        return
    import rasterio

    allowed = _user_allowed_extensions if _user_allowed_extensions is not None else _ALLOW_ALL
    with rasterio.Env(CPL_VSIL_CURL_ALLOWED_EXTENSIONS=allowed):
        yield
