"""No input reaches the network unless the user gave a network path (issue 22, section 2).

Each of the ten bypasses a red-team run found is built against a recording HTTP server on
127.0.0.1 (in its own process, ``http_recorder.py``): every command must end in one line, exit 3,
and the server must see **no request**. The same files are then opened with roadprn's own XML
checks switched off, to show that GDAL itself, as roadprn configures it
(:mod:`roadprn.runtime.gdal_guard`), sends nothing either. A network path the user gives still
works.
Each test uses URLs of its own, so GDAL's per-process cache of answers cannot hide a request.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio

from roadprn.runtime import gdal_guard
from tests.helpers import REPO_ROOT, assert_clean_failure, invoke, write_test_raster

GRID = "600000, 0.5, 0, 5750000, 0, -0.5"
SIZE = (160, 140)


@dataclass
class Recorder:
    """The recording server: ``host``, the folder it serves, and the requests it got."""

    host: str
    folder: Path

    def hits(self) -> list[str]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://{self.host}/__hits__", timeout=30) as answer:
            return [h for h in json.loads(answer.read()) if not h.endswith("/__hits__")]


@pytest.fixture
def server(tmp_path_factory) -> Iterator[Recorder]:
    folder = tmp_path_factory.mktemp("served")
    process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("http_recorder.py")),
                                str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        host = process.stdout.readline().strip()
        assert host.startswith("127.0.0.1:"), host
        yield Recorder(host, folder)
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def no_xml_checks(monkeypatch) -> None:
    """roadprn's own scan of the files switched off: only GDAL's settings stand."""
    import roadprn.raster.scene as raster

    monkeypatch.setattr(raster, "refuse_embedded_code", lambda *args, **kwargs: True)
    monkeypatch.setattr(raster, "refuse_network_sources", lambda *args, **kwargs: None)
    raster._VERIFIED_LOCAL.clear()


# --------------------------------------------------------------------------- the ten files


def _band(source: str, band: int, extra: str = "", inside: str = "") -> str:
    return (f'<VRTRasterBand dataType="Byte" band="{band}"{extra}>{inside}<SimpleSource>'
            f'<SourceFilename relativeToVRT="0">{source}</SourceFilename>'
            f'<SourceBand>{band}</SourceBand></SimpleSource></VRTRasterBand>')


def _vrt(bands: str, after: str = "", root_extra: str = "") -> str:
    return (f'<VRTDataset rasterXSize="{SIZE[0]}" rasterYSize="{SIZE[1]}"{root_extra}>'
            f"<SRS>EPSG:32631</SRS><GeoTransform>{GRID}</GeoTransform>{bands}{after}"
            "</VRTDataset>")


def _three_bands(source: str, first_extra: str = "") -> str:
    return "".join(_band(source, b).replace("</VRTRasterBand>",
                                            (first_extra if b == 1 else "") + "</VRTRasterBand>")
                   for b in (1, 2, 3))


def _remote_scene_vrt(url: str) -> str:
    return _vrt(_three_bands(url))


def chain(folder: Path, url: str, scene: Path) -> str:
    """Ten VRTs, each the source of the next; the innermost reads the network."""
    source = url
    for level in range(10):
        path = folder / f"level{level:02d}.vrt"
        path.write_text(_remote_scene_vrt(source))
        source = str(path)
    return source


def overview(folder: Path, url: str, scene: Path) -> str:
    path = folder / "overview.vrt"
    ovr = (f'<Overview><SourceFilename relativeToVRT="0">{url}</SourceFilename>'
           "<SourceBand>1</SourceBand></Overview>")
    path.write_text(_vrt(_three_bands(str(scene), ovr)))
    return str(path)


def mask_band(folder: Path, url: str, scene: Path) -> str:
    path = folder / "maskband.vrt"
    mask = (f'<MaskBand><VRTRasterBand dataType="Byte"><SimpleSource><SourceFilename '
            f'relativeToVRT="0">{url}</SourceFilename><SourceBand>1</SourceBand></SimpleSource>'
            "</VRTRasterBand></MaskBand>")
    path.write_text(_vrt(_three_bands(str(scene)), after=mask))
    return str(path)


def in_zip(folder: Path, url: str, scene: Path) -> str:
    archive = folder / "scenes.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("scene.vrt", _remote_scene_vrt(url))
    return f"/vsizip/{archive}/scene.vrt"


def gzipped(folder: Path, url: str, scene: Path) -> str:
    path = folder / "scene.vrt.gz"
    path.write_bytes(gzip.compress(_remote_scene_vrt(url).encode()))
    return f"/vsigzip/{path}"


def byte_order_mark(folder: Path, url: str, scene: Path) -> str:
    path = folder / "bom.vrt"
    path.write_bytes(b"\xef\xbb\xbf" + _remote_scene_vrt(url).encode())
    return str(path)


def leading_blanks(folder: Path, url: str, scene: Path) -> str:
    path = folder / "blanks.vrt"
    path.write_text(" " * 600 + _remote_scene_vrt(url))
    return str(path)


def warped(folder: Path, url: str, scene: Path) -> str:
    """GDAL opens a warped VRT's source inside rasterio.open, before any check after it."""
    path = folder / "warped.vrt"
    inverse = "-1200000, 2, 0, 11500000, 0, -2"
    path.write_text(
        f'<VRTDataset rasterXSize="{SIZE[0]}" rasterYSize="{SIZE[1]}" '
        f'subClass="VRTWarpedDataset"><SRS>EPSG:32631</SRS><GeoTransform>{GRID}</GeoTransform>'
        + "".join(f'<VRTRasterBand dataType="Byte" band="{b}" subClass="VRTWarpedRasterBand"/>'
                  for b in (1, 2, 3))
        + "<BlockXSize>64</BlockXSize><BlockYSize>64</BlockYSize><GDALWarpOptions>"
        "<WarpMemoryLimit>6e7</WarpMemoryLimit><ResampleAlg>NearestNeighbour</ResampleAlg>"
        f'<WorkingDataType>Byte</WorkingDataType><SourceDataset relativeToVRT="0">{url}'
        "</SourceDataset><Transformer><GenImgProjTransformer>"
        f"<SrcGeoTransform>{GRID}</SrcGeoTransform><SrcInvGeoTransform>{inverse}"
        f"</SrcInvGeoTransform><DstGeoTransform>{GRID}</DstGeoTransform><DstInvGeoTransform>"
        f"{inverse}</DstInvGeoTransform></GenImgProjTransformer></Transformer><BandList>"
        + "".join(f'<BandMapping src="{b}" dst="{b}"/>' for b in (1, 2, 3))
        + "</BandList></GDALWarpOptions></VRTDataset>")
    return str(path)


def tile_index(folder: Path, url: str, scene: Path) -> str:
    """A GDAL tile index (GTI): the tile's location is a row in a GeoPackage, not in any XML."""
    import geopandas as gpd
    import shapely

    index = folder / "tiles.gpkg"
    box = shapely.box(600000, 5750000 - SIZE[1] * 0.5, 600000 + SIZE[0] * 0.5, 5750000)
    gpd.GeoDataFrame({"location": [url]}, geometry=[box], crs="EPSG:32631").to_file(index)
    path = folder / "mosaic.gti"
    path.write_text(f"<GDALTileIndexDataset><IndexDataset>{index}</IndexDataset>"
                    "<LocationField>location</LocationField><ResX>0.5</ResX><ResY>0.5</ResY>"
                    "<SRS>EPSG:32631</SRS><DataType>Byte</DataType><BandCount>3</BandCount>"
                    "</GDALTileIndexDataset>")
    return str(path)


def python_character_reference(folder: Path, url: str, scene: Path) -> str:
    """``&#80;ython`` is "Python" to an XML parser; the function would create MARKER."""
    path = folder / "code.vrt"
    code = ("<PixelFunctionType>f</PixelFunctionType>"
            "<PixelFunctionLanguage>&#80;ython</PixelFunctionLanguage><PixelFunctionCode>"
            "<![CDATA[\ndef f(in_ar, out_ar, *args, **kwargs):\n"
            f"    open({str(folder / 'MARKER')!r}, 'w').write('ran')\n"
            "    out_ar[:] = in_ar[0]\n]]></PixelFunctionCode>")
    bands = "".join(_band(str(scene), b, ' subClass="VRTDerivedRasterBand"', code)
                    for b in (1, 2, 3))
    path.write_text(_vrt(bands))
    return str(path)


CASES: dict[str, tuple[Callable[[Path, str, Path], str], str]] = {
    "chain of 10 VRTs": (chain, "nested more than 8 levels"),
    "<Overview> source": (overview, "network path"),
    "<MaskBand> source": (mask_band, "network path"),
    "VRT in a zip": (in_zip, "network path"),
    "gzipped VRT": (gzipped, "network path"),
    "byte-order mark": (byte_order_mark, "network path"),
    "600 leading blanks": (leading_blanks, "network path"),
    "warped VRT": (warped, "network path"),
    "GDAL tile index": (tile_index, "network"),
    "&#80;ython": (python_character_reference, "Python pixel function"),
}


def _build(name: str, tmp_path: Path, server: Recorder, scene: Path) -> tuple[str, Path]:
    folder = tmp_path / "files"
    folder.mkdir(parents=True, exist_ok=True)
    url = f"/vsicurl/http://{server.host}/{uuid.uuid4().hex}.tif"
    return CASES[name][0](folder, url, scene), folder


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_file_reaches_no_network_through_info_and_extract(name, tmp_path, server,
                                                                  good_scene, tiny_model):
    path, folder = _build(name, tmp_path, server, good_scene)
    words = CASES[name][1]
    assert_clean_failure(invoke("info", path), 3, words)
    out = tmp_path / "out"
    assert_clean_failure(invoke("extract", path, "--model", tiny_model, "--out", out), 3, words,
                         out=out)
    assert server.hits() == []
    assert not (folder / "MARKER").exists()


@pytest.mark.parametrize("name", list(CASES))
def test_gdal_alone_sends_nothing(name, tmp_path, server, good_scene, tiny_model,
                                  no_xml_checks):
    """Without roadprn's XML checks the file opens or fails (an unreachable <Overview> even
    crashes rasterio's overview listing), but GDAL fetches nothing and runs no code: the GDAL
    settings hold on their own."""
    path, folder = _build(name, tmp_path, server, good_scene)
    out = tmp_path / "out"
    invoke("info", path)
    invoke("extract", path, "--model", tiny_model, "--out", out, "--no-vectorize")
    assert server.hits() == []
    assert not (folder / "MARKER").exists()


def test_the_python_payload_is_live_without_roadprn(tmp_path, good_scene):
    """Control for the &#80;ython case: plain GDAL with Python allowed runs the function."""
    path = python_character_reference(tmp_path, "unused", good_scene)
    code = f"import rasterio\nwith rasterio.open({path!r}) as ds:\n    ds.read(1)"
    env = {**os.environ, "GDAL_VRT_ENABLE_PYTHON": "YES"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=120)
    if not (tmp_path / "MARKER").exists():
        pytest.skip(f"this GDAL cannot run Python pixel functions: {result.stderr[-300:]}")


def _mask_case(tmp_path: Path, server: Recorder) -> str:
    """A warped VRT posing as a single-band road mask (for vectorize and evaluate)."""
    path = Path(warped(tmp_path, f"/vsicurl/http://{server.host}/{uuid.uuid4().hex}.tif",
                       tmp_path))
    text = path.read_text()
    for b in (2, 3):
        text = text.replace(f'<VRTRasterBand dataType="Byte" band="{b}" '
                            'subClass="VRTWarpedRasterBand"/>', "")
        text = text.replace(f'<BandMapping src="{b}" dst="{b}"/>', "")
    path.write_text(text)
    return str(path)


def test_vectorize_and_evaluate_reach_no_network(tmp_path, server, make_raster):
    hostile = _mask_case(tmp_path, server)
    truth = make_raster(np.zeros((1, SIZE[1], SIZE[0]), np.uint8))
    out = tmp_path / "out"
    assert_clean_failure(invoke("vectorize", hostile, "--out", out), 3, "network path", out=out)
    assert_clean_failure(invoke("evaluate", "--pred", hostile, "--truth", truth, "--out", out),
                         3, "network path", out=out)
    assert_clean_failure(invoke("evaluate", "--pred", truth, "--truth", hostile, "--out", out),
                         3, "network path", out=out)
    assert server.hits() == []


def _hostile_vectors(folder: Path, server: Recorder) -> dict[str, Path]:
    """Vector files read through pyogrio's own GDAL (evaluate, info): each names a URL."""
    folder.mkdir(parents=True, exist_ok=True)
    url = f"http://{server.host}/{uuid.uuid4().hex}"
    gml = folder / "truth.gml"
    gml.write_text(
        '<?xml version="1.0"?><wfs:FeatureCollection xmlns:wfs="http://www.opengis.net/wfs" '
        'xmlns:gml="http://www.opengis.net/gml" xmlns:ms="http://example.org/ms" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation='
        f'"http://example.org/ms {url}?SERVICE=WFS&amp;REQUEST=DescribeFeatureType&amp;'
        'TYPENAME=roads"><gml:featureMember><ms:roads><ms:geom><gml:LineString '
        'srsName="EPSG:32631"><gml:coordinates>600000,5749990 600050,5749990</gml:coordinates>'
        "</gml:LineString></ms:geom></ms:roads></gml:featureMember></wfs:FeatureCollection>")
    vrt = folder / "ogrvrt.geojson"  # OGR VRT XML under a GeoJSON name: GDAL goes by content
    vrt.write_text(f'<OGRVRTDataSource><OGRVRTLayer name="x"><SrcDataSource>{url}.geojson'
                   "</SrcDataSource></OGRVRTLayer></OGRVRTDataSource>")
    pipeline = folder / "pipeline.json"
    pipeline.write_text(json.dumps({"type": "gdal_streamed_alg", "command_line":
                                    f"gdal vector pipeline ! read {url}.geojson ! "
                                    "write --of stream streamed_dataset"}))
    return {"GML schema": gml, "OGR VRT": vrt, "GDALG": pipeline}


def test_vector_inputs_reach_no_network(tmp_path, server, make_raster):
    """pyogrio has a GDAL of its own: a GML schema URL, an OGR VRT source and a GDALG pipeline
    were fetched by its GML and GeoJSON drivers (CPLHTTPFetch, not /vsicurl/)."""
    hostile = _hostile_vectors(tmp_path / "vectors", server)
    out = tmp_path / "out"
    for name, path in hostile.items():
        for args in (("evaluate", "--pred", path, "--truth", path, "--out", out, "--overwrite"),
                     ("info", path)):
            result = invoke(*args)
            assert "Traceback" not in result.output, (name, result.output)
            if name != "GML schema":  # the GML file itself is local and reads without it
                assert_clean_failure(result, 3, "not a readable vector file")
        assert server.hits() == [], name


def test_batch_workers_reach_no_network(tmp_path, server, good_scene, tiny_model):
    """Batch workers are processes of their own: the GDAL settings hold there too."""
    from roadprn.batch.manifest import MANIFEST_NAME, latest_scene_records

    scenes = [_build(name, tmp_path / name.replace(" ", "_"), server, good_scene)[0]
              for name in ("warped VRT", "GDAL tile index")]
    out = tmp_path / "out"
    result = invoke("-q", "batch", *scenes, "--out", out, "--model", tiny_model, "--workers", "1",
                    "--threads-per-worker", "1", "--set", "vectorize.enabled=false")
    assert result.exit_code == 6, result.output
    assert "Traceback" not in result.output
    records = latest_scene_records(out / MANIFEST_NAME).values()
    assert sorted(r["status"] for r in records) == ["failed", "failed"], records
    assert all("network" in r["error"] for r in records), records
    assert server.hits() == []


def test_a_network_path_the_user_gives_is_read(tmp_path, server):
    """Given on the command line, a URL is fetched and read; afterwards local files are still
    kept off the network in the same process."""
    data = np.arange(3 * 48 * 64, dtype=np.uint8).reshape(3, 48, 64)
    write_test_raster(server.folder / "remote.tif", data)
    for path in (f"http://{server.host}/remote.tif", f"/vsicurl/http://{server.host}/remote.tif"):
        result = invoke("info", path, "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["width"] == 64
    assert any(h.endswith("/remote.tif") for h in server.hits())
    from roadprn.raster.scene import open_dataset

    with open_dataset(f"/vsicurl/http://{server.host}/remote.tif") as ds:
        assert np.array_equal(ds.read(), data)  # read after the open, outside its permission
    before = server.hits()
    local = byte_order_mark(tmp_path, f"/vsicurl/http://{server.host}/after.tif", tmp_path)
    assert_clean_failure(invoke("info", local), 3, "network path")
    with rasterio.open(local) as ds, pytest.raises(rasterio.errors.RasterioError):
        ds.read(1)  # GDAL alone, outside roadprn: refused
    assert server.hits() == before


def test_network_permission_is_scoped_to_the_open(server):
    """Outside :func:`gdal_guard.network_allowed` GDAL refuses even a URL."""
    url = f"/vsicurl/http://{server.host}/{uuid.uuid4().hex}.tif"
    with pytest.raises(rasterio.errors.RasterioIOError):
        rasterio.open(url)
    assert server.hits() == []
    with gdal_guard.network_allowed(url), pytest.raises(rasterio.errors.RasterioIOError):
        rasterio.open(url)
    assert any(url.rsplit("/", 1)[1] in h for h in server.hits())


def test_gdal_settings_in_this_process():
    from rasterio.env import get_gdal_config

    assert os.environ["CPL_VSIL_CURL_ALLOWED_EXTENSIONS"] == gdal_guard.NO_NETWORK
    assert os.environ["GDAL_VRT_ENABLE_PYTHON"] == "NO"
    with rasterio.Env() as env:
        drivers = set(env.drivers())
    assert drivers.isdisjoint({"WMS", "WMTS", "WCS", "HTTP", "STACIT", "EEDAI", "netCDF",
                               "GeoJSON"})
    assert {"GTiff", "VRT", "GTI", "GPKG"} <= drivers
    assert "WMS" in str(get_gdal_config("GDAL_SKIP"))
    assert os.environ["GML_DOWNLOAD_SCHEMA"] == "NO"
    import pyogrio

    vector = set(pyogrio.list_drivers())
    assert vector.isdisjoint({"OGR_VRT", "GDALG", "WFS", "OAPIF", "CSW", "Elasticsearch",
                              "GPSBabel"}), vector
    assert {"GeoJSON", "GPKG", "GML", "ESRI Shapefile"} <= vector


def test_a_fresh_process_is_guarded_before_its_first_open(tmp_path, server):
    """What a batch worker or any other process gets from importing roadprn's readers."""
    url = f"/vsicurl/http://{server.host}/{uuid.uuid4().hex}.tif"
    code = ("import rasterio, roadprn.raster\n"
            f"try:\n    rasterio.open({url!r})\nexcept rasterio.errors.RasterioIOError:\n"
            "    print('refused')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO_ROOT, timeout=120)
    assert result.stdout.strip() == "refused", result.stderr
    assert result.stderr == ""
    assert server.hits() == []


def test_images_behind_a_vrt_are_sniffed_not_read(tmp_path, good_scene, monkeypatch):
    """The XML checks read only the first 64 KiB of a source image (a mosaic of thousands of
    GeoTIFFs would otherwise be read up to 16 MiB each)."""
    import roadprn.raster.scene as raster

    reads: list[tuple[str, int]] = []
    original = gdal_guard.read_head
    monkeypatch.setattr(gdal_guard, "read_head",
                        lambda path, limit: (reads.append((path, limit)), original(path, limit))[1])
    raster._VERIFIED_LOCAL.clear()
    path = tmp_path / "mosaic.vrt"
    path.write_text(_vrt(_three_bands(str(good_scene))))
    with raster.open_dataset(path) as ds:
        assert ds.count == 3
    image_reads = [limit for name, limit in reads if name == str(good_scene)]
    assert image_reads and max(image_reads) <= 64 << 10, reads
