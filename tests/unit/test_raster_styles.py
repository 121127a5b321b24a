"""QGIS style files of the raster outputs: renderer type, 0 transparent, the road colour."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from roadprn.raster import styles, write
from roadprn.raster.styles import ROAD_HEX, mask_qml, probability_qml, style_path, write_style
from roadprn.vectorize.gpkg import ROADS_QML


def _renderer(qml: str) -> ET.Element:
    root = ET.fromstring(qml.split("\n", 1)[1])  # past the DOCTYPE line
    assert root.tag == "qgis"
    renderer = root.find("pipe/rasterrenderer")
    assert renderer is not None
    return renderer


def test_road_colour_is_the_geopackage_style_colour() -> None:
    r, g, b = styles.ROAD_RGB
    assert f'v="{r},{g},{b},255"' in ROADS_QML
    assert styles.MASK_NODATA == write.MASK_NODATA


def test_mask_qml_is_paletted_with_0_transparent_and_1_road_colour() -> None:
    renderer = _renderer(mask_qml("refined road mask"))
    assert renderer.get("type") == "paletted" and renderer.get("band") == "1"
    entries = {e.get("value"): e for e in renderer.iter("paletteEntry")}
    assert set(entries) == {"0", "1"}
    assert entries["0"].get("alpha") == "0"
    assert entries["1"].get("alpha") == "255" and entries["1"].get("color") == ROAD_HEX
    assert entries["1"].get("label") == "refined road mask"


def test_probability_qml_is_a_pseudocolour_ramp_from_transparent() -> None:
    renderer = _renderer(probability_qml())
    assert renderer.get("type") == "singlebandpseudocolor"
    shader = renderer.find("rastershader/colorrampshader")
    assert shader is not None and shader.get("colorRampType") == "INTERPOLATED"
    items = [(int(i.get("value", -1)), int(i.get("alpha", -1))) for i in shader.iter("item")]
    assert items[0] == (0, 0) and items[-1] == (255, 255)
    assert [v for v, _ in items] == sorted(v for v, _ in items)


def test_style_written_atomically_beside_the_raster(tmp_path) -> None:
    raster = tmp_path / "s_mask.tif"
    path = write_style(raster, mask_qml(), overwrite=False)
    assert path == style_path(raster) == tmp_path / "s_mask.qml"
    assert path.read_text() == mask_qml()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s_mask.qml"]  # no temporary left


def test_vrt_band_xml_has_description_and_a_full_colour_table() -> None:
    xml = styles.MASK_STYLE.vrt_xml()
    band = ET.fromstring(f"<VRTRasterBand>{xml}</VRTRasterBand>")
    assert band.findtext("Description") == "road mask"
    entries = band.findall("ColorTable/Entry")
    assert len(entries) == 256
    assert entries[1].attrib == {"c1": "255", "c2": "214", "c3": "0", "c4": "255"}
    assert entries[0].get("c4") == "0" and entries[255].get("c4") == "0"
