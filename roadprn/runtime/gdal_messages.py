"""Keep GDAL's and libtiff's console messages off stderr; roadprn reports the failure itself.

On a full disk a user saw 15–21 lines of raw libtiff text before roadprn's one line. They come
from three places, each handled here or in the CLI's logging set-up:

- rasterio relays GDAL errors as log records (shown with ``-v``, see ``configure_logging``);
- GDAL's default error handler, on threads without rasterio's handler, prints ``ERROR 1: …``:
  ``CPL_LOG`` sends it to a file instead (``/dev/null`` unless ``-v``);
- the libtiff that GDAL links prints ``_tiffWriteProc: No space left on device.`` through
  libtiff's global default handler, although GDAL also receives every message through its
  per-file handler (which is what makes rasterio raise). Clearing the global handler
  (``TIFFSetErrorHandler(NULL)``) removes only the print.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def _libtiff_candidates() -> list[str]:
    """The libtiff GDAL uses: the copy bundled in rasterio's wheel, else the system's."""
    import rasterio

    bundled = Path(rasterio.__file__).resolve().parent.parent / "rasterio.libs"
    paths = sorted(str(p) for p in bundled.glob("libtiff*.so*")) if bundled.is_dir() else []
    system = ctypes.util.find_library("tiff")
    return paths + ([system] if system else [])


def silence_libtiff_console() -> bool:
    """Clear libtiff's global (printing) error and warning handlers; True if it was done."""
    done = False
    for candidate in _libtiff_candidates():
        try:
            lib = ctypes.CDLL(candidate, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
        except OSError:
            continue  # not the copy loaded in this process
        for name in ("TIFFSetErrorHandler", "TIFFSetWarningHandler"):
            setter = getattr(lib, name, None)
            if setter is not None:
                setter.restype = ctypes.c_void_p
                setter.argtypes = [ctypes.c_void_p]
                setter(None)
                done = True
    return done


def quiet_gdal_console(verbose: int) -> None:
    """No GDAL or libtiff text on stderr unless ``-v``; failures still raise as before."""
    if verbose:
        return
    os.environ.setdefault("CPL_LOG", os.devnull)
    if not silence_libtiff_console():
        log.debug("libtiff not found in this process; its messages may reach stderr")
