"""How the raster outputs look in a GIS: band descriptions, the masks' colour table, and the
QGIS style files (``.qml``) written next to each raster, so QGIS (which loads ``<name>.qml``
beside ``<name>.tif`` by default) and other viewers draw them sensibly on opening.

Masks (0 / 1, nodata 255): 0 and nodata transparent, 1 in the road colour of the GeoPackage's
embedded style (:data:`roadprn.vectorize.gpkg.ROADS_QML`), as a paletted renderer.
Probabilities (0-255): a pseudocolour ramp from transparent at 0 to the road colour at 255.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

from roadprn.outputs.atomic import atomic_output

ROAD_RGB = (255, 214, 0)  # the road line's colour in roadprn.vectorize.gpkg.ROADS_QML
ROAD_HEX = "#{:02x}{:02x}{:02x}".format(*ROAD_RGB)
MASK_NODATA = 255  # = roadprn.raster.write.MASK_NODATA (a test keeps them equal)

PROBABILITY = "road probability"
MASK = "road mask"
REFINED_MASK = "refined road mask"

#: the masks' colour table: 0 and nodata black with alpha 0, 1 the road colour. A TIFF
#: palette holds no alpha (GDAL reads 255 back), so other viewers show 0 black, nodata by the
#: nodata value; QGIS draws 0 transparent through the .qml
MASK_COLORMAP: dict[int, tuple[int, int, int, int]] = {
    0: (0, 0, 0, 0), 1: (*ROAD_RGB, 255), MASK_NODATA: (0, 0, 0, 0)}


@dataclass(frozen=True)
class BandStyle:
    """What a raster output's band says about itself (description, optional colour table)."""

    description: str
    colormap: dict[int, tuple[int, int, int, int]] | None = None

    def apply(self, ds) -> None:  # noqa: ANN001 - a rasterio dataset open for writing
        ds.set_band_description(1, self.description)
        if self.colormap is not None:
            ds.write_colormap(1, self.colormap)

    def vrt_xml(self) -> str:
        """The same as VRT band elements (``<Description>``, ``<ColorTable>``)."""
        xml = f"<Description>{html.escape(self.description)}</Description>"
        if self.colormap is not None:
            top = max(self.colormap)
            entries = "".join(
                '<Entry c1="{}" c2="{}" c3="{}" c4="{}"/>'.format(
                    *self.colormap.get(i, (0, 0, 0, 0))) for i in range(top + 1))
            xml = f"<ColorInterp>Palette</ColorInterp>{xml}<ColorTable>{entries}</ColorTable>"
        return xml


PROBABILITY_STYLE = BandStyle(PROBABILITY)
MASK_STYLE = BandStyle(MASK, MASK_COLORMAP)
REFINED_MASK_STYLE = BandStyle(REFINED_MASK, MASK_COLORMAP)

_HEAD = """<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22.0" styleCategories="Symbology">
 <pipe>
"""
_MINMAX = """   <minMaxOrigin>
    <limits>None</limits>
    <extent>WholeRaster</extent>
    <statAccuracy>Estimated</statAccuracy>
    <cumulativeCutLower>0.02</cumulativeCutLower>
    <cumulativeCutUpper>0.98</cumulativeCutUpper>
    <stdDevFactor>2</stdDevFactor>
   </minMaxOrigin>
"""
_TAIL = """  <brightnesscontrast brightness="0" contrast="0" gamma="1"/>
  <huesaturation saturation="0" grayscaleMode="0" colorizeOn="0" colorizeRed="255"
   colorizeGreen="128" colorizeBlue="128" colorizeStrength="100"/>
  <rasterresampler maxOversampling="2"/>
 </pipe>
 <blendMode>0</blendMode>
</qgis>
"""


def mask_qml(label: str = MASK) -> str:
    """A paletted (unique values) style: 0 transparent, 1 the road colour; nodata (255) is the
    file's nodata, which QGIS leaves transparent."""
    return (_HEAD
            + '  <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" '
              'nodataColor="">\n'
            + "   <rasterTransparency/>\n" + _MINMAX
            + "   <colorPalette>\n"
            + '    <paletteEntry value="0" color="#000000" alpha="0" label="no road"/>\n'
            + f'    <paletteEntry value="1" color="{ROAD_HEX}" alpha="255" '
              f'label="{html.escape(label)}"/>\n'
            + "   </colorPalette>\n"
            + "  </rasterrenderer>\n" + _TAIL)


# (value, (r, g, b), alpha) of the probability ramp (uint8: probability x 255)
PROBABILITY_RAMP = ((0, (0, 0, 0), 0), (64, (255, 80, 0), 60), (128, (255, 140, 0), 160),
                    (255, ROAD_RGB, 255))


def probability_qml() -> str:
    """A singleband pseudocolour ramp: 0 transparent, rising through orange to the road colour."""
    items = "".join(
        f'      <item value="{value}" color="#{r:02x}{g:02x}{b:02x}" alpha="{alpha}" '
        f'label="{value / 255:.2f}"/>\n' for value, (r, g, b), alpha in PROBABILITY_RAMP)
    return (_HEAD
            + '  <rasterrenderer type="singlebandpseudocolor" band="1" opacity="1" '
              'alphaBand="-1" classificationMin="0" classificationMax="255" nodataColor="">\n'
            + "   <rasterTransparency/>\n" + _MINMAX
            + "   <rastershader>\n"
            + '    <colorrampshader colorRampType="INTERPOLATED" classificationMode="1" '
              'clip="0" minimumValue="0" maximumValue="255" labelPrecision="2">\n'
            + items
            + "    </colorrampshader>\n   </rastershader>\n"
            + "  </rasterrenderer>\n" + _TAIL)


def style_path(raster: str | Path) -> Path:
    """QGIS's default style file of a raster: ``<name>.qml`` beside ``<name>.tif``."""
    return Path(raster).with_suffix(".qml")


def write_style(raster: str | Path, qml: str, overwrite: bool) -> Path:
    """Write ``qml`` as ``raster``'s style file (atomically); its path."""
    path = style_path(raster)
    with atomic_output(path, overwrite) as tmp:
        tmp.write_text(qml, encoding="utf-8")
    return path
