"""QIDO-RS search (PS3.18 §10.6): matching on the standard keys, default attributes per level.

Matching runs in the database (wildcards become SQL LIKE with escaping). Results come in pages: a
request without ``limit`` gets DICOMWEB_QIDO_DEFAULT_LIMIT, a larger ``limit`` than
DICOMWEB_QIDO_MAX_LIMIT is clamped, and either way, when more matches exist, the response says so
in a ``Warning: 299`` header (PS3.18 §8.3.4.4). ``includefield`` is answered from the database rows
where they hold the attribute; only other attributes are read from one representative file per
result, element by element, so stored data never fails a search.
"""
from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import CharField, Count, Lookup, Q, QuerySet

from webapp.archive.models import Instance, Series, Study

from . import dicomjson, metadata
from .dicomjson import dataset, element, keyword_of
from .errors import bad_request

log = logging.getLogger(__name__)

CONTROL_PARAMS = {"limit", "offset", "includefield", "fuzzymatching"}
MAX_OFFSET = 2**31 - 1  # past this no archive has results; keeps the SQL OFFSET in range
MAX_PATTERN = 324  # the longest value (PN) a matching key may hold
TRUNCATED_WARNING = ('299 RadLoop "The number of results exceeded the maximum supported by the server. '
                     'Additional results can be requested."')


def default_limit() -> int:
    return min(getattr(settings, "DICOMWEB_QIDO_DEFAULT_LIMIT", 1000), max_limit())


def max_limit() -> int:
    return getattr(settings, "DICOMWEB_QIDO_MAX_LIMIT", 5000)


@CharField.register_lookup
class DicomWildcard(Lookup):
    """``field__dicom_like=pattern``: case-insensitive SQL LIKE with backslash as escape character."""

    lookup_name = "dicom_like"

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        return f"UPPER({lhs}) LIKE UPPER({rhs}) ESCAPE '\\'", [*lhs_params, *rhs_params]


def like_pattern(value: str) -> str:
    """A DICOM wildcard value ('*' any run, '?' one character) as a LIKE pattern, literals escaped."""
    value = re.sub(r"\*+", "*", value)  # '***' matches what '*' matches; no pathological patterns
    out = []
    for char in value:
        if char == "*":
            out.append("%")
        elif char == "?":
            out.append("_")
        elif char in "\\%_":
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)

# keyword -> (ORM path relative to each level's model, how to match)
STUDY_KEYS = {
    "StudyInstanceUID": ("study_uid", "uid"),
    "PatientID": ("patient_id", "text"),
    "PatientName": ("patient_name", "name"),
    "StudyDate": ("study_date", "date"),
    "AccessionNumber": ("accession_number", "text"),
    "StudyID": ("study_id", "text"),
    "StudyDescription": ("description", "name"),
    "ReferringPhysicianName": ("referring_physician", "name"),
    "ModalitiesInStudy": ("series__modality", "list"),
    "PatientSex": ("patient_sex", "text"),
    "PatientBirthDate": ("patient_birth_date", "date"),
}
SERIES_KEYS = {
    "SeriesInstanceUID": ("series_uid", "uid"),
    "Modality": ("modality", "list"),
    "SeriesNumber": ("series_number", "int"),
    "SeriesDescription": ("description", "name"),
    "BodyPartExamined": ("body_part", "text"),
}
INSTANCE_KEYS = {
    "SOPInstanceUID": ("sop_uid", "uid"),
    "SOPClassUID": ("sop_class_uid", "uid"),
    "InstanceNumber": ("instance_number", "int"),
}


@dataclass
class Query:
    filters: dict[str, str]
    limit: int | None = None
    offset: int = 0
    include_all: bool = False
    include: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    truncated: bool = False  # set by the search: more matches than the server sent, unasked


def parse_query(params, level_keys: dict) -> Query:
    """Validate the query string; 400 on anything malformed."""
    query = Query(filters={})
    for name in params:
        values = params.getlist(name)
        if name == "limit":
            query.limit = _non_negative(values[-1], "limit")
        elif name == "offset":
            query.offset = _non_negative(values[-1], "offset")
        elif name == "fuzzymatching":
            continue  # accepted and ignored: matching is already case-insensitive on names
        elif name == "includefield":
            for value in values:
                for part in value.split(","):
                    if part.strip().lower() == "all":
                        query.include_all = True
                    elif part.strip():
                        query.include.append(keyword_of(part.strip()))
        else:
            keyword = keyword_of(name)
            if keyword not in level_keys:
                query.ignored.append(keyword)
                continue
            query.filters[keyword] = ",".join(values)
    return query


def _non_negative(value: str, name: str) -> int:
    if not value.strip().isdigit() and not (value.strip().startswith("-") and value.strip()[1:].isdigit()):
        raise bad_request(f"{name} must be a whole number, not {value[:40]!r}")
    if len(value.strip()) > 18:
        raise bad_request(f"{name} is too large")
    number = int(value)
    if number < 0:
        raise bad_request(f"{name} must not be negative")
    return number


def apply_filters(qs: QuerySet, query: Query, keys: dict[str, tuple[str, str]]) -> QuerySet:
    for keyword, raw in query.filters.items():
        path, kind = keys[keyword]
        qs = qs.filter(_match(path, kind, raw, keyword))
    return qs


def _match(path: str, kind: str, raw: str, keyword: str) -> Q:
    value = raw.strip()
    if kind == "uid":
        uids = [dicomjson.valid_uid(v.strip(), keyword) for v in value.replace("\\", ",").split(",") if v.strip()]
        return Q(**{f"{path}__in": uids})
    if kind == "list":
        return Q(**{f"{path}__in": [v.strip() for v in value.replace("\\", ",").split(",") if v.strip()]})
    if kind == "int":
        try:
            return Q(**{path: int(value)})
        except ValueError:
            raise bad_request(f"{keyword} must be a number, not {value!r}") from None
    if kind == "date":
        return _date_range(path, value, keyword)
    if len(value) > MAX_PATTERN:
        raise bad_request(f"{keyword} may be at most {MAX_PATTERN} characters")
    if "*" in value or "?" in value:
        return Q(**{f"{path}__dicom_like": like_pattern(value)})
    return Q(**{f"{path}__iexact" if kind == "name" else path: value})


def _date_range(path: str, value: str, keyword: str) -> Q:
    def parse(text: str) -> dt.date:
        try:
            return dt.datetime.strptime(text, "%Y%m%d").date()
        except ValueError:
            raise bad_request(f"{keyword} must be YYYYMMDD or a range YYYYMMDD-YYYYMMDD, not {value!r}") from None

    if "-" in value:
        start, _, end = value.partition("-")
        q = Q()
        if start:
            q &= Q(**{f"{path}__gte": parse(start)})
        if end:
            q &= Q(**{f"{path}__lte": parse(end)})
        return q
    return Q(**{path: parse(value)})


def _page(qs: QuerySet, query: Query) -> list:
    """One page of results; marks the query truncated when the server, not the client, cut it short."""
    asked = query.limit if query.limit is not None else default_limit()
    size = min(asked, max_limit())
    if query.offset > MAX_OFFSET or size == 0:
        return []
    rows = list(qs[query.offset : query.offset + size + 1])
    if len(rows) > size:
        query.truncated = query.limit is None or query.limit > size
    return rows[:size]


# --- attributes the database holds, per level ---------------------------------------------------


def _spacing(row_mm, col_mm):
    return [row_mm, col_mm] if row_mm is not None and col_mm is not None else None


STUDY_DB = {
    "StudyInstanceUID": lambda s: s.study_uid,
    "PatientID": lambda s: s.patient_id,
    "PatientName": lambda s: s.patient_name,
    "PatientSex": lambda s: s.patient_sex,
    "PatientBirthDate": lambda s: s.patient_birth_date,
    "StudyDate": lambda s: s.study_date,
    "StudyTime": lambda s: s.study_time,
    "StudyID": lambda s: s.study_id,
    "StudyDescription": lambda s: s.description,
    "AccessionNumber": lambda s: s.accession_number,
    "ReferringPhysicianName": lambda s: s.referring_physician,
    "InstitutionName": lambda s: s.institution,
}
SERIES_DB = {
    "SeriesInstanceUID": lambda s: s.series_uid,
    "Modality": lambda s: s.modality,
    "SeriesNumber": lambda s: s.series_number,
    "SeriesDescription": lambda s: s.description,
    "BodyPartExamined": lambda s: s.body_part,
    "FrameOfReferenceUID": lambda s: s.frame_of_reference_uid,
    "Manufacturer": lambda s: s.manufacturer,
    "PixelSpacing": lambda s: _spacing(s.pixel_spacing_row_mm, s.pixel_spacing_col_mm),
    "SliceThickness": lambda s: s.slice_thickness_mm,
    "ImageOrientationPatient": lambda s: s.image_orientation,
    "KVP": lambda s: s.kvp,
    "ConvolutionKernel": lambda s: s.convolution_kernel,
}
INSTANCE_DB = {
    "SOPInstanceUID": lambda i: i.sop_uid,
    "SOPClassUID": lambda i: i.sop_class_uid,
    "InstanceNumber": lambda i: i.instance_number,
    "ImageType": lambda i: i.image_type.split("\\") if i.image_type else None,
    "ImagePositionPatient": lambda i: (None if None in (i.position_x_mm, i.position_y_mm, i.position_z_mm)
                                       else [i.position_x_mm, i.position_y_mm, i.position_z_mm]),
    "ImageOrientationPatient": lambda i: i.image_orientation,
    "SliceLocation": lambda i: i.slice_location_mm,
    "Rows": lambda i: i.rows,
    "Columns": lambda i: i.columns,
    "BitsAllocated": lambda i: i.bits_allocated,
    "SamplesPerPixel": lambda i: i.samples_per_pixel,
    "NumberOfFrames": lambda i: i.number_of_frames,
}


# --- levels -------------------------------------------------------------------------------------


def search_studies(studies: QuerySet[Study], query: Query) -> list[dict]:
    qs = apply_filters(studies, query, STUDY_KEYS).distinct().order_by("-study_date", "pk")
    rows = _page(qs, query)
    modalities = _modalities([s.pk for s in rows])
    first_series = _first_series([s.pk for s in rows]) if query.include and not query.include_all else {}
    base = dicomjson.base_url()
    out = []
    for study in rows:
        def build(study=study) -> dict:
            item = study_attributes(study, modalities.get(study.pk, []))
            item.update(dataset(RetrieveURL=f"{base}/studies/{study.study_uid}", InstanceAvailability="ONLINE"))
            sources = [(STUDY_DB, study)]
            if study.pk in first_series:
                sources.append((SERIES_DB, first_series[study.pk]))
            return _with_included(item, query, sources, lambda: metadata.representative_instance(study=study), "study")

        out.append(_robust(build, lambda study=study: dataset(StudyInstanceUID=study.study_uid), f"study {study.pk}"))
    return out


def study_attributes(study: Study, modalities: list[str]) -> dict:
    return dataset(
        StudyInstanceUID=study.study_uid,
        StudyDate=study.study_date,
        StudyTime=study.study_time,
        AccessionNumber=study.accession_number,
        ModalitiesInStudy=modalities,
        ReferringPhysicianName=study.referring_physician,
        PatientName=study.patient_name,
        PatientID=study.patient_id,
        PatientBirthDate=study.patient_birth_date,
        PatientSex=study.patient_sex,
        StudyID=study.study_id,
        StudyDescription=study.description,
        NumberOfStudyRelatedSeries=study.num_series,
        NumberOfStudyRelatedInstances=study.num_instances,
    )


def search_series(series_qs: QuerySet[Series], query: Query) -> list[dict]:
    keys = {**SERIES_KEYS, **{k: (f"study__{p}", kind) for k, (p, kind) in STUDY_KEYS.items()}}
    qs = (
        apply_filters(series_qs, query, keys)
        .distinct()
        .select_related("study")
        .annotate(num_instances=Count("instances", distinct=True))
        .order_by("study_id", "series_number", "pk")
    )
    base = dicomjson.base_url()
    out = []
    for series in _page(qs, query):
        def build(series=series) -> dict:
            item = dataset(
                StudyInstanceUID=series.study.study_uid,
                SeriesInstanceUID=series.series_uid,
                Modality=series.modality,
                SeriesNumber=series.series_number,
                SeriesDescription=series.description,
                BodyPartExamined=series.body_part,
                NumberOfSeriesRelatedInstances=series.num_instances,
                RetrieveURL=f"{base}/studies/{series.study.study_uid}/series/{series.series_uid}",
            )
            sources = [(SERIES_DB, series), (STUDY_DB, series.study)]
            return _with_included(item, query, sources, lambda: metadata.representative_instance(series=series), "series")

        fallback = lambda series=series: dataset(StudyInstanceUID=series.study.study_uid, SeriesInstanceUID=series.series_uid)  # noqa: E731
        out.append(_robust(build, fallback, f"series {series.pk}"))
    return out


def search_instances(instances: QuerySet[Instance], query: Query) -> list[dict]:
    keys = {
        **INSTANCE_KEYS,
        **{k: (f"series__{p}", kind) for k, (p, kind) in SERIES_KEYS.items()},
        **{k: (f"series__study__{p}", kind) for k, (p, kind) in STUDY_KEYS.items()},
    }
    qs = (
        apply_filters(instances, query, keys)
        .distinct()
        .select_related("series__study")
        .order_by("series__study_id", "series_id", "instance_number", "pk")
    )
    base = dicomjson.base_url()
    out = []
    for inst in _page(qs, query):
        def build(inst=inst) -> dict:
            study_uid, series_uid = inst.series.study.study_uid, inst.series.series_uid
            item = dataset(
                StudyInstanceUID=study_uid,
                SeriesInstanceUID=series_uid,
                SOPClassUID=inst.sop_class_uid,
                SOPInstanceUID=inst.sop_uid,
                InstanceAvailability="ONLINE",
                InstanceNumber=inst.instance_number,
                Rows=inst.rows,
                Columns=inst.columns,
                BitsAllocated=inst.bits_allocated,
                NumberOfFrames=inst.number_of_frames,
                Modality=inst.series.modality,
                RetrieveURL=f"{base}/studies/{study_uid}/series/{series_uid}/instances/{inst.sop_uid}",
            )
            sources = [(INSTANCE_DB, inst), (SERIES_DB, inst.series), (STUDY_DB, inst.series.study)]
            return _with_included(item, query, sources, lambda: inst, "instance")

        fallback = lambda inst=inst: dataset(SOPInstanceUID=inst.sop_uid)  # noqa: E731
        out.append(_robust(build, fallback, f"instance {inst.pk}"))
    return out


def _robust(build, fallback, ref: str) -> dict:
    """One result; if its stored values break the builder, a minimal result (one bad row never fails a list)."""
    try:
        return build()
    except Exception as exc:  # noqa: BLE001 - stored data is untrusted
        log.warning("qido: %s: result built from its UIDs only (%s)", ref, type(exc).__name__)
        return fallback()


def _modalities(study_ids: list[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for study_id, modality in Series.objects.filter(study_id__in=study_ids).values_list("study_id", "modality").distinct():
        out.setdefault(study_id, []).append(modality)
    return {k: sorted(v) for k, v in out.items()}


def _first_series(study_ids: list[int]) -> dict[int, Series]:
    """Each study's first series with images (the one whose Modality a study-level includefield gets)."""
    out: dict[int, Series] = {}
    series = (Series.objects.filter(study_id__in=study_ids, instances__isnull=False).distinct()
              .order_by("study_id", "series_number", "pk"))
    for s in series:
        out.setdefault(s.study_id, s)
    return out


# Attributes that describe one image, never a study or series as a whole.
INSTANCE_GROUPS = ("0028", "7FE0")
INSTANCE_ONLY = {"00080018", "00200013", "00200032", "00201041", "00080008", "00080033", "00080023"}


def _with_included(item: dict, query: Query, sources: list[tuple[dict, object]], representative, level: str) -> dict:
    """Add includefield attributes: from the database rows where they hold them, else from the
    representative instance's file (read once, only when needed; with includefield=all, every
    attribute of that file)."""
    if not query.include and not query.include_all:
        return item
    from_file: dict | None = None

    def file_json() -> dict:
        nonlocal from_file
        if from_file is None:
            inst = representative()
            from_file = metadata.instance_json(inst) if inst is not None else {}
        return from_file

    if query.include_all:
        for tag, value in file_json().items():
            if tag in item or "BulkDataURI" in value or tag.startswith("0002"):
                continue
            if level != "instance" and (tag[:4] in INSTANCE_GROUPS or tag in INSTANCE_ONLY):
                continue
            item[tag] = value
    for keyword in query.include:
        tag = dicomjson.tag_hex(keyword)
        if tag in item:
            continue
        for table, row in sources:
            if keyword in table:
                item[tag] = dict([element(keyword, _db_value(table[keyword], row))])[tag]
                break
        else:
            item[tag] = file_json().get(tag) or dict([element(keyword, None)])[tag]
    return item


def _db_value(getter, row):
    try:
        return getter(row)
    except (TypeError, ValueError, AttributeError):
        return None