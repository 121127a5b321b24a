"""Rasters in and out: opening and validating scenes, windowed reads with validity, band
normalisation, the inference grid, label rasterisation, and writing COGs.

Every reader in roadprn goes through here so that all stages agree on what a valid pixel is
(nodata, internal masks, alpha, NaN/Inf), how windows beyond the scene edge are padded, and how
raw band values of any bit depth become model inputs. Nothing here reads a whole scene.
"""

import warnings

from roadprn.runtime import gdal_guard

# Before anything here opens a file: no input reaches the network unless the user gave a network
# path (every command and batch worker imports this package before its first open).
gdal_guard.install()

# roadprn reports a raster without georeferencing itself (one line, or --allow-ungeoreferenced
# and its warning); rasterio's warnings about it, when such a scene is read or its outputs are
# written, are noise. A process-wide filter, since warnings.catch_warnings() is not
# thread-safe: reader threads opening files at once let the warning through to stderr.
from rasterio.errors import NotGeoreferencedWarning  # noqa: E402 - after the guard

warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
