"""STAC in and out of `roadprn batch`, and the run's summary."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from pystac.validation import validate_dict

from roadprn.batch.stac import gdal_path, read_stac
from roadprn.errors import ConfigError, InputError
from tests.helpers import assert_clean_failure, invoke

WHEN = dt.datetime(2020, 5, 1, tzinfo=dt.UTC)


def _item(name: str, image: Path, **asset_options) -> pystac.Item:
    item = pystac.Item(id=f"item-{name}", geometry=None, bbox=None, datetime=WHEN, properties={})
    item.add_asset("thumbnail", pystac.Asset(str(image.with_suffix(".png")),
                                             media_type=pystac.MediaType.PNG,
                                             roles=["thumbnail"]))
    item.add_asset("visual", pystac.Asset(str(image), **({"media_type": pystac.MediaType.COG,
                                                           "roles": ["data"]} | asset_options)))
    item.add_asset("label", pystac.Asset(str(image.with_name(f"{image.stem}_mask.tif")),
                                         media_type=pystac.MediaType.COG, roles=["labels"]))
    return item


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """Two neighbouring synthetic scenes, and a self-contained STAC catalog of them."""
    folder = tmp_path_factory.mktemp("stac")
    scenes = folder / "scenes"
    scenes.mkdir()
    for name, origin, seed in (("w", "500000,4650000", 1), ("e", "500128,4650000", 2)):
        made = invoke("synth", scenes / f"{name}.tif", "--size", "256", "--origin", origin,
                      "--seed", seed)
        assert made.exit_code == 0, made.output
    catalog = pystac.Catalog(id="archive", description="two scenes")
    collection = pystac.Collection(
        id="tiles", description="tiles", license="other",
        extent=pystac.Extent(pystac.SpatialExtent([[3.0, 41.9, 3.1, 42.1]]),
                             pystac.TemporalExtent([[WHEN, WHEN]])))
    catalog.add_child(collection)
    for name in ("w", "e"):
        collection.add_item(_item(name, scenes / f"{name}.tif"))
    catalog.normalize_hrefs(str(folder / "catalog"))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return folder, scenes, folder / "catalog" / "catalog.json"


def test_a_catalog_gives_one_scene_per_item_with_its_image_asset(archive):
    _, scenes, catalog = archive
    found = {s.item_id: s for s in read_stac(str(catalog))}
    assert set(found) == {"item-w", "item-e"}
    assert found["item-w"].path == str((scenes / "w.tif").resolve())
    assert found["item-w"].asset_key == "visual"
    assert found["item-w"].datetime == WHEN.isoformat()
    assert found["item-w"].collection == "tiles"
    labels = read_stac(str(catalog), asset_key="label")
    assert {Path(s.path).name for s in labels} == {"w_mask.tif", "e_mask.tif"}


def test_item_collections_and_single_items(archive, tmp_path):
    _, scenes, _ = archive
    items = [_item(n, scenes / f"{n}.tif") for n in ("w", "e")]
    collection = tmp_path / "items.json"
    collection.write_text(json.dumps(pystac.ItemCollection(items).to_dict()))
    assert [s.item_id for s in read_stac(str(collection))] == ["item-w", "item-e"]
    single = tmp_path / "item.json"
    item = _item("w", scenes / "w.tif", media_type=pystac.MediaType.GEOTIFF, roles=None)
    single.write_text(json.dumps(item.to_dict()))
    [scene] = read_stac(str(single))
    assert scene.asset_key == "visual"  # no 'data' role: the first GeoTIFF


def test_bad_catalogs_are_one_line(archive, tmp_path):
    _, scenes, catalog = archive
    with pytest.raises(ConfigError, match="has no asset 'nir'.*label, thumbnail, visual"):
        read_stac(str(catalog), asset_key="nir")
    only_png = pystac.Item(id="p", geometry=None, bbox=None, datetime=WHEN, properties={})
    only_png.add_asset("thumb", pystac.Asset("x.png", media_type=pystac.MediaType.PNG))
    path = tmp_path / "png.json"
    path.write_text(json.dumps(only_png.to_dict()))
    with pytest.raises(InputError, match="no image asset.*--asset KEY"):
        read_stac(str(path))
    broken = tmp_path / "broken.json"
    broken.write_text('{"stac_version": "1.1.0", "type": "Catalog", "id": ')
    with pytest.raises(InputError, match="not a readable STAC"):
        read_stac(str(broken))
    result = invoke("batch", broken, "-o", tmp_path / "out")
    assert_clean_failure(result, 3, "not a readable STAC")


def test_asset_hrefs_become_gdal_paths():
    assert gdal_path("https://x.org/a.tif") == "/vsicurl/https://x.org/a.tif"
    assert gdal_path("s3://bucket/a.tif") == "/vsis3/bucket/a.tif"
    assert gdal_path("gs://bucket/a.tif") == "/vsigs/bucket/a.tif"
    assert gdal_path("file:///data/a.tif") == "/data/a.tif"
    assert gdal_path("/data/a.tif") == "/data/a.tif"


@pytest.mark.slow
def test_batch_over_a_catalog_equals_the_folder_and_writes_valid_stac(archive, tmp_path):
    """The same scenes as a folder and as a STAC catalog give the same masks; the output STAC
    validates (core schema: the extensions' schemas are not reachable offline, their fields
    are checked here) and its assets resolve to the outputs."""
    _, scenes, catalog = archive
    by_folder = invoke("batch", scenes, "-o", tmp_path / "folder", "--workers", "1", "--json")
    by_stac = invoke("batch", catalog, "-o", tmp_path / "stac", "--workers", "1", "--json")
    assert by_folder.exit_code == 0 and by_stac.exit_code == 0, (by_folder.output,
                                                                  by_stac.output)
    report = json.loads(by_stac.stdout)
    assert report["done"] == 2 and report["stac"] and "stac" not in json.loads(by_folder.stdout)
    for name in ("w", "e"):
        [a] = (tmp_path / "folder").glob(f"{name}-*/{name}_mask.tif")
        [b] = (tmp_path / "stac").glob(f"{name}-*/{name}_mask.tif")
        with rasterio.open(a) as x, rasterio.open(b) as y:
            assert np.array_equal(x.read(), y.read()) and x.transform == y.transform

    collection = pystac.read_file(report["stac"])
    items = {item.id: item for item in collection.get_items(recursive=True)}
    assert set(items) == {"item-w", "item-e"}
    for item in items.values():
        document = item.to_dict()
        document["stac_extensions"] = []
        validate_dict(document)
        assert item.datetime == WHEN  # the source Item's acquisition time
        props = item.properties
        assert props["proj:code"] == "EPSG:32631" and props["proj:shape"] == [256, 256]
        assert len(props["proj:transform"]) == 6
        assert props["processing:software"]["roadprn"]
        assert props["roadprn:source_asset"] == "visual"
        for key in ("mask", "probability", "roads"):
            assert Path(item.assets[key].get_absolute_href()).is_file(), key
            assert not Path(item.assets[key].href).is_absolute()  # the folder can move
        west, south, east, north = item.bbox
        assert 2.99 < west < east < 3.01 and 41.99 < south < north < 42.01
    document = collection.to_dict()
    document["stac_extensions"] = []
    validate_dict(document)

    summary = json.loads((tmp_path / "stac" / "roadprn_summary.json").read_text())
    assert summary["done"] == 2 and summary["failed"] == 0
    # two abutting 128 m x 128 m scenes
    assert summary["area_km2"] == pytest.approx(2 * 0.128 ** 2, rel=0.01)
    assert summary["road_length_km"] == pytest.approx(
        report["road_length_m"] / 1000, abs=0.002)
    assert (tmp_path / "stac" / "roadprn_quicklook.png").stat().st_size > 1000
    assert report["summary"] == summary
