"""QIDO-RS search (PS3.18 §10.6): matching on the standard keys, default attributes per level."""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from django.db.models import Count, Q, QuerySet

from webapp.archive.models import Instance, Series, Study

from . import dicomjson, metadata
from .dicomjson import dataset, element, keyword_of
from .errors import bad_request

MAX_LIMIT = 10_000
CONTROL_PARAMS = {"limit", "offset", "includefield", "fuzzymatching"}

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


def parse_query(params, level_keys: dict) -> Query:
    """Validate the query string; 400 on anything malformed."""
    query = Query(filters={})
    for name in params:
        values = params.getlist(name)
        if name == "limit":
            query.limit = _non_negative(values[-1], "limit", maximum=MAX_LIMIT)
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


def _non_negative(value: str, name: str, maximum: int | None = None) -> int:
    try:
        number = int(value)
    except ValueError:
        raise bad_request(f"{name} must be a whole number, not {value!r}") from None
    if number < 0:
        raise bad_request(f"{name} must not be negative")
    return min(number, maximum) if maximum else number


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
    if "*" in value or "?" in value:
        pattern = "^" + "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in value) + "$"
        return Q(**{f"{path}__iregex": pattern})
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
    end = query.offset + query.limit if query.limit is not None else None
    return list(qs[query.offset : end])


# --- levels -------------------------------------------------------------------------------------


def search_studies(studies: QuerySet[Study], query: Query) -> list[dict]:
    qs = apply_filters(studies, query, STUDY_KEYS).distinct().order_by("-study_date", "pk")
    rows = _page(qs, query)
    modalities = _modalities([s.pk for s in rows])
    base = dicomjson.base_url()
    out = []
    for study in rows:
        item = study_attributes(study, modalities.get(study.pk, []))
        item.update(dataset(RetrieveURL=f"{base}/studies/{study.study_uid}", InstanceAvailability="ONLINE"))
        out.append(_with_included(item, query, lambda: metadata.first_instance_json(study=study), "study"))
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
        out.append(_with_included(item, query, lambda: metadata.first_instance_json(series=series), "series"))
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
        out.append(_with_included(item, query, lambda: metadata.instance_json(inst), "instance"))
    return out


def _modalities(study_ids: list[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for study_id, modality in Series.objects.filter(study_id__in=study_ids).values_list("study_id", "modality").distinct():
        out.setdefault(study_id, []).append(modality)
    return {k: sorted(v) for k, v in out.items()}


# Attributes that describe one image, never a study or series as a whole.
INSTANCE_GROUPS = ("0028", "7FE0")
INSTANCE_ONLY = {"00080018", "00200013", "00200032", "00201041", "00080008", "00080033", "00080023"}


def _with_included(item: dict, query: Query, source, level: str) -> dict:
    """Add includefield attributes (or all, with includefield=all) from the stored metadata."""
    if not query.include and not query.include_all:
        return item
    extra = source() or {}
    if query.include_all:
        for tag, value in extra.items():
            if tag in item or "BulkDataURI" in value or tag.startswith("0002"):
                continue
            if level != "instance" and (tag[:4] in INSTANCE_GROUPS or tag in INSTANCE_ONLY):
                continue
            item[tag] = value
    for keyword in query.include:
        tag = dicomjson.tag_hex(keyword)
        if tag not in item:
            item[tag] = extra.get(tag) or dict([element(keyword, None)])[tag]
    return item
