"""Layouts real archives contain, generated from synthetic scenes with known roads.

Each builder writes one layout into a folder and returns a :class:`Layout`: the path a user
would pass, the extra options they would need, the ground truth on the scene grid (roads 1,
background 0, 255 where the layout has no valid pixels) and what ``extract`` must do with it.
The images are small (a few hundred pixels a side) so that the whole corpus runs in CI.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import ColorInterp
from rasterio.transform import Affine

from roadprn.synth import generate_scene

WIDTH, HEIGHT = 320, 288
#: 0.35 m: 30 % finer than the models' 0.5 m, so extract resamples by default
RESOLUTION_M = 0.35
SEED = 2
VEGAS = (-115.3, 36.17)
ANTIMERIDIAN = (179.9995, -17.0)  # Fiji: the footprint spans lon 179.9995 .. 180.0006


@dataclass(frozen=True)
class Layout:
    name: str
    path: Path
    truth: Path | None = None  # mask on the scene grid: 1 road, 0 not, 255 invalid
    args: tuple[str, ...] = ()
    error: tuple[int, tuple[str, ...]] | None = None  # (exit code, words of the one line)
    roads: bool = True  # the synthetic roads must be found (False: too small to say)
    notes: str = ""
    extra_files: tuple[Path, ...] = field(default=())


# --------------------------------------------------------------------------- base scenes


def base_scene(folder: Path, crs: str = "EPSG:32631", origin: tuple[float, float] | None = None,
               *, bands: int = 3, dtype: str = "uint8", name: str = "base",
               width: int = WIDTH, height: int = HEIGHT) -> tuple[Path, Path]:
    """A synthetic scene and its truth mask (same grid); roads from ``SEED`` whatever the CRS."""
    result = generate_scene(folder / f"{name}.tif", width=width, height=height, seed=SEED,
                            crs=crs, origin=origin, resolution_m=RESOLUTION_M, bands=bands,
                            dtype=dtype, overviews=False)
    return Path(result.image_path), Path(result.mask_path)


def _read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as ds:
        return ds.read(), {"crs": ds.crs, "transform": ds.transform, "width": ds.width,
                           "height": ds.height}


def _write(path: Path, data: np.ndarray, grid: dict, **profile) -> Path:
    meta = {"driver": "GTiff", "count": data.shape[0], "dtype": data.dtype.name, **grid, **profile}
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **meta) as ds:
        ds.write(data)
    return path


def _truth_with(truth: Path, invalid: np.ndarray, out: Path) -> Path:
    """``truth`` with ``invalid`` pixels set to 255 (the layout's own nodata)."""
    data, grid = _read(truth)
    data[0][invalid] = 255
    return _write(out, data, grid, nodata=255)


def _holes(shape: tuple[int, int], *boxes: tuple[int, int, int, int]) -> np.ndarray:
    """Boolean image, True inside each (row0, row1, col0, col1) box."""
    mask = np.zeros(shape, bool)
    for r0, r1, c0, c1 in boxes:
        mask[r0:r1, c0:c1] = True
    return mask


ALPHA_HOLES = ((0, HEIGHT, 0, 40), (200, 260, 150, 260))
MASK_HOLES = ((20, 80, 200, 300),)
NODATA_HOLES = ((100, 150, 60, 140),)


def _rgba(folder: Path, name: str, crs: str, origin=None, **profile) -> Layout:
    image, truth = base_scene(folder, crs, origin, name=f"{name}_src")
    rgb, grid = _read(image)
    invalid = _holes(rgb.shape[1:], *ALPHA_HOLES)
    alpha = np.where(invalid, 0, 255).astype(np.uint8)[None]
    path = _write(folder / f"{name}.tif", np.concatenate([rgb, alpha]), grid, photometric="RGB",
                  alpha="YES", tiled=True, blockxsize=128, blockysize=128, **profile)
    return Layout(name, path, _truth_with(truth, invalid, folder / f"{name}_truth.tif"))


# --------------------------------------------------------------------------- the layouts


def rgba_4326(folder: Path) -> Layout:
    """SpaceNet's layout: R,G,B + alpha, uint8, EPSG:4326 (pixels not square in metres)."""
    return _rgba(folder, "rgba_4326", "EPSG:4326", VEGAS)


def rgba_utm(folder: Path) -> Layout:
    return _rgba(folder, "rgba_utm", "EPSG:32611", (660000.0, 4004000.0))


def rgba_mask_overviews(folder: Path) -> Layout:
    """RGBA plus an internal mask (GDAL's mask band hides the alpha) and overviews."""
    layout = _rgba(folder, "rgba_mask_ovr", "EPSG:32631")
    invalid = _holes((HEIGHT, WIDTH), *MASK_HOLES)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(layout.path, "r+") as ds:
        ds.write_mask(np.where(invalid, 0, 255).astype(np.uint8))
        ds.build_overviews([2, 4])
    truth = _truth_with(layout.truth, invalid, folder / "rgba_mask_ovr_truth2.tif")
    return Layout(layout.name, layout.path, truth)


def nodata_and_alpha(folder: Path) -> Layout:
    """RGBA with a nodata value as well (GDAL's mask band follows nodata, hiding the alpha)."""
    image, truth = base_scene(folder, name="nodata_alpha_src")
    rgb, grid = _read(image)
    rgb[rgb == 0] = 1  # 0 is the nodata value: keep it for the hole only
    alpha_holes = _holes(rgb.shape[1:], *ALPHA_HOLES)
    nodata_holes = _holes(rgb.shape[1:], *NODATA_HOLES)
    rgb[:, nodata_holes] = 0
    alpha = np.where(alpha_holes, 0, 255).astype(np.uint8)[None]
    path = _write(folder / "nodata_alpha.tif", np.concatenate([rgb, alpha]), grid,
                  photometric="RGB", alpha="YES", nodata=0)
    return Layout("nodata_alpha", path,
                  _truth_with(truth, alpha_holes | nodata_holes, folder / "nodata_alpha_truth.tif"))


PALETTE_LEVELS = (8, 8, 4)  # R, G, B levels: 256 colour-table entries, as real palette images


def _palette(folder: Path) -> tuple[Path, Path]:
    image, truth = base_scene(folder, name="palette_src")
    rgb, grid = _read(image)
    levels = np.array(PALETTE_LEVELS).reshape(3, 1, 1)
    q = np.minimum((rgb.astype(np.int32) * levels) // 256, levels - 1)
    index = (q[0] * PALETTE_LEVELS[1] * PALETTE_LEVELS[2] + q[1] * PALETTE_LEVELS[2] + q[2])
    colours = {}
    for i in range(int(np.prod(PALETTE_LEVELS))):
        r, g, b = i // (PALETTE_LEVELS[1] * PALETTE_LEVELS[2]), (i // PALETTE_LEVELS[2]) % \
            PALETTE_LEVELS[1], i % PALETTE_LEVELS[2]
        colours[i] = tuple(int((v + 0.5) * 256 / n)
                           for v, n in zip((r, g, b), PALETTE_LEVELS, strict=True)) + (255,)
    path = _write(folder / "palette.tif", index[None].astype(np.uint8), grid, photometric="PALETTE")
    with rasterio.open(path, "r+") as ds:
        ds.write_colormap(1, colours)
    return path, truth


def palette(folder: Path) -> Layout:
    """A colour-table image: its values are indexes, so it is refused with the way out."""
    path, truth = _palette(folder)
    return Layout("palette", path, truth,
                  error=(3, ("palette", "gdal_translate -of VRT -expand rgb")))


def palette_expanded(folder: Path) -> Layout:
    """The way out the error names: a VRT expanding the colour table to R,G,B (what
    ``gdal_translate -of VRT -expand rgb`` writes)."""
    path, truth = _palette(folder)
    with rasterio.open(path) as ds:
        width, height, transform, crs = ds.width, ds.height, ds.transform, ds.crs
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><ColorInterp>{ci}</ColorInterp>'
        f'<ComplexSource><SourceFilename relativeToVRT="1">{path.name}</SourceFilename>'
        f'<SourceBand>1</SourceBand><ColorTableComponent>{b}</ColorTableComponent>'
        f'</ComplexSource></VRTRasterBand>'
        for b, ci in ((1, "Red"), (2, "Green"), (3, "Blue")))
    vrt = folder / "palette_rgb.vrt"
    vrt.write_text(
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>{crs.to_wkt()}</SRS>'
        f'<GeoTransform>{", ".join(repr(v) for v in transform.to_gdal())}</GeoTransform>'
        f'{bands}</VRTDataset>')
    return Layout("palette_expanded", vrt, truth)


def ycbcr_jpeg(folder: Path) -> Layout:
    image, truth = base_scene(folder, name="ycbcr_src")
    rgb, grid = _read(image)
    path = _write(folder / "ycbcr_jpeg.tif", rgb, grid, compress="JPEG", photometric="YCBCR",
                  jpeg_quality=90, tiled=True, blockxsize=128, blockysize=128)
    return Layout("ycbcr_jpeg", path, truth)


def bigtiff(folder: Path) -> Layout:
    image, truth = base_scene(folder, name="bigtiff_src")
    rgb, grid = _read(image)
    return Layout("bigtiff", _write(folder / "bigtiff.tif", rgb, grid, BIGTIFF="YES",
                                    tiled=True, blockxsize=256, blockysize=256), truth)


def stripped(folder: Path) -> Layout:
    image, truth = base_scene(folder, name="stripped_src")
    rgb, grid = _read(image)
    return Layout("stripped", _write(folder / "stripped.tif", rgb, grid, tiled=False,
                                     blockysize=7, interleave="band"), truth)


def tiled(folder: Path) -> Layout:
    image, truth = base_scene(folder, name="tiled_src")
    rgb, grid = _read(image)
    return Layout("tiled", _write(folder / "tiled.tif", rgb, grid, tiled=True, blockxsize=64,
                                  blockysize=64, compress="deflate", predictor=2), truth)


MOSAIC_TILES = ((0, 144, 0, 160), (0, 144, 170, 320), (150, 288, 0, 160))  # + gaps


def vrt_mosaic(folder: Path) -> Layout:
    """Three tiles of a 2x2 mosaic (one missing, gaps between) in a VRT with an alpha band,
    as ``gdalbuildvrt -addalpha`` writes it: the gaps are invalid, the tiles valid."""
    image, truth = base_scene(folder, name="mosaic_src")
    rgb, grid = _read(image)
    t: Affine = grid["transform"]
    colour_bands, alpha_sources = [], []
    covered = np.zeros(rgb.shape[1:], bool)
    for k, (r0, r1, c0, c1) in enumerate(MOSAIC_TILES):
        name = f"mosaic_tile{k}.tif"
        _write(folder / name, rgb[:, r0:r1, c0:c1],
               {**grid, "width": c1 - c0, "height": r1 - r0,
                "transform": t * Affine.translation(c0, r0)})
        covered[r0:r1, c0:c1] = True
        rect = (f'<SrcRect xOff="0" yOff="0" xSize="{c1 - c0}" ySize="{r1 - r0}"/>'
                f'<DstRect xOff="{c0}" yOff="{r0}" xSize="{c1 - c0}" ySize="{r1 - r0}"/>')
        colour_bands.append([f'<SimpleSource><SourceFilename relativeToVRT="1">{name}'
                             f'</SourceFilename><SourceBand>{b}</SourceBand>{rect}</SimpleSource>'
                             for b in (1, 2, 3)])
        alpha_sources.append(f'<ComplexSource><SourceFilename relativeToVRT="1">{name}'
                             f'</SourceFilename><SourceBand>1</SourceBand>{rect}'
                             '<ScaleOffset>255</ScaleOffset><ScaleRatio>0</ScaleRatio>'
                             '</ComplexSource>')
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><ColorInterp>{ci}</ColorInterp>'
        + "".join(sources[b - 1] for sources in colour_bands) + '</VRTRasterBand>'
        for b, ci in ((1, "Red"), (2, "Green"), (3, "Blue")))
    bands += ('<VRTRasterBand dataType="Byte" band="4"><ColorInterp>Alpha</ColorInterp>'
              + "".join(alpha_sources) + '</VRTRasterBand>')
    vrt = folder / "mosaic.vrt"
    vrt.write_text(
        f'<VRTDataset rasterXSize="{grid["width"]}" rasterYSize="{grid["height"]}">'
        f'<SRS>{grid["crs"].to_wkt()}</SRS>'
        f'<GeoTransform>{", ".join(repr(v) for v in t.to_gdal())}</GeoTransform>{bands}'
        '</VRTDataset>')
    return Layout("vrt_mosaic", vrt, _truth_with(truth, ~covered, folder / "mosaic_truth.tif"))


def cog(folder: Path) -> Layout:
    image, truth = base_scene(folder, name="cog_src")
    rgb, grid = _read(image)
    path = folder / "cog.tif"
    rasterio.shutil.copy(image, path, driver="COG", BLOCKSIZE=128, OVERVIEWS="AUTO",
                         OVERVIEW_COUNT=2, COMPRESS="DEFLATE")
    return Layout("cog", path, truth)


def rgbn_uint16(folder: Path) -> Layout:
    """4-band R,G,B,NIR uint16 (11-bit): the model reads R,G,B and says it ignores band 4."""
    image, truth = base_scene(folder, name="rgbn", bands=4, dtype="uint16")
    return Layout("rgbn_uint16", image, truth, notes="warns: ignores band 4")


def bgr(folder: Path) -> Layout:
    image, truth = base_scene(folder, name="bgr_src")
    rgb, grid = _read(image)
    path = _write(folder / "bgr.tif", rgb[::-1].copy(), grid)
    return Layout("bgr", path, truth, args=("--bands", "3,2,1"))


def _world_file(path: Path, transform: Affine, crs) -> tuple[Path, Path]:
    """A world file (pixel centres) and a PAM .aux.xml that holds only the CRS."""
    centre = transform * Affine.translation(0.5, 0.5)
    suffix = {".png": ".pgw", ".jpg": ".jgw"}[path.suffix]
    world = path.with_suffix(suffix)
    world.write_text("\n".join(repr(v) for v in (transform.a, transform.d, transform.b,
                                                 transform.e, centre.c, centre.f)) + "\n")
    aux = path.with_name(path.name + ".aux.xml")
    aux.write_text(f"<PAMDataset><SRS>{crs.to_wkt()}</SRS></PAMDataset>")
    return world, aux


def _image_with_world_file(folder: Path, name: str, driver: str, suffix: str, **options) -> Layout:
    image, truth = base_scene(folder, name=f"{name}_src")
    rgb, grid = _read(image)
    path = folder / f"{name}{suffix}"
    with rasterio.Env(GDAL_PAM_ENABLED="NO"):
        with rasterio.open(path, "w", driver=driver, width=grid["width"], height=grid["height"],
                           count=3, dtype="uint8", **options) as ds:
            ds.write(rgb)
    for side in path.parent.glob(path.name + ".aux.xml"):
        side.unlink()
    world, aux = _world_file(path, grid["transform"], grid["crs"])
    return Layout(name, path, truth, extra_files=(world, aux))


def png_world_file(folder: Path) -> Layout:
    return _image_with_world_file(folder, "png_world", "PNG", ".png")


def jpeg_world_file(folder: Path) -> Layout:
    return _image_with_world_file(folder, "jpeg_world", "JPEG", ".jpg", quality=92)


def float_reflectance(folder: Path) -> Layout:
    """float32 reflectance 0..1 with NaN as nodata in a block."""
    image, truth = base_scene(folder, name="float_src")
    rgb, grid = _read(image)
    data = (rgb / 255.0 * 0.6).astype(np.float32)
    holes = _holes(rgb.shape[1:], *NODATA_HOLES)
    data[:, holes] = np.nan
    path = _write(folder / "float_nan.tif", data, grid, nodata=float("nan"))
    return Layout("float_nan", path, _truth_with(truth, holes, folder / "float_truth.tif"))


def antimeridian(folder: Path) -> Layout:
    """EPSG:4326, longitudes 179.9995 .. 180.0006: the footprint crosses the antimeridian."""
    image, truth = base_scene(folder, "EPSG:4326", ANTIMERIDIAN, name="antimeridian")
    return Layout("antimeridian", image, truth)


def one_pixel_wide(folder: Path) -> Layout:
    image, truth = base_scene(folder, name="one_px", width=1, height=200)
    return Layout("one_px_wide", image, truth, roads=False)


BUILDERS: dict[str, Callable[[Path], Layout]] = {
    "rgba_4326": rgba_4326,
    "rgba_utm": rgba_utm,
    "rgba_mask_overviews": rgba_mask_overviews,
    "nodata_alpha": nodata_and_alpha,
    "palette": palette,
    "palette_expanded": palette_expanded,
    "ycbcr_jpeg": ycbcr_jpeg,
    "bigtiff": bigtiff,
    "stripped": stripped,
    "tiled": tiled,
    "vrt_mosaic": vrt_mosaic,
    "cog": cog,
    "rgbn_uint16": rgbn_uint16,
    "bgr": bgr,
    "png_world": png_world_file,
    "jpeg_world": jpeg_world_file,
    "float_nan": float_reflectance,
    "antimeridian": antimeridian,
    "one_px_wide": one_pixel_wide,
}


def build(name: str, folder: Path) -> Layout:
    """Write layout ``name`` into a fresh sub-folder of ``folder``."""
    sub = folder / name
    if sub.exists():
        shutil.rmtree(sub)
    sub.mkdir(parents=True)
    return BUILDERS[name](sub)


# --------------------------------------------------------------------------- real data


def spacenet_rgba(realdata: Path, out: Path) -> Path:
    """SpaceNet 3's RGB-PanSharpen layout from the img33 chip: R,G,B + all-255 alpha, uint8,
    EPSG:4326, 2.7e-6 degrees (0.24 x 0.30 m) per pixel, Las Vegas."""
    with rasterio.open(realdata / "spacenet_vegas_img33" / "AOI_2_Vegas_img33.png") as ds:
        rgb = ds.read()[:3]
    alpha = np.full((1, *rgb.shape[1:]), 255, np.uint8)
    grid = {"crs": "EPSG:4326", "width": rgb.shape[2], "height": rgb.shape[1],
            "transform": Affine(2.7e-6, 0.0, VEGAS[0], 0.0, -2.7e-6, VEGAS[1])}
    path = _write(out, np.concatenate([rgb, alpha]), grid, photometric="RGB", alpha="YES",
                  tiled=True)
    with rasterio.open(path) as ds:
        assert [c for c in ds.colorinterp] == [ColorInterp.red, ColorInterp.green,
                                                ColorInterp.blue, ColorInterp.alpha]
    return path


def spacenet_label(realdata: Path) -> np.ndarray:
    with rasterio.open(realdata / "spacenet_vegas_img33" / "mask_AOI_2_Vegas_img33.png") as ds:
        return ds.read(1) > 127
