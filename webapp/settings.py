"""RadLoop settings: one flat file, every value from the environment with a safe default.

A fresh checkout runs on embedded defaults (SQLite, files under ./var, a Celery broker on the
local filesystem). Production sets DATABASE_URL (PostgreSQL) and REDIS_URL (Redis broker).
Secrets may be given as FOO_FILE pointing at a file that holds the value.
"""
from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str = "") -> str:
    """The value of NAME, or the contents of the file named by NAME_FILE, or default."""
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        return Path(file_name).read_text().strip()
    return os.environ.get(name, default)


def envbool(name: str, default: bool) -> bool:
    raw = env(name, "")
    if raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true/false)")


def envint(name: str, default: int) -> int:
    raw = env(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None


def envfloat(name: str, default: float) -> float:
    raw = env(name, "")
    if raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None


def envjson(name: str, default):
    """A JSON value (object, list, number) from NAME, merged over ``default`` when both are objects."""
    import json

    raw = env(name, "")
    if raw == "":
        return default
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} is not valid JSON: {exc}") from None
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ImproperlyConfigured(f"{name} must be a JSON object")
        return {**default, **value}
    return value


def envlist(name: str, default: str) -> list[str]:
    return [part.strip() for part in env(name, default).split(",") if part.strip()]


VAR_DIR = Path(env("RADLOOP_VAR_DIR", str(BASE_DIR / "var")))

# "production" turns on the profile at the end of this file (HTTPS only, Secure cookies, HSTS) and
# refuses to start on a missing or weak SECRET_KEY, DEBUG, or a wildcard ALLOWED_HOSTS.
DEPLOYMENT = env("DEPLOYMENT", "development").strip().lower()
if DEPLOYMENT not in {"development", "production"}:
    raise ImproperlyConfigured(f"DEPLOYMENT={DEPLOYMENT!r}: use 'development' or 'production'")
PRODUCTION = DEPLOYMENT == "production"

# Files this process creates (var/, the archive, logs, broker messages, model files, caches) are
# readable by its own user only: 0600 files, 0700 folders. RADLOOP_UMASK (octal) relaxes it.
try:
    os.umask(int(env("RADLOOP_UMASK", "077"), 8))
except ValueError:
    raise ImproperlyConfigured("RADLOOP_UMASK must be an octal number such as 077") from None


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) as 0700; an existing folder of ours is tightened to 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_uid == os.getuid() and path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


private_dir(VAR_DIR)

DEBUG = envbool("DEBUG", False)
SECRET_KEY = env("SECRET_KEY", "")
if PRODUCTION:
    # The rule of `manage.py check --deploy` (security.W009).
    if len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5 or SECRET_KEY.startswith("django-insecure-"):
        raise ImproperlyConfigured(
            "DEPLOYMENT=production needs a strong SECRET_KEY (or SECRET_KEY_FILE): at least 50 characters, "
            "at least 5 different ones, not Django's 'django-insecure-' default. Make one with: "
            ".venv/bin/python -c 'from django.core.management.utils import get_random_secret_key as k; print(k())'")
elif not SECRET_KEY:
    # A per-checkout key, made once and kept outside the repository, so a fresh checkout runs
    # without a shared, published secret.
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        from django.core.management.utils import get_random_secret_key

        private_dir(key_file.parent)
        key_file.write_text(get_random_secret_key())
        key_file.chmod(0o600)
    SECRET_KEY = key_file.read_text().strip()

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "" if PRODUCTION else "localhost,127.0.0.1,[::1],testserver")
# Behind the nginx of deploy/ (production): the client address comes from X-Real-IP, which that
# nginx sets from the connection (a client cannot forge it); without a proxy, from the socket.
BEHIND_PROXY = envbool("BEHIND_PROXY", PRODUCTION)
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")
CSRF_FAILURE_VIEW = "webapp.dicomweb.errors.csrf_failure"  # JSON 403 under /dicomweb/, the usual page elsewhere

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "webapp.accounts",
    "webapp.archive",
    "webapp.dicomweb",
    "webapp.review",
    "webapp.modelops",
    "webapp.viewer",
    "django_celery_beat",
    "webapp.training",
    "axes",  # login throttling and lockout (AXES_* below)
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "webapp.security.ContentSecurityPolicyMiddleware",  # CSP on every page (webapp/security.py)
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "webapp.accounts.middleware.SessionTimeoutMiddleware",  # idle timeout and maximum session age
    "webapp.accounts.middleware.CurrentRequestMiddleware",  # who made a change, for the audit signals
    "webapp.accounts.middleware.NoStoreMiddleware",  # Cache-Control: private, no-store unless a view sets one
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",  # every page needs a login
    "axes.middleware.AxesMiddleware",  # answers a locked-out login with 429 (last, as django-axes asks)
]

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "webapp" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "webapp.accounts.context_processors.roles",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASE_URL = env("DATABASE_URL", f"sqlite:///{VAR_DIR / 'radloop.sqlite3'}")
# Health checks: a connection kept from an earlier request is pinged before reuse, so after a
# database restart the next request reconnects instead of answering 500 (tests/faults).
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (web workers + a Celery worker) share the file: WAL lets readers run
    # beside one writer; IMMEDIATE transactions avoid lock-upgrade deadlocks.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Content-Security-Policy (webapp/security.py) ------------------------------------------
# No inline script or style anywhere: data reaches scripts through json_script / data- attributes. No
# page needs more (the viewer's WebAssembly codecs run in a worker under its static file's policy).
CONTENT_SECURITY_POLICY = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:", "blob:"],
    "connect-src": ["'self'"],
    "worker-src": ["'self'", "blob:"],
    "object-src": ["'none'"],
    "base-uri": ["'none'"],
    "frame-ancestors": ["'none'"],
    "form-action": ["'self'"],
}
CONTENT_SECURITY_POLICY_REPORT_ONLY = envbool("CSP_REPORT_ONLY", False)  # only to trial a change
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

# --- Auth -----------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes first: it refuses a locked-out username before the password is checked.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
# Lockout: AXES_FAILURE_LIMIT failed logins for one username (from any address: behind a proxy every
# client has the proxy's address) lock it for AXES_COOLOFF_MINUTES; a successful login resets the count.
AXES_FAILURE_LIMIT = envint("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=envint("AXES_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["username"]
# axes.W006 asks for the IP address as a lockout key too; behind nginx every client has the proxy's
# address (one address's failures would lock out the whole hospital), so RadLoop locks usernames only.
SILENCED_SYSTEM_CHECKS = ["axes.W006"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "accounts/locked_out.html"
AXES_DISABLE_ACCESS_LOG = True  # successful logins are in the audit log already
AXES_VERBOSE = False
# A session ends after this long without a request, and this long after its login however busy.
SESSION_IDLE_TIMEOUT_SECONDS = envint("SESSION_IDLE_TIMEOUT_SECONDS", 30 * 60)
SESSION_MAX_AGE_SECONDS = envint("SESSION_MAX_AGE_SECONDS", 12 * 3600)
SESSION_COOKIE_AGE = SESSION_MAX_AGE_SECONDS
# API tokens (create_api_token) are valid this many days unless --days says otherwise.
API_TOKEN_DAYS = envint("API_TOKEN_DAYS", 90)
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "archive:study_list"
LOGOUT_REDIRECT_URL = "login"
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"  # a viewer sends hundreds of requests
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = envbool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# --- I18N -----------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Files ----------------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = Path(env("STATIC_ROOT", str(VAR_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = Path(env("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "media/"  # never served directly: every file goes through a permission-checking view
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "archive": {
        "BACKEND": "webapp.archive.storage.AtomicFileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT / "archive")},
    },
    # collectstatic also writes .gz copies (the viewer's 3.8 MB of JS is ~1 MB gzipped); whitenoise
    # serves them to browsers that accept gzip. No manifest: the viewer's files are already hashed.
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Uploads stream to temporary files past 2.5 MB; request bodies are never buffered whole.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
FILE_UPLOAD_TEMP_DIR = env("FILE_UPLOAD_TEMP_DIR", "") or None
DATA_UPLOAD_MAX_NUMBER_FILES = 1000

# --- Archive limits -------------------------------------------------------------------------
ARCHIVE_MAX_FILE_BYTES = envint("ARCHIVE_MAX_FILE_BYTES", 1024 * 1024 * 1024)  # one DICOM file
ARCHIVE_MAX_ZIP_BYTES = envint("ARCHIVE_MAX_ZIP_BYTES", 8 * 1024 * 1024 * 1024)  # unpacked total
ARCHIVE_MAX_ZIP_ENTRIES = envint("ARCHIVE_MAX_ZIP_ENTRIES", 50_000)
ARCHIVE_MAX_ZIP_RATIO = envint("ARCHIVE_MAX_ZIP_RATIO", 200)  # uncompressed / compressed
# Refused at ingest beyond these (webapp/archive/dicomwalk.py walks every element header first):
ARCHIVE_MAX_SEQUENCE_ITEMS = envint("ARCHIVE_MAX_SEQUENCE_ITEMS", 10_000)  # items in one sequence / fragments
ARCHIVE_MAX_ELEMENTS = envint("ARCHIVE_MAX_ELEMENTS", 200_000)  # elements in one file, all levels
ARCHIVE_MAX_SEQUENCE_DEPTH = envint("ARCHIVE_MAX_SEQUENCE_DEPTH", 16)  # sequences inside sequences
ARCHIVE_MAX_HEADER_BYTES = envint("ARCHIVE_MAX_HEADER_BYTES", 16 * 1024 * 1024)  # deflated: before the pixels
ARCHIVE_MAX_DECODED_BYTES = envint("ARCHIVE_MAX_DECODED_BYTES", 1024 * 1024 * 1024)  # pixels the attributes imply

# --- DICOMweb -------------------------------------------------------------------------------
# Absolute root used in RetrieveURL / BulkDataURI (never taken from the Host header).
DICOMWEB_BASE_URL = env("DICOMWEB_BASE_URL", "http://127.0.0.1:8000/dicomweb")
DICOMWEB_MAX_STOW_BYTES = envint("DICOMWEB_MAX_STOW_BYTES", 4 * 1024 * 1024 * 1024)
# QIDO-RS pages: results without ?limit=, and the most one response holds (a larger limit is clamped,
# with a "Warning: 299" header saying more results can be requested).
DICOMWEB_QIDO_DEFAULT_LIMIT = envint("DICOMWEB_QIDO_DEFAULT_LIMIT", 1000)
DICOMWEB_QIDO_MAX_LIMIT = envint("DICOMWEB_QIDO_MAX_LIMIT", 5000)
# Frames one WADO-RS frames request may ask for (more, or the same frame twice, is a 400).
DICOMWEB_MAX_FRAMES_PER_REQUEST = envint("DICOMWEB_MAX_FRAMES_PER_REQUEST", 1000)

# --- Models -----------------------------------------------------------------------------------
BASELINE_MODEL_PATH = env("BASELINE_MODEL_PATH", "ml/weights/baseline-v1.pt")
# A running inference without a heartbeat for this long (its worker died), or a queued one this
# old (its message was lost), is queued again when a worker starts or an admin asks.
INFERENCE_STALE_SECONDS = envint("INFERENCE_STALE_SECONDS", 300)
# A run whose worker was killed (out of memory) this many times in a row fails instead of running again.
INFERENCE_MAX_ATTEMPTS = envint("INFERENCE_MAX_ATTEMPTS", 2)
# The largest CT grid built from a series (acquired + interpolated slices; voxels): a bigger one is
# refused with its reason before any memory is taken (ml.volumes.plan_grid).
VOLUME_MAX_SLICES = envint("VOLUME_MAX_SLICES", 2000)
VOLUME_MAX_VOXELS = envint("VOLUME_MAX_VOXELS", 2000 * 512 * 512)
# A series sent by STOW-RS (a PACS may send one series over many requests) counts as complete once no
# instance of it arrived for this long; an upload batch ends its series at once.
SERIES_QUIET_SECONDS = envint("SERIES_QUIET_SECONDS", 30)
# Test-time augmentation (flips) on every inference: its disagreement is the per-finding and per-case
# uncertainty the worklist and the active-learning order use (costs ~1.6x the inference time).
INFERENCE_TTA = envbool("INFERENCE_TTA", True)
# An upload batch that received nothing for this long (tab closed mid-upload) is finished by the
# periodic upkeep, so what arrived is read by the AI like any other upload.
UPLOAD_ABANDONED_SECONDS = envint("UPLOAD_ABANDONED_SECONDS", 600)

# --- Retraining (webapp.training) ------------------------------------------------------------
# Every N newly signed-off cases (since the last training run) queue a retraining; 0 turns it off.
RETRAIN_EVERY_N_SIGNED_OFF = envint("RETRAIN_EVERY_N_SIGNED_OFF", 20)
# Share of signed-off studies held out for evaluation, chosen by a hash of the study UID; a study
# keeps the side it was first recorded on, even if this share changes later.
RETRAIN_HELDOUT_SHARE = envfloat("RETRAIN_HELDOUT_SHARE", 0.2)
if not 0.0 <= RETRAIN_HELDOUT_SHARE < 1.0:
    raise ImproperlyConfigured("RETRAIN_HELDOUT_SHARE must be in [0, 1)")
RETRAIN_MIN_TRAIN_CASES = envint("RETRAIN_MIN_TRAIN_CASES", 1)  # signed-off training cases needed to start
RETRAIN_DET_STEPS = envint("RETRAIN_DET_STEPS", 120)  # fine-tuning steps of the detector
RETRAIN_SEG_STEPS = envint("RETRAIN_SEG_STEPS", 90)  # ... and of the segmenter
RETRAIN_LR = envfloat("RETRAIN_LR", 2e-4)
RETRAIN_SEED = envint("RETRAIN_SEED", 0)
# Phantoms mixed into every fine-tuning run so the model does not forget (small and full presets).
# Defaults = ml.finetune's (sized for < 10 min on 2 CPU cores with 10 new cases).
RETRAIN_PHANTOMS_SMALL = envint("RETRAIN_PHANTOMS_SMALL", 24)
RETRAIN_PHANTOMS_FULL = envint("RETRAIN_PHANTOMS_FULL", 4)
# The fixed phantom benchmark both champion and challenger are measured on (ml.evaluate's test seeds).
RETRAIN_BENCHMARK_N = envint("RETRAIN_BENCHMARK_N", 4)
RETRAIN_BENCHMARK_SEED = envint("RETRAIN_BENCHMARK_SEED", 80_000)  # never ml.evaluate's test seeds (90000+)
RETRAIN_BENCHMARK_PRESET = env("RETRAIN_BENCHMARK_PRESET", "full")  # ml.phantom preset of the benchmark
RETRAIN_DEVICE = env("RETRAIN_DEVICE", "")  # "" = CUDA when present, else CPU
RETRAIN_TORCH_THREADS = envint("RETRAIN_TORCH_THREADS", max(1, (os.cpu_count() or 2) // 2))
RETRAIN_MODELS_DIR = env("RETRAIN_MODELS_DIR", "")  # "" = MEDIA_ROOT/models
RETRAIN_CACHE_DIR = env("RETRAIN_CACHE_DIR", str(VAR_DIR / "train-cache"))  # phantom training cases
# A running training without a heartbeat this long has lost its worker and is marked failed.
TRAINING_STALE_SECONDS = envint("TRAINING_STALE_SECONDS", 300)
# When a challenger replaces the champion. primary: the metric that must improve (on the held-out
# reviewed cases, or on the phantom benchmark when no held-out case has a lesion) by more than
# min_gain; max_cpm_drop: how much the phantom-benchmark CPM may fall (forgetting guard);
# require_dice_not_worse: segmentation Dice (lesions >= 6 mm) must not fall.
PROMOTION_RULE = envjson("PROMOTION_RULE", {
    "primary": "cpm", "min_gain": 0.0, "max_cpm_drop": 0.01, "require_dice_not_worse": True,
    "min_heldout_lesions": 10,
})
# A challenger that passes the rule waits for an admin's Approve on /models/ instead of replacing the
# champion at once. On by default in production (a clinical deployment changes its reading model only
# with a human's sign-off), off in development (the demo loop promotes by itself).
PROMOTION_REQUIRES_APPROVAL = envbool("PROMOTION_REQUIRES_APPROVAL", PRODUCTION)

# --- Celery ---------------------------------------------------------------------------------
REDIS_URL = env("REDIS_URL", "")
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_RESULT_BACKEND = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS: dict = {"visibility_timeout": 3600}
else:
    # Embedded default: kombu's filesystem transport, a real broker that needs no server.
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "results", "control"):
        private_dir(_broker_dir / _sub)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),  # kombu's default is ./control
        "store_processed": False,
    }
    CELERY_RESULT_BACKEND = f"file://{_broker_dir / 'results'}"

# --- Logging --------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "axes": {"level": "WARNING"},  # every login's bookkeeping at INFO; lockouts stay (and are audited)
        # Failed decodes become a rejection reason for the uploader; no traceback in the log.
        "pydicom.pixels.decoders.base": {"level": "CRITICAL"},
    },
}

CELERY_TASK_DEFAULT_QUEUE = "cpu"
CELERY_TASK_ROUTES = {
    "workers.prepare_series": {"queue": "cpu"},
    "workers.infer_series": {"queue": "gpu"},
    "workers.request_retraining": {"queue": "cpu"},
    "workers.pipeline_upkeep": {"queue": "cpu"},
    "workers.retrain": {"queue": "train"},  # its own worker: concurrency 1, niced, torch threads capped
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True  # a job whose worker dies is redelivered, not lost
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True  # job state lives in the database rows the UI reads
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# --- Production profile (DEPLOYMENT=production) ---------------------------------------------
# Behind a TLS-terminating proxy (nginx, see deploy/nginx-radloop.conf) that sets X-Forwarded-Proto.
# `DEPLOYMENT=production manage.py check --deploy` reports no warnings with these.
if PRODUCTION:
    if DEBUG:
        raise ImproperlyConfigured("DEPLOYMENT=production refuses DEBUG=true (tracebacks would show data and settings)")
    if not ALLOWED_HOSTS or "*" in ALLOWED_HOSTS:
        raise ImproperlyConfigured("DEPLOYMENT=production needs ALLOWED_HOSTS set to the host name(s) the app is "
                                   "served under (comma-separated, no '*')")
    if not DICOMWEB_BASE_URL.startswith("https://"):
        raise ImproperlyConfigured("DEPLOYMENT=production needs DICOMWEB_BASE_URL set to the public https:// URL "
                                   "of /dicomweb (it is written into RetrieveURL and BulkDataURI)")
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")  # nginx overwrites it; gunicorn binds to localhost
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # health checks from the machine itself over plain HTTP
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", True)  # the header only; submitting the domain is a separate step
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SESSION_COOKIE_HTTPONLY = True  # CSRF_COOKIE_HTTPONLY stays off: the viewer sends the cookie's value in X-CSRFToken
    SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"
    X_FRAME_OPTIONS = "DENY"
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SECURE_REFERRER_POLICY = "same-origin"
    SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
    CONTENT_SECURITY_POLICY_REPORT_ONLY = False  # the CSP (webapp.security) is enforced, never only reported
