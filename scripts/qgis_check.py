"""Open a roadprn GeoPackage in real QGIS (headless) and check what a user would see.

Run with the system python3 that has Debian's python3-qgis, QT_QPA_PLATFORM=offscreen
(scripts/qgis_check.sh does both). Checks: both layers load, feature counts match OGR's,
the CRS is the expected one, the embedded default style (layer_styles) is applied, and a
render of roads over the scene shows the style's road colour. With --raster, each output raster
loads with the CRS and, beside it, its roadprn QGIS style (``<stem>.qml``, loaded by QGIS by
default): masks as a paletted renderer with 0 transparent and 1 in the road colour, the
probability as a pseudocolour ramp with 0 transparent; --mask-png renders the mask over the
scene and checks that the road colour shows and the scene shows through. Exit 0 only if all
pass.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from osgeo import ogr
from qgis.core import (
    QgsApplication,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsPalettedRasterRenderer,
    QgsRasterLayer,
    QgsSingleBandPseudoColorRenderer,
    QgsSingleSymbolRenderer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor

ROAD_RGB = (255, 214, 0)  # top symbol layer colour in roadprn.vectorize.gpkg.ROADS_QML


def ogr_count(gpkg: Path, layer: str) -> int:
    ds = ogr.Open(str(gpkg))
    return ds.GetLayerByName(layer).GetFeatureCount()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gpkg", type=Path)
    ap.add_argument("--scene", type=Path, help="raster drawn under the roads")
    ap.add_argument("--png", type=Path, default=Path("qgis_check.png"))
    ap.add_argument("--crs", help="expected authid, e.g. EPSG:4326 (default: the scene's)")
    ap.add_argument("--raster", type=Path, action="append", default=[],
                    help="an output raster (probability / mask COG) that must load with the "
                         "expected CRS (repeatable); its .qml style is checked too")
    ap.add_argument("--mask-png", type=Path,
                    help="render the first --raster mask over --scene into this PNG")
    args = ap.parse_args()

    app = QgsApplication([], False)
    app.initQgis()
    failures = run_checks(args)
    app.exitQgis()  # after run_checks returned, so no layer outlives the application
    print("QGIS check " + ("passed" if not failures else f"FAILED ({len(failures)})"))
    return 0 if not failures else 1


def run_checks(args: argparse.Namespace) -> list[str]:
    failures: list[str] = []

    def check(ok: bool, what: str) -> None:
        print(("ok   " if ok else "FAIL ") + what)
        if not ok:
            failures.append(what)

    layers = {}
    for name in ("roads", "junctions"):
        layer = QgsVectorLayer(f"{args.gpkg}|layername={name}", name, "ogr")
        check(layer.isValid(), f"layer {name} loads")
        if not layer.isValid():
            continue
        layers[name] = layer
        expected = ogr_count(args.gpkg, name)
        check(layer.featureCount() == expected,
              f"{name}: {layer.featureCount()} features (OGR: {expected})")
    scene = None
    if args.scene:
        scene = QgsRasterLayer(str(args.scene), "scene")
        check(scene.isValid(), f"scene {args.scene.name} loads")
    expected_crs = args.crs or (scene.crs().authid() if scene else None)
    masks = []
    for path in args.raster:
        raster = QgsRasterLayer(str(path), path.stem)
        check(raster.isValid(), f"raster {path.name} loads")
        if raster.isValid() and expected_crs:
            check(raster.crs().authid() == expected_crs,
                  f"raster {path.name} CRS {raster.crs().authid()} == {expected_crs}")
        if raster.isValid() and check_raster_style(raster, path, check):
            if path.stem.endswith("mask"):
                masks.append(raster)
    if args.mask_png and masks and scene is not None and scene.isValid():
        render_mask(masks[-1], scene, args.mask_png, check)
    for name, layer in layers.items():
        if expected_crs:
            check(layer.crs().authid() == expected_crs,
                  f"{name} CRS {layer.crs().authid()} == {expected_crs}")
        count, _ids, names, _desc, _err = layer.listStylesInDatabase()
        check(count >= 1 and "roadprn" in names, f"{name}: embedded style in layer_styles")
    roads = layers.get("roads")
    if roads is not None:
        renderer = roads.renderer()
        symbol = renderer.symbol() if isinstance(renderer, QgsSingleSymbolRenderer) else None
        colours = [symbol.symbolLayer(i).color().getRgb()[:3]
                   for i in range(symbol.symbolLayerCount())] if symbol else []
        check(ROAD_RGB in colours and len(colours) == 2,
              f"roads style applied on load (symbol layer colours {colours})")

        settings = QgsMapSettings()
        stack = [layers["junctions"], roads] if "junctions" in layers else [roads]
        if scene is not None and scene.isValid():
            stack.append(scene)
        settings.setLayers(stack)
        settings.setDestinationCrs(roads.crs())
        extent = scene.extent() if scene is not None and scene.isValid() else roads.extent()
        settings.setExtent(extent)
        settings.setOutputSize(QSize(900, 900))
        settings.setBackgroundColor(QColor(0, 0, 0))
        job = QgsMapRendererParallelJob(settings)
        job.start()
        job.waitForFinished()
        image = job.renderedImage()
        args.png.parent.mkdir(parents=True, exist_ok=True)
        check(image.save(str(args.png), "PNG"), f"render saved to {args.png}")
        road_px = sum(1 for y in range(0, image.height(), 3) for x in range(0, image.width(), 3)
                      if QColor(image.pixel(x, y)).getRgb()[:3] == ROAD_RGB)
        want = roads.featureCount() > 0
        check((road_px > 0) == want, f"render shows road colour ({road_px} sampled pixels)")
    return failures


def check_raster_style(raster: QgsRasterLayer, path: Path, check) -> bool:
    """The roadprn style beside ``path`` loads and is the renderer a user should see."""
    qml = path.with_suffix(".qml")
    check(qml.is_file(), f"style {qml.name} beside {path.name}")
    if not qml.is_file():
        return False
    message, ok = raster.loadNamedStyle(str(qml))
    check(ok, f"style {qml.name} loads ({message})")
    renderer = raster.renderer()
    if path.stem.endswith("probability"):
        is_ramp = isinstance(renderer, QgsSingleBandPseudoColorRenderer)
        check(is_ramp, f"{path.name}: singleband pseudocolour renderer "
                       f"({renderer.type() if renderer else None})")
        if not is_ramp:
            return False
        items = renderer.shader().rasterShaderFunction().colorRampItemList()
        first = min(items, key=lambda item: item.value)
        check(first.value == 0 and first.color.alpha() == 0,
              f"{path.name}: value 0 transparent (alpha {first.color.alpha()})")
        return True
    paletted = isinstance(renderer, QgsPalettedRasterRenderer)
    check(paletted, f"{path.name}: paletted renderer ({renderer.type() if renderer else None})")
    if not paletted:
        return False
    classes = {int(c.value): c.color for c in renderer.classes()}
    check(0 in classes and classes[0].alpha() == 0,
          f"{path.name}: value 0 transparent ({classes.get(0) and classes[0].getRgb()})")
    check(1 in classes and classes[1].getRgb()[:3] == ROAD_RGB and classes[1].alpha() == 255,
          f"{path.name}: value 1 in the road colour ({classes.get(1) and classes[1].getRgb()})")
    return True


def render_mask(mask: QgsRasterLayer, scene: QgsRasterLayer, png: Path, check) -> None:
    """Mask (its style) over the scene: road colour where roads are, the scene elsewhere."""
    settings = QgsMapSettings()
    settings.setLayers([mask, scene])
    settings.setDestinationCrs(scene.crs())
    settings.setExtent(scene.extent())
    settings.setOutputSize(QSize(800, 800))
    settings.setBackgroundColor(QColor(255, 0, 255))  # shows wherever nothing is drawn
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    png.parent.mkdir(parents=True, exist_ok=True)
    check(image.save(str(png), "PNG"), f"mask render saved to {png}")
    samples = [QColor(image.pixel(x, y)).getRgb()[:3] for y in range(0, image.height(), 4)
               for x in range(0, image.width(), 4)]
    road = sum(1 for rgb in samples if rgb == ROAD_RGB)
    other = sum(1 for rgb in samples if rgb not in (ROAD_RGB, (0, 0, 0), (255, 0, 255)))
    check(road > 0, f"mask render shows the road colour ({road} of {len(samples)} samples)")
    check(other > len(samples) // 4,
          f"mask render shows the scene through non-road pixels ({other} samples)")


if __name__ == "__main__":
    sys.exit(main())
