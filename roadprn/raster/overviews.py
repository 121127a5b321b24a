"""COG overviews built while full-resolution strips stream to disk, not in a pass afterwards.

Letting GDAL's COG driver compute overviews re-reads and decompresses the finished raster and
resamples every level after inference has ended, about 5 % of an ``extract`` run on CPU. Here
each strip is reduced 2×2 as it is written (numpy on the writer thread, which has time to spare
while the model runs) and cascaded through the levels GDAL would make; a VRT then presents the
full-resolution raster with these overviews, and the COG driver only lays the file out.

Methods: ``average`` (mean of the valid pixels of each 2×2 block, rounded half up; a block with
none is invalid) for probabilities, ``nearest`` (the block's top-left pixel) for masks.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

Method = Literal["average", "nearest"]


def overview_factors(width: int, height: int, blocksize: int) -> list[int]:
    """The levels GDAL's COG driver makes (OVERVIEWS=AUTO): halve (rounding down, as GDAL
    counts them) until one block holds the image."""
    factors: list[int] = []
    while width > blocksize or height > blocksize:
        width, height = width // 2, height // 2
        factors.append(2 ** (len(factors) + 1))
    return factors


def reduce_2x2(values: np.ndarray, valid: np.ndarray,
               method: Method) -> tuple[np.ndarray, np.ndarray]:
    """One overview step of a uint8 block of rows; odd edges reduce over the pixels they have."""
    if method == "nearest":
        return values[::2, ::2].copy(), valid[::2, ::2].copy()
    h, w = values.shape
    if h % 2 or w % 2:  # pad with invalid pixels, which the mean ignores
        values = np.pad(values, ((0, h % 2), (0, w % 2)))
        valid = np.pad(valid, ((0, h % 2), (0, w % 2)))
    weighted = values.astype(np.uint16) * valid
    total = (weighted[0::2, 0::2] + weighted[1::2, 0::2] + weighted[0::2, 1::2]
             + weighted[1::2, 1::2])
    count = (valid[0::2, 0::2].astype(np.uint16) + valid[1::2, 0::2] + valid[0::2, 1::2]
             + valid[1::2, 1::2])
    mean = (total + count // 2) // np.maximum(count, 1)
    return mean.astype(np.uint8), count > 0


@dataclass
class _Level:
    factor: int
    dataset: Any
    row: int = 0
    carry: tuple[np.ndarray, np.ndarray] | None = None


@dataclass
class StreamedOverviews:
    """Overview levels of one single-band uint8 raster, fed with its rows in order.

    ``nodata`` marks invalid pixels of masks (written as values). Without it only the values
    are streamed (invalid blocks as 0) and the COG driver derives the mask's overviews from the
    full-resolution mask itself: writing GDAL mask bands of the levels from the writer thread
    while reader threads read masks crashed GDAL once (a segfault in CI).
    """

    base: Path
    width: int
    height: int
    profile: dict[str, Any]
    method: Method
    nodata: float | None = None
    blocksize: int = 512
    levels: list[_Level] = field(default_factory=list)

    def __post_init__(self) -> None:
        for factor in overview_factors(self.width, self.height, self.blocksize):
            profile = {**self.profile, "width": -(-self.width // factor),
                       "height": -(-self.height // factor), "nodata": self.nodata,
                       "transform": self.profile["transform"] * Affine.scale(factor)}
            path = self.level_path(factor)
            self.levels.append(_Level(factor, rasterio.open(path, "w", **profile)))

    def level_path(self, factor: int) -> Path:
        return self.base.with_name(f"{self.base.name}.ovr{factor}.tif")

    def add(self, values: np.ndarray, valid: np.ndarray) -> None:
        """The next rows of the full-resolution raster (uint8 values, bool validity)."""
        self._feed(0, values, valid, final=False)

    def close(self) -> None:
        """Flush the odd rows still waiting and close every level (idempotent)."""
        for index in range(len(self.levels)):
            carry = self.levels[index].carry
            if carry is not None:
                self.levels[index].carry = None
                self._reduce_into(index, *carry, final=True)
        for level in self.levels:
            if not level.dataset.closed:
                level.dataset.close()

    def _feed(self, index: int, values: np.ndarray, valid: np.ndarray, final: bool) -> None:
        if index >= len(self.levels):
            return
        level = self.levels[index]
        if level.carry is not None:
            values = np.concatenate([level.carry[0], values])
            valid = np.concatenate([level.carry[1], valid])
            level.carry = None
        if not final and values.shape[0] % 2:
            level.carry = (values[-1:].copy(), valid[-1:].copy())
            values, valid = values[:-1], valid[:-1]
        if values.shape[0]:
            self._reduce_into(index, values, valid, final)

    def _reduce_into(self, index: int, values: np.ndarray, valid: np.ndarray,
                     final: bool) -> None:
        level = self.levels[index]
        small, small_valid = reduce_2x2(values, valid, self.method)
        ds = level.dataset
        window = Window(0, level.row, ds.width, small.shape[0])
        if self.nodata is None:
            ds.write(np.where(small_valid, small, 0)[None], window=window)
        else:
            ds.write(small[None], window=window)
        level.row += small.shape[0]
        self._feed(index + 1, small, small_valid, final)

    def write_vrt(self, crs: CRS | None, transform: Affine, tags: dict[str, str],
                  band_xml: str = "") -> Path:
        """A VRT of the full-resolution raster with these overviews, for the COG driver.

        ``band_xml``: more elements of the band (its description, colour table:
        :meth:`roadprn.raster.styles.BandStyle.vrt_xml`)."""
        def source(path: Path, band: str) -> str:
            return (f'<SourceFilename relativeToVRT="0">{html.escape(str(path))}</SourceFilename>'
                    f"<SourceBand>{band}</SourceBand>")

        overviews = "".join(f"<Overview>{source(self.level_path(level.factor), '1')}</Overview>"
                            for level in self.levels)
        nodata = "" if self.nodata is None else f"<NoDataValue>{self.nodata:g}</NoDataValue>"
        mask = ("" if self.nodata is not None else  # overviews of the mask: made by the driver
                '<MaskBand><VRTRasterBand dataType="Byte"><SimpleSource>'
                f'{source(self.base, "mask,1")}</SimpleSource></VRTRasterBand></MaskBand>')
        srs = "" if crs is None else f"<SRS>{html.escape(crs.to_wkt())}</SRS>"
        metadata = "".join(f'<MDI key="{html.escape(k)}">{html.escape(v)}</MDI>'
                           for k, v in tags.items())
        xml = (f'<VRTDataset rasterXSize="{self.width}" rasterYSize="{self.height}">{srs}'
               f"<GeoTransform>{', '.join(repr(v) for v in transform.to_gdal())}</GeoTransform>"
               f"<Metadata>{metadata}</Metadata>"
               f'<VRTRasterBand dataType="Byte" band="1">{band_xml}{nodata}<SimpleSource>'
               f'{source(self.base, "1")}</SimpleSource>{overviews}</VRTRasterBand>'
               f"{mask}</VRTDataset>")
        path = self.base.with_name(f"{self.base.name}.vrt")
        path.write_text(xml, encoding="utf-8")
        return path
