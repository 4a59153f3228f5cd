"""DICOMweb endpoints: thin views over qido / metadata / wado / rendered / stow."""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
from functools import wraps

from django.contrib.auth.decorators import login_not_required
from django.core.cache import cache
from django.db.models import Count
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from webapp.accounts.services import audit
from webapp.archive.access import get_series_for_user, get_study_for_user, studies_for_user
from webapp.archive.models import Instance, Series
from webapp.archive.rendering import UnrenderableImage
from webapp.archive.services import prepare_series
from webapp.archive.storage import archive_storage

from . import metadata, qido, rendered, stow, wado
from .auth import dicomweb_view
from .dicomjson import valid_uid
from .errors import DicomWebError, as_json_error
from .media import multipart_bytes, multipart_stream, parse_accept

log = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
IMMUTABLE = "private, max-age=31536000, immutable"
AUDIT_WINDOW_SECONDS = 600


# --- helpers ------------------------------------------------------------------------------------


def audit_read(request, study_uid: str, what: str) -> None:
    """One audit event per user, study and kind of read per 10 minutes (a viewer fetches 500 frames)."""
    key = f"audit:dicomweb:{request.user.pk}:{study_uid}:{what}"
    if cache.add(key, 1, AUDIT_WINDOW_SECONDS):
        audit(request.user, f"dicomweb.{what}", object_type="study", object_id=study_uid,
              details={"path": request.path[:300], "auth": getattr(request, "dicomweb_auth", "")}, request=request)


def json_response(data, request, status: int = 200) -> HttpResponse:
    """DICOM JSON, gzipped when the client accepts it (JSON shrinks ~10-50x; pixels never are)."""
    body = json.dumps(data, separators=(",", ":")).encode()
    return _maybe_gzip(body, request, status)


def _maybe_gzip(body: bytes, request, status: int = 200, *, already_gzipped: bool = False) -> HttpResponse:
    accepts = "gzip" in request.headers.get("Accept-Encoding", "")
    if already_gzipped and not accepts:
        body, already_gzipped = gzip.decompress(body), False
    elif accepts and not already_gzipped and len(body) > 1024:
        body, already_gzipped = gzip.compress(body, compresslevel=5, mtime=0), True
    response = HttpResponse(body, status=status, content_type=DICOM_JSON)
    if already_gzipped:
        response["Content-Encoding"] = "gzip"
    response["Vary"] = "Accept-Encoding"
    return response


def digest(*parts) -> str:
    """A short, process-independent hash for ETags (Python's hash() differs between workers)."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def not_modified(request, etag: str) -> HttpResponse | None:
    if etag in [t.strip() for t in request.headers.get("If-None-Match", "").split(",")]:
        response = HttpResponse(status=304)
        response["ETag"] = etag
        return response
    return None


def cached(response: HttpResponse, etag: str, cache_control: str = IMMUTABLE) -> HttpResponse:
    response["ETag"] = etag
    response["Cache-Control"] = cache_control
    return response


def get_instance(request, study_uid: str, series_uid: str, sop_uid: str) -> Instance:
    """The instance, after the role check, with its UIDs validated and consistent."""
    for value, what in ((study_uid, "StudyInstanceUID"), (series_uid, "SeriesInstanceUID"), (sop_uid, "SOPInstanceUID")):
        valid_uid(value, what)
    # The role was checked by @dicomweb_view before this lookup; this is the hot path of a viewer.
    try:
        return Instance.objects.select_related("series__study").get(
            sop_uid=sop_uid, series__series_uid=series_uid, series__study__study_uid=study_uid
        )
    except Instance.DoesNotExist:
        raise DicomWebError(404, "no such instance in this study and series") from None


def get_series(request, study_uid: str, series_uid: str) -> Series:
    valid_uid(study_uid, "StudyInstanceUID")
    valid_uid(series_uid, "SeriesInstanceUID")
    series = _or_404(get_series_for_user, request.user, series_uid)
    if series.study.study_uid != study_uid:
        raise DicomWebError(404, "no such series in this study")
    return series


def get_study(request, study_uid: str):
    valid_uid(study_uid, "StudyInstanceUID")
    return _or_404(get_study_for_user, request.user, study_uid)


def _or_404(getter, *args):
    from django.http import Http404

    try:
        return getter(*args)
    except Http404 as exc:
        raise DicomWebError(404, str(exc) or "not found") from None


# --- QIDO-RS ------------------------------------------------------------------------------------


def _search(request, results: list[dict], query: qido.Query) -> HttpResponse:
    audit(request.user, "dicomweb.search", object_type="query", object_id=request.path[:128],
          details={"query": request.GET.urlencode()[:500], "results": len(results)}, request=request)
    warnings = []
    if query.ignored:
        warnings.append(f'299 RadLoop "matching on {", ".join(query.ignored)} is not supported; ignored"')
    if query.truncated:
        warnings.append(qido.TRUNCATED_WARNING)
    response = json_response(results, request) if results else HttpResponse(status=204)
    if warnings:
        response["Warning"] = ", ".join(warnings)
    return response


def json_errors(view):
    """Errors of the decorators outside dicomweb_view (e.g. 405) as JSON too."""
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        return as_json_error(view(request, *args, **kwargs))

    return wrapped


@login_not_required
@csrf_exempt
@json_errors
@require_http_methods(["GET", "POST"])
def studies_root(request):
    """GET: QIDO-RS study search; POST: STOW-RS. Each branch authenticates for itself."""
    if request.method == "POST":
        return store_instances(request)
    return search_studies(request)


@login_not_required
@csrf_exempt
@json_errors
@require_http_methods(["GET", "POST"])
def study_root(request, study_uid: str):
    """GET: retrieve the study; POST: STOW-RS into this study."""
    if request.method == "POST":
        return store_instances(request, study_uid=study_uid)
    return retrieve_study(request, study_uid=study_uid)


@dicomweb_view()
def search_studies(request):
    query = qido.parse_query(request.GET, qido.STUDY_KEYS)
    return _search(request, qido.search_studies(studies_for_user(request.user), query), query)


@dicomweb_view()
@require_GET
def search_series(request, study_uid: str | None = None):
    query = qido.parse_query(request.GET, {**qido.SERIES_KEYS, **qido.STUDY_KEYS})
    studies_for_user(request.user)
    series = Series.objects.all()
    if study_uid:
        series = series.filter(study=get_study(request, study_uid))
    return _search(request, qido.search_series(series, query), query)


@dicomweb_view()
@require_GET
def search_instances(request, study_uid: str | None = None, series_uid: str | None = None):
    query = qido.parse_query(request.GET, {**qido.INSTANCE_KEYS, **qido.SERIES_KEYS, **qido.STUDY_KEYS})
    studies_for_user(request.user)
    instances = Instance.objects.all()
    if series_uid:
        instances = instances.filter(series=get_series(request, study_uid, series_uid))
    elif study_uid:
        instances = instances.filter(series__study=get_study(request, study_uid))
    return _search(request, qido.search_instances(instances, query), query)


# --- STOW-RS ------------------------------------------------------------------------------------


@dicomweb_view(store=True)
def store_instances(request, study_uid: str | None = None):
    if study_uid:
        valid_uid(study_uid, "StudyInstanceUID")
    status, body = stow.store(request, study_uid=study_uid)
    return JsonResponse(body, status=status, content_type=DICOM_JSON)


# --- WADO-RS: metadata ----------------------------------------------------------------------------


@dicomweb_view()
@require_GET
def series_metadata(request, study_uid: str, series_uid: str):
    series = get_series(request, study_uid, series_uid)
    blob, etag = metadata.series_metadata_gz(series)
    audit_read(request, study_uid, "metadata")
    if response := not_modified(request, etag):
        return response
    return cached(_maybe_gzip(blob, request, already_gzipped=True), etag, "private, no-cache")


@dicomweb_view()
@require_GET
def study_metadata(request, study_uid: str):
    study = get_study(request, study_uid)
    items = []
    for series in study.series.annotate(n=Count("instances")).filter(n__gt=0).order_by("series_number", "pk"):
        items.extend(metadata.series_metadata(series))
    audit_read(request, study_uid, "metadata")
    return json_response(items, request)


@dicomweb_view()
@require_GET
def instance_metadata(request, study_uid: str, series_uid: str, sop_uid: str):
    inst = get_instance(request, study_uid, series_uid, sop_uid)
    etag = f'"m-{inst.sha256[:32]}"'
    audit_read(request, study_uid, "metadata")
    if response := not_modified(request, etag):
        return response
    return cached(json_response([metadata.instance_json(inst)], request), etag, "private, no-cache")


# --- WADO-RS: instances, frames, bulk data ---------------------------------------------------------


def _retrieve(request, instances: list[Instance], study_uid: str) -> HttpResponse:
    if not instances:
        raise DicomWebError(404, "nothing stored here")
    wado.check_dicom_accept(parse_accept(request.headers.get("Accept")), {i.transfer_syntax_uid for i in instances})
    storage = archive_storage()
    missing = [i for i in instances if not storage.exists(i.file_path)]
    if missing:
        log.warning("retrieve: %d stored file(s) missing, e.g. instance %s", len(missing), missing[0].pk)
        if len(missing) == len(instances):
            raise DicomWebError(404, "the stored files of these instances are missing")
        instances = [i for i in instances if i not in missing]
    audit_read(request, study_uid, "retrieve")
    parts = ((f"application/dicom; transfer-syntax={i.transfer_syntax_uid}", wado.file_chunks(i)) for i in instances)
    return multipart_stream(parts, "application/dicom")


@dicomweb_view()
@require_GET
def retrieve_study(request, study_uid: str):
    study = get_study(request, study_uid)
    instances = list(Instance.objects.filter(series__study=study).order_by("series_id", "instance_number", "pk"))
    return _retrieve(request, instances, study_uid)


@dicomweb_view()
@require_GET
def retrieve_series(request, study_uid: str, series_uid: str):
    series = get_series(request, study_uid, series_uid)
    return _retrieve(request, list(series.instances.order_by("instance_number", "pk")), study_uid)


@dicomweb_view()
@require_GET
def retrieve_instance(request, study_uid: str, series_uid: str, sop_uid: str):
    inst = get_instance(request, study_uid, series_uid, sop_uid)
    etag = f'"i-{inst.sha256[:32]}"'
    if response := not_modified(request, etag):
        return response
    return cached(_retrieve(request, [inst], study_uid), etag)


@dicomweb_view()
@require_GET
def frames(request, study_uid: str, series_uid: str, sop_uid: str, frame_list: str):
    inst = get_instance(request, study_uid, series_uid, sop_uid)
    numbers = wado.parse_frame_list(frame_list, inst.number_of_frames)
    plan = wado.plan_frames(parse_accept(request.headers.get("Accept")), inst.transfer_syntax_uid)
    etag = f'"f-{inst.sha256[:24]}-{digest(frame_list, plan)}"'
    audit_read(request, study_uid, "frames")
    if response := not_modified(request, etag):
        return response
    data = wado.read_frames(inst, numbers, plan)
    part_type = plan.content_type.split(";")[0]
    return cached(multipart_bytes(((plan.content_type, d) for d in data), part_type), etag)


@dicomweb_view()
@require_GET
def bulkdata(request, study_uid: str, series_uid: str, sop_uid: str, tag: str):
    inst = get_instance(request, study_uid, series_uid, sop_uid)
    try:
        tag_value = int(tag, 16)
    except ValueError:
        raise DicomWebError(400, f"bulk data tags are 8 hex digits, not {tag!r}") from None
    audit_read(request, study_uid, "bulkdata")
    etag = f'"b-{inst.sha256[:32]}-{tag_value:08X}"'
    if response := not_modified(request, etag):
        return response
    data = wado.bulk_value(inst, tag_value)
    return cached(multipart_bytes([("application/octet-stream", data)], "application/octet-stream"), etag)


# --- WADO-RS: rendered and thumbnails ---------------------------------------------------------------


def _rendered(request, inst: Instance, frame: int, default_viewport: tuple[int, int] | None = None) -> HttpResponse:
    params = rendered.parse_params(request.GET, parse_accept(request.headers.get("Accept")))
    if default_viewport and not params.viewport:
        params = rendered.RenderParams(params.window, default_viewport, params.quality, params.mime)
    etag = f'"r-{inst.sha256[:24]}-{digest(frame, params)}"'
    audit_read(request, inst.series.study.study_uid, "rendered")
    if response := not_modified(request, etag):
        return response
    values, header = wado.frame_values(inst, frame)
    try:
        body = rendered.render(values, header, params)
    except Exception as exc:  # noqa: BLE001 - values from a stored file: never a 500
        log.warning("rendered: instance %s frame %s not renderable (%s)", inst.pk, frame, type(exc).__name__)
        raise wado.UnreadablePixels("the image cannot be rendered") from None
    return cached(HttpResponse(body, content_type=params.mime), etag)


@dicomweb_view()
@require_GET
def instance_rendered(request, study_uid: str, series_uid: str, sop_uid: str):
    return _rendered(request, get_instance(request, study_uid, series_uid, sop_uid), 1)


@dicomweb_view()
@require_GET
def frame_rendered(request, study_uid: str, series_uid: str, sop_uid: str, frame_list: str):
    inst = get_instance(request, study_uid, series_uid, sop_uid)
    numbers = wado.parse_frame_list(frame_list, inst.number_of_frames)
    if len(numbers) != 1:
        raise DicomWebError(400, "render one frame at a time")
    return _rendered(request, inst, numbers[0])


@dicomweb_view()
@require_GET
def instance_thumbnail(request, study_uid: str, series_uid: str, sop_uid: str):
    try:
        return _rendered(request, get_instance(request, study_uid, series_uid, sop_uid), 1, default_viewport=(128, 128))
    except wado.UnreadablePixels as exc:
        raise DicomWebError(404, f"no thumbnail: {exc.message}") from None


def _series_thumbnail(request, series: Series) -> HttpResponse:
    params = rendered.parse_params(request.GET, parse_accept(request.headers.get("Accept")), default_mime="image/png")
    audit_read(request, series.study.study_uid, "thumbnail")
    png = _stored_thumbnail(series)
    if params.mime != "image/png":
        import io

        from PIL import Image

        out = io.BytesIO()
        Image.open(io.BytesIO(png)).convert("L").save(out, format="JPEG", quality=params.quality)
        png = out.getvalue()
    return HttpResponse(png, content_type=params.mime)


def _stored_thumbnail(series: Series) -> bytes:
    """The series' thumbnail PNG, made now if the series was not prepared; 404 with the reason
    when its images cannot be rendered."""
    try:
        if not series.thumbnail:
            series = prepare_series(series.pk)
        if series.thumbnail:
            with archive_storage().open(series.thumbnail, "rb") as f:
                return f.read()
        reason = "the series has no images"
    except UnrenderableImage as exc:
        reason = str(exc)
    except Exception as exc:  # noqa: BLE001 - stored data is untrusted: never a 500
        log.warning("thumbnail: series %s not renderable (%s)", series.pk, type(exc).__name__)
        reason = "its images cannot be read"
    raise DicomWebError(404, f"no thumbnail for this series: {reason}")


@dicomweb_view()
@require_GET
def series_thumbnail(request, study_uid: str, series_uid: str):
    return _series_thumbnail(request, get_series(request, study_uid, series_uid))


@dicomweb_view()
@require_GET
def study_thumbnail(request, study_uid: str):
    study = get_study(request, study_uid)
    series = study.series.annotate(n=Count("instances")).filter(n__gt=0).order_by("series_number", "pk").first()
    if series is None:
        raise DicomWebError(404, "this study has no images")
    return _series_thumbnail(request, series)


@login_not_required
def unknown_resource(request):
    """JSON 404 for paths under /dicomweb/ that name no resource (e.g. a UID with '/' in it)."""
    return JsonResponse({"error": "no such DICOMweb resource", "status": 404}, status=404)
