#!/usr/bin/env bash
# Real-QGIS check of a roadprn GeoPackage (headless).
#   scripts/qgis_check.sh [GPKG SCENE.tif [OUT.png]]
# Without arguments, two checks with the project's Python (.venv or $PYTHON):
#  1. vectorises the SpaceNet Vegas sample mask (../shared/realdata or $ROADPRN_REALDATA) and
#     checks the GeoPackage drawn over the PAN chip (EPSG:4326);
#  2. runs `roadprn extract` with the default model on the bundled example scene (synthetic, UTM)
#     and checks its GeoPackage and COGs load in QGIS with the scene's CRS, drawn over the scene,
#     each COG with its .qml style (renderer type, 0 transparent), and the mask drawn over the
#     scene (qgis_mask.png).
# Installs Debian's qgis + python3-qgis first if the system python3 cannot import qgis.core
# (needs root; ~1 min and ~0.5 GB on Debian 12 with --no-install-recommends).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
syspy=/usr/bin/python3

if ! "$syspy" -c "import qgis.core" 2>/dev/null; then
    echo "installing qgis + python3-qgis (apt)..." >&2
    start=$(date +%s)
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends qgis python3-qgis >/dev/null
    echo "qgis installed in $(( $(date +%s) - start )) s" >&2
fi

if [[ $# -ge 2 ]]; then
    gpkg="$1"; scene="$2"; png="${3:-qgis_check.png}"
else
    realdata="${ROADPRN_REALDATA:-$root/../shared/realdata}"
    vegas="$realdata/spacenet_vegas_pan"
    work="$(mktemp -d)"
    py="${PYTHON:-$root/.venv/bin/python}"
    "$py" - "$vegas/sample_road_raster_mask.tif" "$work" <<'PY'
import sys
from roadprn.cli.vectorize import vectorize
vectorize.main([sys.argv[1], "--out", sys.argv[2], "--overwrite"], standalone_mode=False)
PY
    QT_QPA_PLATFORM=offscreen "$syspy" "$here/qgis_check.py" \
        "$work/sample_road_raster_mask_roads.gpkg" --scene "$vegas/road_mask_input.tif" \
        --png "$work/qgis_vegas.png"
    example="$root/examples/synthetic_scene.tif"
    "$py" -m roadprn --quiet extract "$example" --out "$work/extract" >/dev/null
    rasters=()
    for r in "$work"/extract/*.tif; do rasters+=(--raster "$r"); done
    QT_QPA_PLATFORM=offscreen "$syspy" "$here/qgis_check.py" \
        "$work/extract/synthetic_scene_roads.gpkg" \
        --scene "$example" --png "${3:-$work/qgis_extract.png}" "${rasters[@]}" \
        --mask-png "$work/qgis_mask.png"
    echo "renders: $work/qgis_vegas.png ${3:-$work/qgis_extract.png} $work/qgis_mask.png"
    exit 0
fi

QT_QPA_PLATFORM=offscreen "$syspy" "$here/qgis_check.py" "$gpkg" --scene "$scene" --png "$png"
