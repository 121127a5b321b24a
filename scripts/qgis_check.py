"""Open a roadprn GeoPackage in real QGIS (headless) and check what a user would see.

Run with the system python3 that has Debian's python3-qgis, QT_QPA_PLATFORM=offscreen
(scripts/qgis_check.sh does both). Checks: both layers load, feature counts match OGR's,
the CRS is the expected one, the embedded default style (layer_styles) is applied, and a
render of roads over the scene shows the style's road colour. Exit 0 only if all pass.
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
    QgsRasterLayer,
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
                         "expected CRS (repeatable)")
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
    for path in args.raster:
        raster = QgsRasterLayer(str(path), path.stem)
        check(raster.isValid(), f"raster {path.name} loads")
        if raster.isValid() and expected_crs:
            check(raster.crs().authid() == expected_crs,
                  f"raster {path.name} CRS {raster.crs().authid()} == {expected_crs}")
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


if __name__ == "__main__":
    sys.exit(main())
