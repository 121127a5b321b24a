"""STAC in: a Catalog, Collection, ItemCollection or Item as batch input (via pystac).

Archives are published as STAC catalogs more and more often, not as folders. Each Item is one
scene: its image asset (``--asset KEY``, else the first asset with role ``data``, else the first
GeoTIFF/COG) becomes a scene path GDAL opens (a local file, or ``/vsicurl/`` / ``/vsis3/`` for
remote hrefs), and the Item's id, datetime and footprint are kept for the run's STAC output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roadprn.errors import ConfigError, InputError

STAC_TYPES = ("Catalog", "Collection", "FeatureCollection", "Feature")
GEOTIFF_TYPES = ("image/tiff", "image/vnd.stac.geotiff")
MAX_STAC_BYTES = 64 << 20  # one catalog file; items are read one by one


@dataclass(frozen=True)
class StacScene:
    """One Item's image, as batch opens it, and what its STAC output keeps of the Item."""

    path: str
    item_id: str
    asset_key: str
    datetime: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    collection: str | None = None


def is_stac_file(path: Path) -> bool:
    """A local ``.json`` file holding a STAC object (read its head only, never a big file)."""
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    try:
        with path.open("rb") as fh:
            head = fh.read(1 << 16).decode("utf-8", "replace")
    except OSError:
        return False
    return '"stac_version"' in head or ('"type"' in head and '"FeatureCollection"' in head
                                        and '"assets"' in head)


def read_stac(href: str, asset_key: str | None = None) -> list[StacScene]:
    """Every Item under ``href`` (recursively for catalogs), with the image asset of each."""
    pystac = _pystac()
    try:
        obj = _read_object(pystac, href)
    except (OSError, ValueError, KeyError, TypeError, pystac.STACError) as exc:
        raise InputError(f"{href}: not a readable STAC catalog, collection or item "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    if isinstance(obj, pystac.Item):
        items = [obj]
    elif isinstance(obj, pystac.ItemCollection):
        items = list(obj)
    elif isinstance(obj, pystac.Catalog):  # Collection is a Catalog
        try:
            items = list(obj.get_items(recursive=True))
        except (OSError, ValueError, KeyError, pystac.STACError) as exc:
            raise InputError(f"{href}: a catalog link cannot be followed ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200]})") from None
    else:
        raise InputError(f"{href}: a STAC {type(obj).__name__} holds no items")
    if not items:
        raise InputError(f"{href}: the STAC catalog holds no items")
    return [_scene(item, asset_key, href) for item in items]


def _read_object(pystac: Any, href: str) -> Any:
    path = Path(href)
    if path.is_file():
        if path.stat().st_size > MAX_STAC_BYTES:
            raise ValueError(f"larger than {MAX_STAC_BYTES >> 20} MiB")
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and data.get("type") == "FeatureCollection":
            return pystac.ItemCollection.from_dict(data, root=None, preserve_dict=False)
        return pystac.read_file(str(path.resolve()))
    return pystac.read_file(_http_href(href))


def _scene(item: Any, asset_key: str | None, href: str) -> StacScene:
    key, asset = _image_asset(item, asset_key, href)
    path = gdal_path(asset.get_absolute_href() or asset.href)
    if not path.startswith("/") and Path(href).is_file():  # relative to the file that named it
        path = str((Path(href).resolve().parent / path).resolve())
    return StacScene(path=path, item_id=item.id,
                     asset_key=key,
                     datetime=item.datetime.isoformat() if item.datetime else None,
                     properties=dict(item.properties), collection=item.collection_id)


def _image_asset(item: Any, asset_key: str | None, href: str) -> tuple[str, Any]:
    assets = item.assets
    if asset_key is not None:
        if asset_key not in assets:
            raise ConfigError(f"{href}: item {item.id} has no asset {asset_key!r} (it has "
                              f"{', '.join(sorted(assets)) or 'none'})")
        return asset_key, assets[asset_key]
    for key, asset in assets.items():
        if "data" in (asset.roles or []):
            return key, asset
    for key, asset in assets.items():
        if (asset.media_type or "").split(";")[0].strip() in GEOTIFF_TYPES:
            return key, asset
    raise InputError(f"{href}: item {item.id} has no image asset (none with role 'data' or "
                     f"type GeoTIFF among {', '.join(sorted(assets)) or 'no assets'}); choose "
                     "one with --asset KEY")


def gdal_path(href: str) -> str:
    """An asset href as GDAL opens it: local paths as they are, URLs through /vsicurl/ etc."""
    if href.startswith(("http://", "https://")):
        return f"/vsicurl/{href}"
    if href.startswith("s3://"):
        return f"/vsis3/{href[5:]}"
    if href.startswith(("gs://", "az://")):
        return f"/vsi{href[:2]}/{href[5:]}"
    if href.startswith("file://"):
        return href[7:]
    return href


def _http_href(href: str) -> str:
    return href.removeprefix("/vsicurl/")


def _pystac() -> Any:
    try:
        import pystac
    except ImportError:
        raise ConfigError("STAC catalogs need pystac: pip install 'roadprn[stac]'") from None
    return pystac
