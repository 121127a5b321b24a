"""Writing the road network: GeoPackage (roads, junctions, runs, embedded QGIS style) and
single-layer GeoJSON / FlatGeobuf / GeoParquet.

The GeoPackage carries its QGIS style in the standard ``layer_styles`` table with
``useAsDefault`` set, so QGIS draws roads as a bright line with a dark casing (visible on both
dark and light imagery) as soon as the file is opened. Every file is written under a temporary
name and renamed when complete (:func:`roadprn.outputs.atomic.atomic_output`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pyogrio

from roadprn import __version__
from roadprn.errors import ConfigError, InputError, disk_nearly_full, errno_in_text, one_line
from roadprn.outputs.atomic import atomic_output, check_writable, ogr_path
from roadprn.outputs.atomic import file_sha256 as io_file_sha256

FORMATS: dict[str, tuple[str, str]] = {  # name -> (GDAL driver or "parquet", extension)
    "gpkg": ("GPKG", ".gpkg"),
    "geojson": ("GeoJSON", ".geojson"),
    "fgb": ("FlatGeobuf", ".fgb"),
    "parquet": ("parquet", ".parquet"),
}
# GeoPackage 1.2: read without warnings by older GDAL/QGIS (e.g. Debian 12's QGIS 3.22)
GPKG_VERSION = "1.2"
LAYER_TYPES = {"roads": "LineString", "junctions": "Point"}

ROADS_QML = """<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22.0" styleCategories="Symbology|Labeling">
 <renderer-v2 type="singleSymbol" symbollevels="0" forceraster="0" enableorderby="0">
  <symbols>
   <symbol type="line" name="0" alpha="1" clip_to_extent="1" force_rhr="0">
    <layer class="SimpleLine" pass="0" locked="0" enabled="1">
     <prop k="line_color" v="20,20,20,255"/>
     <prop k="line_width" v="1.6"/>
     <prop k="line_width_unit" v="MM"/>
     <prop k="line_style" v="solid"/>
     <prop k="capstyle" v="round"/>
     <prop k="joinstyle" v="round"/>
    </layer>
    <layer class="SimpleLine" pass="0" locked="0" enabled="1">
     <prop k="line_color" v="255,214,0,255"/>
     <prop k="line_width" v="0.9"/>
     <prop k="line_width_unit" v="MM"/>
     <prop k="line_style" v="solid"/>
     <prop k="capstyle" v="round"/>
     <prop k="joinstyle" v="round"/>
    </layer>
   </symbol>
  </symbols>
 </renderer-v2>
 <blendMode>0</blendMode>
 <featureBlendMode>0</featureBlendMode>
 <layerOpacity>1</layerOpacity>
</qgis>
"""

JUNCTIONS_QML = """<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22.0" styleCategories="Symbology">
 <renderer-v2 type="singleSymbol" symbollevels="0" forceraster="0" enableorderby="0">
  <symbols>
   <symbol type="marker" name="0" alpha="1" clip_to_extent="1" force_rhr="0">
    <layer class="SimpleMarker" pass="0" locked="0" enabled="1">
     <prop k="name" v="circle"/>
     <prop k="color" v="230,30,30,255"/>
     <prop k="outline_color" v="255,255,255,255"/>
     <prop k="outline_width" v="0.3"/>
     <prop k="outline_width_unit" v="MM"/>
     <prop k="size" v="2.2"/>
     <prop k="size_unit" v="MM"/>
    </layer>
   </symbol>
  </symbols>
 </renderer-v2>
 <blendMode>0</blendMode>
 <featureBlendMode>0</featureBlendMode>
 <layerOpacity>1</layerOpacity>
</qgis>
"""

STYLES = {"roads": ROADS_QML, "junctions": JUNCTIONS_QML}
STYLE_NAME = "roadprn"


def _sld(layer: str) -> str:
    """Minimal SLD twin of the QML (some clients read only SLD)."""
    if layer == "roads":
        symbolizer = ("<se:LineSymbolizer><se:Stroke><se:SvgParameter name=\"stroke\">#ffd600"
                      "</se:SvgParameter><se:SvgParameter name=\"stroke-width\">3"
                      "</se:SvgParameter></se:Stroke></se:LineSymbolizer>")
    else:
        symbolizer = ("<se:PointSymbolizer><se:Graphic><se:Mark><se:WellKnownName>circle"
                      "</se:WellKnownName><se:Fill><se:SvgParameter name=\"fill\">#e61e1e"
                      "</se:SvgParameter></se:Fill></se:Mark><se:Size>8</se:Size></se:Graphic>"
                      "</se:PointSymbolizer>")
    return ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><StyledLayerDescriptor version=\"1.1.0\" "
            "xmlns=\"http://www.opengis.net/sld\" xmlns:se=\"http://www.opengis.net/se\">"
            f"<NamedLayer><se:Name>{layer}</se:Name><UserStyle><se:Name>{STYLE_NAME}</se:Name>"
            f"<se:FeatureTypeStyle><se:Rule>{symbolizer}</se:Rule></se:FeatureTypeStyle>"
            "</UserStyle></NamedLayer></StyledLayerDescriptor>")


def file_sha256(path: str | Path) -> str:
    """Checksum of an input file for provenance; an unreadable file is the user's error."""
    try:
        return io_file_sha256(path)
    except OSError as exc:
        raise InputError(f"cannot read {path} for its checksum: {exc.strerror}") from exc


def run_record(input_path: str | Path, config: Mapping[str, Any],
               model_hashes: Mapping[str, str] | None = None,
               command: str = "vectorize") -> dict[str, str]:
    """One row of the ``runs`` provenance table (nested values as JSON text)."""
    return {
        "roadprn_version": __version__,
        "command": command,
        "input_path": str(Path(input_path).resolve()),
        "input_sha256": file_sha256(input_path),
        "config_json": json.dumps(dict(config), sort_keys=True, default=str),
        "model_hashes_json": json.dumps(dict(model_hashes or {}), sort_keys=True),
        "created_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def output_paths(out_dir: str | Path, scene: str, fmt: str) -> list[Path]:
    """Files that :func:`write_network` will create for ``scene`` in ``out_dir``."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    ext = FORMATS[fmt][1]
    if fmt == "gpkg":
        return [out_dir / f"{scene}_roads{ext}"]
    return [out_dir / f"{scene}_roads{ext}", out_dir / f"{scene}_junctions{ext}",
            out_dir / f"{scene}_run.json"]


def _write_layer(frame: gpd.GeoDataFrame, path: Path, layer: str, fmt: str,
                 append: bool = False) -> None:
    if fmt == "parquet":
        try:
            frame.to_parquet(path, index=False)
        except ImportError as exc:
            raise ConfigError(
                "--format parquet needs pyarrow (pip install 'roadprn[parquet]')") from exc
        return
    options = {"dataset_options": {"VERSION": GPKG_VERSION}} if fmt == "gpkg" else {}
    try:
        with ogr_path(path) as name:
            pyogrio.write_dataframe(frame, name, layer=layer, driver=FORMATS[fmt][0],
                                    geometry_type=LAYER_TYPES[layer], promote_to_multi=False,
                                    append=append, **options)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise write_error(exc, path) from exc


def write_error(exc: Exception, path: Path) -> OSError:
    """GDAL's vector drivers report a full disk as text ("database or disk is full"): an
    ``OSError`` with the errno and the path, so the CLI prints it like any other I/O error."""
    code = errno_in_text(str(exc))
    if code == errno.ENOSPC or disk_nearly_full(path.parent):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    if code is not None:
        return OSError(code, os.strerror(code), str(path))
    return OSError(errno.EIO, one_line(exc, 300), str(path))


def _styles_frame(layers: list[str]) -> pd.DataFrame:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return pd.DataFrame({
        "f_table_catalog": [""] * len(layers),
        "f_table_schema": [""] * len(layers),
        "f_table_name": layers,
        "f_geometry_column": ["geom"] * len(layers),
        "styleName": [STYLE_NAME] * len(layers),
        "styleQML": [STYLES[name] for name in layers],
        "styleSLD": [_sld(name) for name in layers],
        "useAsDefault": [True] * len(layers),
        "description": [f"roadprn {__version__} default style"] * len(layers),
        "owner": [""] * len(layers),
        "ui": [None] * len(layers),
        "update_time": [now] * len(layers),
    })


def append_layer(frame: gpd.GeoDataFrame, path: Path, layer: str, append: bool) -> None:
    """Write (``append``: add) one chunk of a GeoPackage's ``roads`` or ``junctions`` layer; the
    archive merge writes its network cell by cell this way."""
    _write_layer(frame, path, layer, "gpkg", append=append)


def write_provenance(path: Path, run: Mapping[str, Any]) -> None:
    """The ``runs`` row and the QGIS ``layer_styles`` of the roads and junctions layers."""
    with ogr_path(path) as name:
        pyogrio.write_dataframe(pd.DataFrame([dict(run)]), name, layer="runs", driver="GPKG")
        pyogrio.write_dataframe(_styles_frame(["roads", "junctions"]), name,
                                layer="layer_styles", driver="GPKG")


def write_network(roads: gpd.GeoDataFrame, junctions: gpd.GeoDataFrame, out_dir: str | Path,
                  scene: str, run: Mapping[str, str], fmt: str = "gpkg",
                  overwrite: bool = False) -> list[Path]:
    """Write roads, junctions and provenance for one scene; returns the files written."""
    finals = output_paths(out_dir, scene, fmt)
    for final in finals:  # refuse before writing anything
        check_writable(final, overwrite)
    if fmt == "gpkg":
        with atomic_output(finals[0], overwrite) as tmp:
            _write_layer(roads, tmp, "roads", fmt)
            _write_layer(junctions, tmp, "junctions", fmt)
            write_provenance(tmp, run)
        return finals
    # several files: all are written under temporary names first and renamed only when every
    # one is complete, so a failure (disk full) on the last leaves none of them behind
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(atomic_output(final, overwrite)) for final in finals]
        _write_layer(roads, tmps[0], "roads", fmt)
        _write_layer(junctions, tmps[1], "junctions", fmt)
        tmps[2].write_text(json.dumps(dict(run), indent=2) + "\n")
    return finals
