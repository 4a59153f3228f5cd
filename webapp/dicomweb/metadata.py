"""WADO-RS metadata as DICOM JSON, computed once per series and kept gzipped beside the archive.

The cache key changes when the series gains an instance, so a growing series is never served
stale. PixelData is never read: its BulkDataURI points at the frames endpoint's sibling
``bulkdata`` resource.
"""
from __future__ import annotations

import gzip
import hashlib
import json

import pydicom
from django.core.files.base import ContentFile
from django.db.models import Count, Max

from webapp.archive.models import Instance, Series, Study
from webapp.archive.services import sort_along_normal
from webapp.archive.storage import archive_storage

from .dicomjson import base_url

BULK_THRESHOLD = 64 * 1024  # binary elements above this become BulkDataURIs


def instance_url(inst: Instance) -> str:
    return f"{base_url()}/studies/{inst.series.study.study_uid}/series/{inst.series.series_uid}/instances/{inst.sop_uid}"


def instance_json(inst: Instance) -> dict:
    """One instance as DICOM JSON: header from the stored file, pixel data by reference."""
    path = archive_storage().path(inst.file_path)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    url = instance_url(inst)

    def bulk(elem) -> str:
        return f"{url}/bulkdata/{elem.tag:08X}"

    data = ds.to_json_dict(bulk_data_threshold=BULK_THRESHOLD, bulk_data_element_handler=bulk)
    ts = str(ds.file_meta.TransferSyntaxUID)
    data["00020010"] = {"vr": "UI", "Value": [ts]}
    pixel_vr = "OW" if inst.bits_allocated > 8 and ts in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1") else "OB"
    data["7FE00010"] = {"vr": pixel_vr, "BulkDataURI": f"{url}/bulkdata/7FE00010"}
    return data


def _cache_name(series: Series, instances: int, newest: int) -> str:
    base = hashlib.sha256(base_url().encode()).hexdigest()[:12]
    return f"metadata/{series.series_uid}/{instances}-{newest}-{base}.json.gz"


def series_metadata_gz(series: Series) -> tuple[bytes, str]:
    """(gzipped JSON array of the series' instances, strong ETag)."""
    stats = series.instances.aggregate(n=Count("id"), newest=Max("id"))
    name = _cache_name(series, stats["n"], stats["newest"] or 0)
    storage = archive_storage()
    etag = '"' + hashlib.sha256(name.encode()).hexdigest()[:32] + '"'
    if storage.exists(name):
        with storage.open(name, "rb") as f:
            return f.read(), etag
    instances = list(series.instances.select_related("series__study"))
    ordered, _, _ = sort_along_normal(instances)
    body = json.dumps([instance_json(i) for i in ordered], separators=(",", ":")).encode()
    blob = gzip.compress(body, compresslevel=6, mtime=0)
    storage.save(name, ContentFile(blob))
    return blob, etag


def series_metadata(series: Series) -> list[dict]:
    blob, _ = series_metadata_gz(series)
    return json.loads(gzip.decompress(blob))


def first_instance_json(*, study: Study | None = None, series: Series | None = None) -> dict | None:
    """Metadata of a representative instance (for QIDO includefield at study/series level)."""
    if series is None and study is not None:
        series = study.series.annotate(n=Count("instances")).filter(n__gt=0).order_by("series_number", "pk").first()
    if series is None:
        return None
    items = series_metadata(series)
    return items[0] if items else None
