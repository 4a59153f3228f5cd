"""WADO-RS metadata as DICOM JSON, computed once per series and kept gzipped beside the archive.

The cache key changes when the series gains an instance, so a growing series is never served
stale. PixelData is never read: its BulkDataURI points at the frames endpoint's sibling
``bulkdata`` resource. Stored files are untrusted: each element is converted on its own
(``dicomjson.dataset_json``), and an instance whose file cannot be read at all is described from
its database row, so one bad file never fails a series.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging

from django.core.files.base import ContentFile
from django.db.models import Count, Max

from webapp.archive.models import Instance, Series, Study
from webapp.archive.rendering import UnrenderableImage, read_stored
from webapp.archive.services import sort_along_normal
from webapp.archive.storage import archive_storage

from .dicomjson import base_url, dataset, dataset_json

log = logging.getLogger(__name__)

BULK_THRESHOLD = 64 * 1024  # binary elements above this become BulkDataURIs
NATIVE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")


def instance_url(inst: Instance) -> str:
    return f"{base_url()}/studies/{inst.series.study.study_uid}/series/{inst.series.series_uid}/instances/{inst.sop_uid}"


def read_header(inst: Instance):
    """The stored file's header (no pixels), or None when it cannot be read (logged with ids)."""
    try:
        return read_stored(archive_storage().path(inst.file_path), stop_before_pixels=True)
    except UnrenderableImage as exc:
        log.warning("metadata: instance %s (series %s): %s", inst.pk, inst.series_id, exc)
        return None


def instance_json(inst: Instance) -> dict:
    """One instance as DICOM JSON: header from the stored file, pixel data by reference."""
    url = instance_url(inst)
    ds = read_header(inst)
    if ds is None:
        data = row_json(inst)
    else:
        def bulk(elem) -> str:
            return f"{url}/bulkdata/{elem.tag:08X}"

        data = dataset_json(ds, bulk_threshold=BULK_THRESHOLD, bulk_handler=bulk, ref=f"instance {inst.pk}")
    ts = inst.transfer_syntax_uid
    data["00020010"] = {"vr": "UI", "Value": [ts]}
    pixel_vr = "OW" if (inst.bits_allocated or 0) > 8 and ts in NATIVE else "OB"
    data["7FE00010"] = {"vr": pixel_vr, "BulkDataURI": f"{url}/bulkdata/7FE00010"}
    return data


def row_json(inst: Instance) -> dict:
    """What the database knows of an instance whose file cannot be read."""
    series, study = inst.series, inst.series.study
    return dataset(
        StudyInstanceUID=study.study_uid,
        SeriesInstanceUID=series.series_uid,
        SOPClassUID=inst.sop_class_uid,
        SOPInstanceUID=inst.sop_uid,
        Modality=series.modality,
        SeriesNumber=series.series_number,
        InstanceNumber=inst.instance_number,
        Rows=inst.rows,
        Columns=inst.columns,
        BitsAllocated=inst.bits_allocated,
        SamplesPerPixel=inst.samples_per_pixel,
        NumberOfFrames=inst.number_of_frames,
    )


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
    ordered = _ordered(instances)
    body = json.dumps([instance_json(i) for i in ordered], separators=(",", ":")).encode()
    blob = gzip.compress(body, compresslevel=6, mtime=0)
    storage.save(name, ContentFile(blob))
    return blob, etag


def _ordered(instances: list[Instance]) -> list[Instance]:
    """Along the slice normal; by InstanceNumber when stored geometry cannot be used (NaN, junk)."""
    try:
        ordered, _, _ = sort_along_normal(instances)
        return ordered
    except Exception as exc:  # noqa: BLE001 - stored geometry is untrusted
        log.warning("metadata: series %s: geometry not usable for ordering (%s)",
                    instances[0].series_id if instances else "?", type(exc).__name__)
        return sorted(instances, key=lambda i: (i.instance_number or 0, i.pk))


def series_metadata(series: Series) -> list[dict]:
    blob, _ = series_metadata_gz(series)
    return json.loads(gzip.decompress(blob))


def representative_instance(*, study: Study | None = None, series: Series | None = None) -> Instance | None:
    """The first instance of the first series with images (for QIDO includefield at study/series level)."""
    instances = Instance.objects.select_related("series__study")
    if series is not None:
        instances = instances.filter(series=series)
    elif study is not None:
        instances = instances.filter(series__study=study)
    else:
        return None
    return instances.order_by("series__series_number", "series_id", "instance_number", "pk").first()


def first_instance_json(*, study: Study | None = None, series: Series | None = None) -> dict | None:
    """Metadata of a representative instance, read from its one file (never the whole series)."""
    inst = representative_instance(study=study, series=series)
    return instance_json(inst) if inst is not None else None
