import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import from_origin
from rasterio.windows import Window

from roadprn.config import NormalizationConfig
from roadprn.errors import InputError
from roadprn.raster.geometry import pixel_size_m
from roadprn.raster.normalize import estimate_percentiles, make_normalizer
from roadprn.raster.read import read_valid, read_window
from roadprn.raster.scene import check_band_count, open_raster, open_scene


def ramp(h, w, bands=1, dtype="uint16"):
    arr = np.arange(h * w, dtype=np.float64).reshape(h, w)
    return np.stack([arr + 1000 * b for b in range(bands)]).astype(dtype)


def test_read_window_inside_matches_direct_read(make_raster):
    path = make_raster(ramp(40, 50, 2))
    with open_raster(path) as ds:
        data, valid = read_window(ds, Window(10, 5, 8, 6), bands=[1, 2], halo=3)
        direct = ds.read([1, 2], window=Window(7, 2, 14, 12)).astype(np.float32)
    assert data.shape == (2, 12, 14) and data.dtype == np.float32
    np.testing.assert_array_equal(data, direct)
    assert valid.all()


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_read_window_pads_beyond_edge_and_marks_invalid(make_raster, pad_mode):
    path = make_raster(ramp(20, 30))
    with open_raster(path) as ds:
        data, valid = read_window(ds, Window(0, 0, 10, 10), bands=[1], halo=4, pad_mode=pad_mode)
    assert data.shape == (1, 18, 18)
    assert not valid[:4].any() and not valid[:, :4].any()
    assert valid[4:, 4:].all()
    np.testing.assert_array_equal(data[0, 4:, 4:], ramp(20, 30)[0, :14, :14])
    if pad_mode == "constant":
        assert (data[0, :4] == 0).all()
    else:  # mirrored: row 3 of the padded window equals scene row 0
        np.testing.assert_array_equal(data[0, 3, 4:], data[0, 4, 4:])


def test_read_window_entirely_outside_is_all_invalid(make_raster):
    path = make_raster(ramp(8, 8))
    with open_raster(path) as ds:
        data, valid = read_window(ds, Window(20, 20, 4, 4), bands=[1], halo=1)
    assert data.shape == (1, 6, 6) and not valid.any() and (data == 0).all()


def test_one_by_one_scene_window_with_halo(make_raster):
    path = make_raster(np.array([[[7]]], dtype="uint8"))
    with open_raster(path) as ds:
        data, valid = read_window(ds, Window(0, 0, 1, 1), bands=[1], halo=5)
    assert data.shape == (1, 11, 11) and valid.sum() == 1 and valid[5, 5]
    assert (data == 7).all()  # reflect padding of a single pixel repeats it


def test_validity_from_nodata_nan_and_internal_mask(make_raster, tmp_path):
    arr = np.ones((2, 6, 6), np.float32)
    arr[0, 1, 1] = -9999
    arr[1, 2, 2] = np.nan
    arr[0, 3, 3] = np.inf
    path = make_raster(arr, nodata=-9999)
    with open_raster(path) as ds:
        data, valid = read_window(ds, Window(0, 0, 6, 6), bands=[1, 2])
    assert not valid[1, 1] and not valid[2, 2] and not valid[3, 3]
    assert valid.sum() == 36 - 3
    assert np.isfinite(data).all()

    # internal (per-dataset) mask, as written by GDAL_TIFF_INTERNAL_MASK
    masked = tmp_path / "masked.tif"
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(masked, "w", driver="GTiff", width=6, height=6, count=1, dtype="uint8",
                           crs="EPSG:32631", transform=from_origin(0, 0, 1, 1)) as ds:
            ds.write(np.full((1, 6, 6), 5, np.uint8))
            m = np.full((6, 6), 255, np.uint8)
            m[:, :2] = 0
            ds.write_mask(m)
    with open_raster(masked) as ds:
        _, valid = read_window(ds, Window(0, 0, 6, 6), bands=[1])
    assert not valid[:, :2].any() and valid[:, 2:].all()


def test_alpha_band_is_mask_not_data(make_raster):
    arr = np.full((4, 5, 5), 100, np.uint8)
    arr[3] = 255
    arr[3, 0, 0] = 0
    path = make_raster(arr, photometric="RGB", alpha="YES")
    info = open_scene(path)
    assert info.data_bands == (1, 2, 3)
    with open_raster(path) as ds:
        _, valid = read_window(ds, Window(0, 0, 5, 5), bands=info.data_bands)
    assert not valid[0, 0] and valid.sum() == 24


def test_open_scene_errors(tmp_path, make_raster):
    with pytest.raises(InputError, match="no such file"):
        open_scene(tmp_path / "missing.tif")
    with pytest.raises(InputError, match="is a directory"):
        open_scene(tmp_path)
    (tmp_path / "empty.tif").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        open_scene(tmp_path / "empty.tif")
    (tmp_path / "text.tif").write_text("not a raster\n")
    with pytest.raises(InputError, match="not a readable raster"):
        open_scene(tmp_path / "text.tif")
    nocrs = make_raster(ramp(4, 4), crs=None, transform=from_origin(0, 0, 1, 1))
    with pytest.raises(InputError, match="--allow-ungeoreferenced"):
        open_scene(nocrs)


def test_truncated_tiled_geotiff_is_detected(tmp_path):
    full = tmp_path / "full.tif"
    rng = np.random.default_rng(0)
    with rasterio.open(full, "w", driver="GTiff", width=1024, height=1024, count=1, dtype="uint8",
                       tiled=True, blockxsize=256, blockysize=256, crs="EPSG:32631",
                       transform=from_origin(0, 0, 1, 1)) as ds:
        ds.write(rng.integers(0, 255, (1, 1024, 1024), dtype=np.uint8))
    cut = tmp_path / "cut.tif"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        open_scene(cut)


def test_pixel_size_geographic_is_not_square():
    from rasterio.crs import CRS

    # 2.7e-6 degrees at 36.14 N (the SpaceNet Vegas chip): ~0.243 m by ~0.300 m
    transform = from_origin(-115.2338, 36.1423, 2.7e-6, 2.7e-6)
    xm, ym = pixel_size_m(CRS.from_epsg(4326), transform, 1300, 1300)
    assert xm == pytest.approx(0.2430, abs=2e-3) and ym == pytest.approx(0.2997, abs=2e-3)


def test_pixel_size_honours_foot_units():
    from rasterio.crs import CRS

    crs = CRS.from_epsg(2263)  # NY Long Island, US survey feet
    xm, ym = pixel_size_m(crs, from_origin(1e6, 2e5, 1.0, 1.0), 10, 10)
    assert xm == pytest.approx(0.3048006, rel=1e-5)


def test_check_band_count(make_raster):
    info = open_scene(make_raster(ramp(4, 4, 4)))
    assert check_band_count(info, None, 4) == (1, 2, 3, 4)
    assert check_band_count(info, [3, 2, 1], 3) == (3, 2, 1)
    with pytest.raises(InputError, match="model expects 3"):
        check_band_count(info, None, 3)
    with pytest.raises(InputError, match="do not exist"):
        check_band_count(info, [5], None)
    one = open_scene(make_raster(ramp(4, 4, 1)))
    with pytest.raises(InputError, match="1 band\\(s\\) selected but the model expects 3"):
        check_band_count(one, None, 3)


def test_percentile_normalizer_uses_valid_pixels_only(make_raster):
    arr = np.full((1, 64, 64), 500, np.uint16)
    arr[0, :, :32] = 1500
    arr[0, 0, 0] = 0  # nodata
    path = make_raster(arr, nodata=0)
    spec = NormalizationConfig(mode="percentile", percentiles=(0.0, 100.0))
    with open_raster(path) as ds:
        lows, highs = estimate_percentiles(ds, [1], (0.0, 100.0), 64)
        norm = make_normalizer(ds, [1], spec)
    assert lows == (500.0,) and highs == (1500.0,)
    out = norm(np.array([[[500.0, 1000.0, 1500.0, 3000.0]]], np.float32))
    np.testing.assert_allclose(out[0, 0], [0.0, 0.5, 1.0, 1.0])


class _ReadCounter:
    """A dataset that records the pixels each read asks for."""

    def __init__(self, ds):
        self._ds, self.pixels, self.windows = ds, 0, 0

    def __getattr__(self, name):
        return getattr(self._ds, name)

    def read(self, *args, window=None, out_shape=None, **kw):
        self.windows += 1
        if window is not None:
            self.pixels += window.height * window.width
        else:
            shape = out_shape or (self._ds.height, self._ds.width)
            self.pixels += shape[-1] * shape[-2]
        return self._ds.read(*args, window=window, out_shape=out_shape, **kw)


@pytest.mark.parametrize("shape", [(60, 80), (300, 400)])  # decimated read / windows
def test_percentiles_never_come_from_averaged_overviews(make_raster, shape):
    """Averaged overviews narrow the tails: a file must stretch the same after gdaladdo."""
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 1000, (1, *shape)).astype(np.uint16)
    path = make_raster(arr, tiled=True, blockxsize=16, blockysize=16)
    with open_raster(path) as ds:
        before = estimate_percentiles(ds, [1], (2.0, 98.0), sample_size=50)
    with rasterio.open(path, "r+") as ds:
        ds.build_overviews([2, 4], Resampling.average)
    with open_raster(path) as ds:
        assert ds.overviews(1) == [2, 4]
        after = estimate_percentiles(ds, [1], (2.0, 98.0), sample_size=50)
        overview = ds.read(1, out_shape=(shape[0] // 2, shape[1] // 2))
    assert after == before
    assert np.percentile(overview, 2) > before[0][0] + 50  # what the overview would have said


def test_small_scene_sample_is_one_decimated_read(make_raster):
    path = make_raster(ramp(90, 60))
    with open_raster(path) as ds:
        counter = _ReadCounter(ds)
        lows, highs = estimate_percentiles(counter, [1], (0.0, 100.0), sample_size=50)
    assert counter.windows == 1 and counter.pixels == 50 * 33
    # nearest-neighbour decimation: within the value range, not necessarily its extremes
    assert 0 <= lows[0] < 2000 and 3000 < highs[0] <= 5399


def test_large_scene_without_overviews_is_sampled_in_windows(make_raster):
    """A decimated read would decode every block; a grid of windows decodes few."""
    arr = np.full((1, 640, 960), 100, np.uint16)
    arr[0, 320:, :] = 900  # lower half brighter: the sample must see both halves
    arr[0, :, 480:] += 20  # and both sides
    path = make_raster(arr, tiled=True, blockxsize=64, blockysize=64)
    with open_raster(path) as ds:
        counter = _ReadCounter(ds)
        lows, highs = estimate_percentiles(counter, [1], (0.0, 100.0), sample_size=64)
    assert counter.windows == 64 and counter.pixels <= 64 * 64
    assert lows == (100.0,) and highs == (920.0,)


@pytest.mark.parametrize(("shape", "block"), [
    ((5000, 7000), (512, 512)), ((5000, 7000), (1, 7000)), ((300, 90000), (256, 256)),
    ((100, 100), (100, 100))])
def test_sample_windows_spread_inside_blocks(shape, block):
    from roadprn.raster.normalize import sample_windows

    windows = sample_windows(*shape, block, sample_size=1024)
    assert len(windows) == 64
    for w in windows:
        assert 0 <= w.row_off and w.row_off + w.height <= shape[0]
        assert 0 <= w.col_off and w.col_off + w.width <= shape[1]
        for off, size, b, extent in ((w.row_off, w.height, block[0], shape[0]),
                                     (w.col_off, w.width, block[1], shape[1])):
            partial_last = extent % b and off + size > extent // b * b
            if b >= size and not partial_last:  # inside one block
                assert off // b == (off + size - 1) // b
    rows = sorted({w.row_off for w in windows})
    cols = sorted({w.col_off for w in windows})
    if shape[0] >= 8 * 128:  # one window per grid cell: spread over the whole scene
        assert rows[0] < shape[0] / 8 and rows[-1] >= shape[0] * 7 / 8 - 128
        assert len(rows) == 8
    assert cols[0] < shape[1] / 8 and cols[-1] >= shape[1] * 7 / 8 - 128


def test_fixed_and_dtype_normalizers(make_raster):
    path = make_raster(ramp(4, 4, 2, dtype="uint8"))
    with open_raster(path) as ds:
        fixed = make_normalizer(ds, [1, 2], NormalizationConfig(mode="fixed", scale=[0.5, 0.25],
                                                                 offset=[0.0, 0.1]))
        dtype = make_normalizer(ds, [1, 2], NormalizationConfig(mode="dtype"))
        with pytest.raises(InputError, match="3 values for 2"):
            make_normalizer(ds, [1, 2], NormalizationConfig(mode="fixed", scale=[1, 1, 1]))
    x = np.full((2, 1, 1), 1.0, np.float32)
    np.testing.assert_allclose(fixed(x)[:, 0, 0], [0.5, 0.35])
    np.testing.assert_allclose(dtype(np.full((2, 1, 1), 255.0, np.float32))[:, 0, 0], [1.0, 1.0])


def test_all_nodata_scene_is_clear_error(make_raster):
    path = make_raster(np.zeros((1, 8, 8), np.uint16), nodata=0)
    with open_raster(path) as ds, pytest.raises(InputError, match="no valid pixels"):
        estimate_percentiles(ds, [1], (2, 98))


def test_network_guard_runs_once_per_unchanged_file(tmp_path, monkeypatch):
    import roadprn.raster.scene as raster_module

    path = tmp_path / "scene.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8",
                       crs="EPSG:32631", transform=from_origin(0, 8, 1, 1)) as ds:
        ds.write(np.zeros((1, 8, 8), np.uint8))
    calls = []
    original = raster_module.refuse_network_sources
    monkeypatch.setattr(raster_module, "refuse_network_sources",
                        lambda ds, name: (calls.append(name), original(ds, name)))
    for _ in range(3):
        raster_module.open_dataset(path).close()
    assert len(calls) == 1
    with rasterio.open(path, "r+") as ds:  # changed file: checked again
        ds.update_tags(edited="yes")
    raster_module.open_dataset(path).close()
    assert len(calls) == 2


# --------------------------------------------------------------------------- validity sources


H, W = 60, 80
ALPHA_BOX = (slice(30, 50), slice(10, 60))
NODATA_BOX = (slice(5, 20), slice(5, 30))
MASK_BOX = (slice(1, 11), slice(51, 80))  # odd edges: decimated reads sample 2i + 1
BAND2_BOX = (slice(52, 58), slice(0, 20))  # nodata in band 2 only


def _validity_case(tmp_path, name: str) -> tuple:
    """A 3-band scene (+ alpha) with one or more validity sources, and the expected validity."""
    from rasterio.enums import ColorInterp

    rng = np.random.default_rng(0)
    rgb = rng.integers(1, 255, (3, H, W)).astype(np.uint8)
    expected = np.ones((H, W), bool)
    alpha = np.full((1, H, W), 255, np.uint8)
    profile = {"driver": "GTiff", "width": W, "height": H, "crs": "EPSG:32631", "dtype": "uint8",
               "transform": from_origin(600000, 5750000, 0.3, 0.3)}
    if "alpha" in name:
        alpha[0][ALPHA_BOX] = 0
        expected[ALPHA_BOX] = False
    if "nodata" in name:
        rgb[(slice(None), *NODATA_BOX)] = 0
        rgb[1][BAND2_BOX] = 0
        expected[NODATA_BOX] = False
        expected[BAND2_BOX] = False
        profile["nodata"] = 0
    data = np.concatenate([rgb, alpha]) if "alpha" in name else rgb
    if "alpha" in name:
        profile.update(photometric="RGB", alpha="YES")
    path = tmp_path / f"{name}.tif"
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), \
            rasterio.open(path, "w", count=data.shape[0], **profile) as ds:
        ds.write(data)
        if "mask" in name:
            mask = np.full((H, W), 255, np.uint8)
            mask[MASK_BOX] = 0
            expected[MASK_BOX] = False
            ds.write_mask(mask)
    with rasterio.open(path) as ds:
        assert ("alpha" in name) == (ColorInterp.alpha in ds.colorinterp)
    return path, expected


VALIDITY_CASES = ["nodata", "mask", "alpha", "nodata+alpha", "mask+alpha", "nodata+mask",
                  "nodata+mask+alpha"]


@pytest.mark.parametrize("name", VALIDITY_CASES)
def test_validity_combines_every_source(tmp_path, name):
    """GDAL's one mask band shadows: nodata hid the alpha band and an internal mask hid both;
    every source counts, and a pixel nodata in one band only is invalid."""
    path, expected = _validity_case(tmp_path, name)
    with open_raster(path) as ds:
        data, valid = read_window(ds, Window(0, 0, W, H), bands=[1, 2, 3])
        np.testing.assert_array_equal(valid, expected)
        assert (data[:, ~valid] == 0).all()  # invalid pixels never carry raw values
        _, decimated = read_valid(ds, [1, 2, 3], out_shape=(H // 2, W // 2))
        np.testing.assert_array_equal(decimated, expected[1::2, 1::2])  # GDAL's nearest


@pytest.mark.parametrize("factor", [0.6, 1.7])
@pytest.mark.parametrize("name", VALIDITY_CASES)
def test_resampled_reads_keep_the_scenes_validity(tmp_path, name, factor):
    """On a model grid each pixel is valid exactly when the scene pixel under its centre is;
    an alpha band in the source no longer makes GDAL's warper refuse (SpaceNet RGBA chips)."""
    from rasterio.transform import Affine

    from roadprn.raster.grid import Grid, ResampledScene

    path, expected = _validity_case(tmp_path, name)
    w, h = round(W * factor), round(H * factor)
    with open_raster(path) as ds:
        grid = Grid(w, h, ds.transform * Affine.scale(W / w, H / h), True, "test")
        scene = ResampledScene(ds, grid)
        try:
            data, valid = read_window(scene, Window(0, 0, w, h), bands=[1, 2, 3], halo=3)
        finally:
            scene.close()
    rows = np.floor((np.arange(h) + 0.5) * H / h).astype(int)
    cols = np.floor((np.arange(w) + 0.5) * W / w).astype(int)
    np.testing.assert_array_equal(valid[3:-3, 3:-3], expected[np.ix_(rows, cols)])
    assert not valid[:3].any() and not valid[:, :3].any()
    inner = data[:, 3:-3, 3:-3]
    assert (inner[:, valid[3:-3, 3:-3]] > 0).all()  # the warper filled every valid pixel


def test_percentiles_ignore_alpha_zero_pixels_even_with_nodata(tmp_path):
    path, expected = _validity_case(tmp_path, "nodata+alpha")
    with rasterio.open(path, "r+") as ds:
        data = ds.read([1, 2, 3])
        data[:, ~expected & (ds.read(4) == 0)] = 250  # bright pixels under alpha 0
        ds.write(data, [1, 2, 3])
    with open_raster(path) as ds:
        _, highs = estimate_percentiles(ds, [1, 2, 3], (0.0, 100.0))
        valid_max = ds.read([1, 2, 3])[:, expected].max(axis=1)
    np.testing.assert_array_equal(highs, valid_max)


def test_validity_sources_describe_the_scene(tmp_path):
    from roadprn.raster.read import validity_sources

    path, _ = _validity_case(tmp_path, "nodata+mask+alpha")
    with open_raster(path) as ds:
        sources = validity_sources(ds, [1, 2, 3])
    assert sources.alpha == 4 and sources.mask_bands == (1, 2, 3)
    assert sources.nodata == ((1, 0.0), (2, 0.0), (3, 0.0)) and not sources.trivial
    plain, _ = _validity_case(tmp_path, "plain")
    with open_raster(plain) as ds:
        assert validity_sources(ds, [1, 2, 3]).trivial


def test_check_blocks_reads_the_last_overview_block(tmp_path):
    """Overview data sits after the full-resolution blocks: a file cut at 99 % has readable
    first and last full-resolution blocks and passed the old check."""
    path = tmp_path / "ovr.tif"
    rng = np.random.default_rng(3)
    data = rng.integers(0, 255, (3, 300, 300)).astype(np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=300, height=300, count=3, dtype="uint8",
                       crs="EPSG:32631", transform=from_origin(0, 0, 1, 1), tiled=True,
                       blockxsize=64, blockysize=64) as ds:
        ds.write(data)
        ds.build_overviews([2, 4], Resampling.average)
    open_scene(path)
    cut = tmp_path / "cut.tif"
    cut.write_bytes(path.read_bytes()[:int(path.stat().st_size * 0.99)])
    with rasterio.open(cut) as ds:  # what the old check read still reads
        ds.read(1, window=Window(0, 0, 64, 64))
        ds.read(1, window=Window(256, 256, 44, 44))
    with pytest.raises(InputError, match="cut.tif: raster data is unreadable"):
        open_scene(cut)


def test_linear_units_of_projected_and_engineering_crs():
    from rasterio.crs import CRS

    from roadprn.raster.geometry import linear_unit_m

    assert linear_unit_m(CRS.from_epsg(32631)) == 1.0
    assert linear_unit_m(CRS.from_epsg(2227)) == pytest.approx(0.3048006096)  # US survey ft
    local = CRS.from_wkt('LOCAL_CS["Site",LOCAL_DATUM["Site",32767],UNIT["foot",0.3048],'
                         'AXIS["X",EAST],AXIS["Y",NORTH]]')
    assert linear_unit_m(local) == pytest.approx(0.3048)


def test_urls_in_vrt_metadata_are_not_sources(tmp_path, make_raster):
    """Only paths count: a licence URL in <Metadata> or <Description>, a CRS URI in WKT2, are
    no network sources."""
    src = make_raster(np.full((3, 20, 20), 9, np.uint8))
    vrt = tmp_path / "meta.vrt"
    bands = "".join(f'<VRTRasterBand dataType="Byte" band="{b}"><Description>see https://x.org'
                    f'</Description><SimpleSource><SourceFilename relativeToVRT="0">{src}'
                    f'</SourceFilename><SourceBand>{b}</SourceBand></SimpleSource>'
                    '</VRTRasterBand>' for b in (1, 2, 3))
    vrt.write_text('<VRTDataset rasterXSize="20" rasterYSize="20"><SRS>EPSG:32631</SRS>'
                   '<GeoTransform>600000, 0.5, 0, 5750000, 0, -0.5</GeoTransform>'
                   '<Metadata><MDI key="LICENSE">https://creativecommons.org/by/4.0</MDI>'
                   '</Metadata><GCPList Projection="ID[&quot;EPSG&quot;,4326,URI[&quot;'
                   'http://www.opengis.net/def/crs/EPSG/0/4326&quot;]]"/>'
                   f'{bands}</VRTDataset>')
    assert open_scene(vrt).count == 3
    (tmp_path / "ref.vrt").write_text(vrt.read_text().replace(
        "</SimpleSource></VRTRasterBand>",
        "</SimpleSource><Overview><SourceFilename>/vsicurl/http&#58;//127.0.0.1:9/o.tif"
        "</SourceFilename><SourceBand>1</SourceBand></Overview></VRTRasterBand>", 1))
    with pytest.raises(InputError, match="network path /vsicurl/http://127.0.0.1:9/o.tif"):
        open_scene(tmp_path / "ref.vrt")


def test_palette_bands_are_refused(make_raster):
    path = make_raster(np.zeros((1, 10, 10), np.uint8), photometric="PALETTE")
    with rasterio.open(path, "r+") as ds:
        ds.write_colormap(1, {0: (0, 0, 0, 255), 1: (255, 255, 255, 255)})
    info = open_scene(path)
    assert info.colorinterp == ("palette",)
    with pytest.raises(InputError, match=r"band\(s\) \[1\] hold colour-table \(palette\)"):
        check_band_count(info, [1, 1, 1], 3)


@pytest.mark.parametrize("scale,offset", [([float("nan")], None), ([0.1], [float("inf")]),
                                          ([0.0], None)])
def test_fixed_normalisation_must_be_finite(make_raster, scale, offset):
    from pydantic import ValidationError

    from roadprn.errors import ConfigError

    path = make_raster(np.ones((3, 8, 8), np.uint8))
    if not all(np.isfinite(v) for v in [*(scale or []), *(offset or [])]):
        # the config refuses non-finite values itself (a config file becomes a ConfigError)
        with pytest.raises(ValidationError, match="finite"):
            NormalizationConfig(mode="fixed", scale=scale, offset=offset)
    # make_normalizer checks again, for specs built without validation
    spec = NormalizationConfig.model_construct(mode="fixed", scale=scale, offset=offset,
                                               percentiles=(2.0, 98.0))
    with open_raster(path) as ds, pytest.raises(ConfigError, match="input.normalization"):
        make_normalizer(ds, [1, 2, 3], spec)
