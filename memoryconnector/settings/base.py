"""Settings shared by every environment; all configuration comes from the environment.

Every variable read here is documented in `.env.example`.
"""

from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote

import environ
from csp import constants as csp_constants

from common import embedded_postgres

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_required(name: str) -> str:
    """A setting production cannot run without: unset or blank is a start-up error."""
    value = env.str(name, default="").strip()
    if not value:
        raise environ.ImproperlyConfigured(f"Set {name}: it is required in production.")
    return value


def env_flag(name: str, default: bool) -> bool:
    """Read a boolean strictly: a typo is a start-up error, never a silent False."""
    raw = env.str(name, default=None)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise environ.ImproperlyConfigured(
        f"{name}={raw!r} is not a boolean; use one of {sorted(_TRUE | _FALSE)}"
    )


def env_decimal(name: str, default: str):
    """A non-negative Decimal; `default` when unset or blank; anything else is a start-up error."""
    from decimal import Decimal, InvalidOperation

    raw = env.str(name, default="").strip() or default
    try:
        value = Decimal(raw)
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite() or value < 0:
        raise environ.ImproperlyConfigured(f"{name}={raw!r} is not a non-negative number")
    return value


def env_count(name: str, default: int) -> int:
    """A non-negative integer; `default` when unset or blank."""
    raw = env.str(name, default="").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise environ.ImproperlyConfigured(f"{name}={raw!r} is not a non-negative integer")
    return int(raw)


DEBUG = env_flag("DJANGO_DEBUG", False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
CSRF_FAILURE_VIEW = "common.errors.csrf_failure"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "accounts",
    "memories",
    "costs",
    "alerting",
    "enrichment",
    "sync",
]

MIDDLEWARE = [
    "memoryconnector.metrics.RequestMetricsMiddleware",
    "common.middleware.RequestLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "common.middleware.BodySizeLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "common.middleware.ApiExceptionMiddleware",
]

# Content-Security-Policy (django-csp) on every page: the admin, the dashboard and the API docs
# run only scripts of our own origin — none inline (the docs use drf-spectacular's split view,
# whose start-up script is a file too). Inline *style attributes* stay allowed: the admin and
# the dashboard's bars use them, and they cannot run code.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [csp_constants.SELF],
        "script-src": [csp_constants.SELF],
        "style-src": [csp_constants.SELF, csp_constants.UNSAFE_INLINE],
        "img-src": [csp_constants.SELF, "data:"],
        "object-src": [csp_constants.NONE],
        "base-uri": [csp_constants.SELF],
        "form-action": [csp_constants.SELF],
        "frame-ancestors": [csp_constants.NONE],
    }
}

ROOT_URLCONF = "memoryconnector.urls"
WSGI_APPLICATION = "memoryconnector.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# PostgreSQL only (pgvector 0.8+ and full-text search power memory search). Unset: the embedded
# server of `make run` / `make test` (common/embedded_postgres.py), on its socket under var/.
DATABASE_URL = env.str("DATABASE_URL", default="") or embedded_postgres.default_url()
DATABASES = {"default": env.db_url_config(DATABASE_URL)}
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise environ.ImproperlyConfigured(
        "DATABASE_URL must be a postgres:// URL (a server with pgvector 0.8+); unset, "
        "`make run` and `make test` start an embedded PostgreSQL"
    )
# A Unix socket folder given as a percent-encoded host (postgres://user@%2Fpath%2Fto/db), the
# form libpq reads too.
DATABASES["default"]["HOST"] = unquote(DATABASES["default"]["HOST"])
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

REDIS_URL = env.str("REDIS_URL", default="")


def redis_cache(url: str) -> dict:
    """The cache on Redis. It holds only the auth throttles' counters, so a Redis outage must
    not fail a request: django-redis ignores the error (IGNORE_EXCEPTIONS) and the throttle
    fails open, with one warning line per ignored error (logger below)."""
    return {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": url,
        "KEY_PREFIX": "mc",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 2, "IGNORE_EXCEPTIONS": True},
    }


if REDIS_URL:
    CACHES = {"default": redis_cache(REDIS_URL)}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# django-redis logs each ignored error as an ERROR with a traceback on this logger;
# common.logging.CacheOutageFilter (in LOGGING) makes it one WARNING line naming the failure.
DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True
DJANGO_REDIS_LOGGER = "memoryconnector.cache"

AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# The staff dashboard's script and styles (memoryconnector is not an installed app).
STATICFILES_DIRS = [BASE_DIR / "memoryconnector" / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Requests bigger than this are refused with 413 before the body is read.
MAX_REQUEST_BODY_BYTES = env.int("MAX_REQUEST_BODY_BYTES", default=128 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES

# --- Product settings -------------------------------------------------------------------------
MEMORY_MAX_CHARS = env.int("MEMORY_MAX_CHARS", default=8000)
ALLOW_REGISTRATION = env_flag("ALLOW_REGISTRATION", True)
IDEMPOTENCY_KEY_TTL_HOURS = env.int("IDEMPOTENCY_KEY_TTL_HOURS", default=24)
# An in-flight key whose request died (process killed) can be reclaimed after this long.
IDEMPOTENCY_LOCK_TIMEOUT_SECONDS = env.int("IDEMPOTENCY_LOCK_TIMEOUT_SECONDS", default=60)
AI_BUDGET_TIMEZONE = env.str("AI_BUDGET_TIMEZONE", default="UTC")
# Offline sync (WatermelonDB protocol): tombstones of deleted memories are kept this many days;
# a device that has not synced for longer must resync from scratch (410).
SYNC_TOMBSTONE_DAYS = env.int("SYNC_TOMBSTONE_DAYS", default=90)
# One push (POST /api/v1/sync) carries at most this many records and bytes (else 400 / 413).
SYNC_PUSH_MAX_RECORDS = env.int("SYNC_PUSH_MAX_RECORDS", default=1000)
SYNC_PUSH_MAX_BYTES = env.int("SYNC_PUSH_MAX_BYTES", default=10 * 1024 * 1024)

# --- API ----------------------------------------------------------------------------------------
# How many reverse proxies we trust to append to X-Forwarded-For (nginx in front of gunicorn: 1).
# Everything that needs a client address (throttles, the admin login) reads it through DRF's
# get_ident, which honours this; a spoofed header never picks the address when it is 0.
NUM_PROXIES = env_count("NUM_PROXIES", 0)
# Failed logins per account (by email, whatever the address): after LOGIN_LOCKOUT_ATTEMPTS
# failures within LOGIN_LOCKOUT_SECONDS the account refuses logins for LOGIN_LOCKOUT_SECONDS.
LOGIN_LOCKOUT_ATTEMPTS = env_count("LOGIN_LOCKOUT_ATTEMPTS", 5)
LOGIN_LOCKOUT_SECONDS = env_count("LOGIN_LOCKOUT_SECONDS", 300)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.JWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["common.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "common.errors.api_exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "auth": env.str("AUTH_THROTTLE_RATE", default="10/min"),
    },
    "UNAUTHENTICATED_USER": None,
    # Proxies in front of the app that append to X-Forwarded-For; the client is the address
    # the last of them saw. 0: the socket address is the client and the header is ignored.
    "NUM_PROXIES": NUM_PROXIES,
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("JWT_ACCESS_TOKEN_MINUTES", default=15)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_TOKEN_DAYS", default=7)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": True,
    "SIGNING_KEY": env.str("JWT_SIGNING_KEY", default="") or SECRET_KEY,
    "AUTH_HEADER_TYPES": ("Bearer",),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Memory Connector API",
    "DESCRIPTION": (
        "Capture short text memories; they are enriched in the background by an AI provider "
        "within a hard daily budget. Errors always have the shape "
        '`{"error": {"code", "message", "details"}}`.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "common.schema.add_error_responses",
    ],
    # A token typed into Authorize lives only as long as the page: persisting it would leave it
    # in the browser's localStorage, readable by any script of the origin. SWAGGER_PERSIST_AUTH
    # turns it on for a developer who wants it.
    "SWAGGER_UI_SETTINGS": {"persistAuthorization": env_flag("SWAGGER_PERSIST_AUTH", False)},
}

# --- Enrichment ---------------------------------------------------------------------------------
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
# "openai" or "local"; by default openai when a key is set, local otherwise.
AI_PROVIDER = env.str("AI_PROVIDER", default="") or ("openai" if OPENAI_API_KEY else "local")
if AI_PROVIDER not in ("openai", "local"):
    raise environ.ImproperlyConfigured(f"AI_PROVIDER={AI_PROVIDER!r}: use openai or local")
if AI_PROVIDER == "openai" and not OPENAI_API_KEY:
    raise environ.ImproperlyConfigured("AI_PROVIDER=openai needs OPENAI_API_KEY")
OPENAI_BASE_URL = env.str("OPENAI_BASE_URL", default="")
OPENAI_CLASSIFICATION_MODEL = env.str("OPENAI_CLASSIFICATION_MODEL", default="gpt-4o-mini")
OPENAI_EMBEDDING_MODEL = env.str("OPENAI_EMBEDDING_MODEL", default="text-embedding-3-small")
# Dimensions asked of embedding models that accept them (text-embedding-3-*; OPENAI_EMBEDDING_
# DIMENSIONS is the older name). 512 keeps most of their quality at a third of 1536's storage and
# scan cost. Changing it (or the model) re-embeds old rows in the background (manage.py reembed).
EMBEDDING_DIMENSIONS = (
    env.int("EMBEDDING_DIMENSIONS", default=0)
    or env.int("OPENAI_EMBEDDING_DIMENSIONS", default=0)
    or 512
)
if not 1 <= EMBEDDING_DIMENSIONS <= 2000:
    raise environ.ImproperlyConfigured("EMBEDDING_DIMENSIONS must be 1 to 2000 (pgvector's index)")
OPENAI_TIMEOUT_SECONDS = env.float("OPENAI_TIMEOUT_SECONDS", default=30.0)
OPENAI_CLASSIFICATION_MAX_INPUT_TOKENS = env.int(
    "OPENAI_CLASSIFICATION_MAX_INPUT_TOKENS", default=4000
)
OPENAI_EMBEDDING_MAX_INPUT_TOKENS = env.int("OPENAI_EMBEDDING_MAX_INPUT_TOKENS", default=8191)

ENRICHMENT_WORKER_ENABLED = env_flag("ENRICHMENT_WORKER_ENABLED", True)
ENRICHMENT_POLL_INTERVAL_MS = env.int("ENRICHMENT_POLL_INTERVAL_MS", default=5000)
ENRICHMENT_BATCH_SIZE = env.int("ENRICHMENT_BATCH_SIZE", default=10)
# Classification calls a worker process makes at once within a batch (threads).
ENRICHMENT_CLASSIFY_CONCURRENCY = env.int("ENRICHMENT_CLASSIFY_CONCURRENCY", default=8)
ENRICHMENT_MAX_ATTEMPTS = env.int("ENRICHMENT_MAX_ATTEMPTS", default=5)
ENRICHMENT_RETRY_BASE_SECONDS = env.float("ENRICHMENT_RETRY_BASE_SECONDS", default=2.0)
ENRICHMENT_RETRY_MAX_SECONDS = env.float("ENRICHMENT_RETRY_MAX_SECONDS", default=300.0)
# A job claimed by a worker that then dies is handed out again after this long.
ENRICHMENT_LEASE_SECONDS = env.int("ENRICHMENT_LEASE_SECONDS", default=360)
# A job sent to the broker but never claimed is sent again after this long.
ENRICHMENT_REDISPATCH_SECONDS = env.int("ENRICHMENT_REDISPATCH_SECONDS", default=120)
ENRICHMENT_HEARTBEAT_SECONDS = env.int("ENRICHMENT_HEARTBEAT_SECONDS", default=5)
# A job refused a reservation while the budget is not yet spent (calls in flight hold the rest)
# tries again after this long instead of waiting for the reset.
ENRICHMENT_BUDGET_RETRY_SECONDS = env.int("ENRICHMENT_BUDGET_RETRY_SECONDS", default=30)

# --- OpenAI's Batch API (enrichment.batch_api): embeddings that can wait, at the batch prices ----
# true: re-embedding after a model change goes through the Batch API (results within 24 h, at
# the batch prices) instead of synchronous calls; beat submits a batch when none is open.
OPENAI_BATCH_REEMBED = env_flag("OPENAI_BATCH_REEMBED", False)
# How often beat polls the open batches (and applies the results of the ended ones).
OPENAI_BATCH_POLL_SECONDS = env.int("OPENAI_BATCH_POLL_SECONDS", default=60)
# Memories per batch (OpenAI takes up to 50,000 requests and 200 MB per input file).
OPENAI_BATCH_MAX_REQUESTS = env.int("OPENAI_BATCH_MAX_REQUESTS", default=2000)
# How long each item's budget reservation is held: the 24 h completion window and a margin for
# the poll; a reservation still held after this is charged at its estimate (unreconciled).
OPENAI_BATCH_HOLD_SECONDS = env.int("OPENAI_BATCH_HOLD_SECONDS", default=25 * 3600)
if not 1 <= OPENAI_BATCH_MAX_REQUESTS <= 50_000:
    raise environ.ImproperlyConfigured("OPENAI_BATCH_MAX_REQUESTS must be 1 to 50000")
if OPENAI_BATCH_HOLD_SECONDS < 24 * 3600:
    raise environ.ImproperlyConfigured(
        "OPENAI_BATCH_HOLD_SECONDS must cover the 24 h completion window (86400 or more)"
    )

# --- Search -------------------------------------------------------------------------------------
# PostgreSQL text search configuration for keyword search (with 'simple' beside it, so exact
# tokens such as INV-88231 match); changing it rebuilds the stored tsvectors after `migrate`.
SEARCH_LANGUAGE = env.str("SEARCH_LANGUAGE", default="english")
# A query's embedding is cached this long (the same normalised query and model: no second call).
SEARCH_QUERY_CACHE_SECONDS = env.int("SEARCH_QUERY_CACHE_SECONDS", default=24 * 3600)
# HNSW: build parameters of the vector index, and the candidate list size at query time.
SEARCH_HNSW_M = env.int("SEARCH_HNSW_M", default=16)
SEARCH_HNSW_EF_CONSTRUCTION = env.int("SEARCH_HNSW_EF_CONSTRUCTION", default=64)
SEARCH_HNSW_EF_SEARCH = env.int("SEARCH_HNSW_EF_SEARCH", default=200)

# --- Alerting -----------------------------------------------------------------------------------
# Channels: email when SMTP_HOST and ADMIN_EMAIL are set; Slack when SLACK_BOT_TOKEN and a channel
# (or SLACK_WEBHOOK_URL) are set; the log always. The alerting app reads these at send time.
ADMIN_EMAIL = env.str("ADMIN_EMAIL", default="")  # comma-separated recipients
SMTP_HOST = env.str("SMTP_HOST", default="")
SMTP_PORT = int(env.str("SMTP_PORT", default="") or 587)
SMTP_USER = env.str("SMTP_USER", default="")
SMTP_PASS = env.str("SMTP_PASS", default="")
SMTP_FROM = env.str("SMTP_FROM", default="") or "Memory Connector <alerts@localhost>"
# auto: STARTTLS on 587, SSL on 465, plain otherwise; or force starttls, ssl or none.
SMTP_SECURITY = (env.str("SMTP_SECURITY", default="") or "auto").strip().lower()
if SMTP_SECURITY not in ("auto", "starttls", "ssl", "none"):
    raise environ.ImproperlyConfigured(
        f"SMTP_SECURITY={SMTP_SECURITY!r}: use auto, starttls, ssl or none"
    )
SMTP_TIMEOUT = env.int("SMTP_TIMEOUT", default=10)
# Django's own mail (EMAIL_*) uses the same server.
EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = SMTP_HOST or "localhost"
EMAIL_PORT = SMTP_PORT
EMAIL_HOST_USER = SMTP_USER
EMAIL_HOST_PASSWORD = SMTP_PASS
EMAIL_USE_TLS = SMTP_SECURITY == "starttls" or (SMTP_SECURITY == "auto" and SMTP_PORT == 587)
EMAIL_USE_SSL = SMTP_SECURITY == "ssl" or (SMTP_SECURITY == "auto" and SMTP_PORT == 465)
EMAIL_TIMEOUT = SMTP_TIMEOUT
DEFAULT_FROM_EMAIL = SERVER_EMAIL = SMTP_FROM
SLACK_BOT_TOKEN = env.str("SLACK_BOT_TOKEN", default="")
SLACK_CHANNEL_ALERTS = env.str("SLACK_CHANNEL_ALERTS", default="")
SLACK_CHANNEL_AI_COSTS = env.str("SLACK_CHANNEL_AI_COSTS", default="")  # budget alerts, if set
SLACK_WEBHOOK_URL = env.str("SLACK_WEBHOOK_URL", default="")
SLACK_API_URL = env.str("SLACK_API_URL", default="") or "https://slack.com/api/"
SLACK_TIMEOUT = env.int("SLACK_TIMEOUT", default=10)
# Links in alerts point at SITE_URL/admin/dashboard/.
SITE_URL = env.str("SITE_URL", default="") or "http://127.0.0.1:8000"
# Failed channels are retried with exponential backoff (base, cap) up to ALERT_MAX_ATTEMPTS.
ALERT_MAX_ATTEMPTS = env.int("ALERT_MAX_ATTEMPTS", default=8)
ALERT_RETRY_BASE_SECONDS = env.int("ALERT_RETRY_BASE_SECONDS", default=60)
ALERT_RETRY_MAX_SECONDS = env.int("ALERT_RETRY_MAX_SECONDS", default=3600)
ALERT_SWEEP_BATCH_SIZE = env.int("ALERT_SWEEP_BATCH_SIZE", default=100)
# Health rules checked by beat every minute (enrichment.health_check); 0 turns a rule off.
ALERT_PENDING_THRESHOLD = env.int("ALERT_PENDING_THRESHOLD", default=100)
ALERT_FAILED_TODAY_THRESHOLD = env.int("ALERT_FAILED_TODAY_THRESHOLD", default=10)
ALERT_BUDGET_BREAKER_OPEN_MINUTES = env.int("ALERT_BUDGET_BREAKER_OPEN_MINUTES", default=60)
_rules = (ALERT_PENDING_THRESHOLD, ALERT_FAILED_TODAY_THRESHOLD, ALERT_BUDGET_BREAKER_OPEN_MINUTES)
if min(_rules) < 0:
    raise environ.ImproperlyConfigured("ALERT_* thresholds must not be negative (0 = rule off)")

# --- Metrics ------------------------------------------------------------------------------------
# GET /metrics (Prometheus) requires "Authorization: Bearer <METRICS_TOKEN>" when set. Unset, it is
# served open only where METRICS_OPEN_WITHOUT_TOKEN is on (local settings); production answers 404.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_OPEN_WITHOUT_TOKEN = False

# --- Costs and budget ---------------------------------------------------------------------------
# Money is Decimal (cents, or USD for prices), parsed from text (env_decimal): never a float.
# The hard daily AI budget in US cents; staff can override today's limit at run time.
AI_DAILY_BUDGET_CENTS = env_decimal("AI_DAILY_BUDGET_CENTS", "200")
# Percentages of the budget that raise budget_threshold_crossed (an alert), once per day each.
_thresholds = env.str("AI_BUDGET_ALERT_THRESHOLDS", default="").strip() or "50,75,100"
try:
    AI_BUDGET_ALERT_THRESHOLDS = sorted({int(p) for p in _thresholds.split(",")})
except ValueError:
    AI_BUDGET_ALERT_THRESHOLDS = []
if not AI_BUDGET_ALERT_THRESHOLDS or not all(0 < p <= 1000 for p in AI_BUDGET_ALERT_THRESHOLDS):
    raise environ.ImproperlyConfigured(
        f"AI_BUDGET_ALERT_THRESHOLDS={_thresholds!r}: comma-separated percentages, 1 to 1000"
    )
# A reservation neither settled nor released within this many seconds (a dead worker) is given
# back to the budget.
AI_RESERVATION_TIMEOUT_SECONDS = env_count("AI_RESERVATION_TIMEOUT_SECONDS", 600)
# Provider breaker: opens after this many consecutive failures; after the cool-down one probe call
# goes through; a probe that never reports is replaced after the probe timeout.
AI_PROVIDER_FAILURE_THRESHOLD = max(1, env_count("AI_PROVIDER_FAILURE_THRESHOLD", 5))
AI_PROVIDER_COOLDOWN_SECONDS = env_count("AI_PROVIDER_COOLDOWN_SECONDS", 60)
AI_PROVIDER_PROBE_TIMEOUT_SECONDS = env_count("AI_PROVIDER_PROBE_TIMEOUT_SECONDS", 120)
# Price of a model missing from the price table, in USD per 1M tokens (deliberately not cheap).
AI_FALLBACK_PRICE_INPUT_USD_PER_1M = env_decimal("AI_FALLBACK_PRICE_INPUT_USD_PER_1M", "2.50")
AI_FALLBACK_PRICE_CACHED_INPUT_USD_PER_1M = env_decimal(
    "AI_FALLBACK_PRICE_CACHED_INPUT_USD_PER_1M", "1.25"
)
AI_FALLBACK_PRICE_OUTPUT_USD_PER_1M = env_decimal("AI_FALLBACK_PRICE_OUTPUT_USD_PER_1M", "10.00")
# Per-user daily limits (a user can have their own in the admin); 0 = no limit.
USER_DAILY_MEMORY_LIMIT = env_count("USER_DAILY_MEMORY_LIMIT", 100)
USER_DAILY_ENRICHMENT_LIMIT = env_count("USER_DAILY_ENRICHMENT_LIMIT", 100)
USER_DAILY_COST_CENTS = env_decimal("USER_DAILY_COST_CENTS", "0")
# Names of the breaker-state enums in the OpenAPI schema (several fields share them).
SPECTACULAR_SETTINGS.setdefault("ENUM_NAME_OVERRIDES", {}).update(
    {
        "BudgetBreakerStateEnum": ["closed", "open"],
        "ProviderBreakerStateEnum": ["closed", "open", "half_open"],
    }
)

# --- Celery -------------------------------------------------------------------------------------
# Broker: CELERY_BROKER_URL, else REDIS_URL, else kombu's filesystem transport under var/ (the
# embedded default: a real broker that needs no server).
CELERY_BROKER_URL = (
    env.str("CELERY_BROKER_URL", default="") or REDIS_URL or "filesystem://localhost/"
)
_BROKER_DIR = BASE_DIR / "var" / "broker"
# Publishing while the broker is down fails in well under a second (the job waits for the sweep)
# instead of holding the API request for kombu's default 2 s retry.
BROKER_PUBLISH_RETRY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.1,
    "interval_max": 0.2,
}
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {
        "data_folder_in": str(_BROKER_DIR),
        "data_folder_out": str(_BROKER_DIR),
        "processed_folder": str(BASE_DIR / "var" / "broker-processed"),
        "control_folder": str(BASE_DIR / "var" / "broker-control"),
        "store_processed": False,
    }
    if CELERY_BROKER_URL.startswith("filesystem")
    else {"visibility_timeout": 3600, **BROKER_PUBLISH_RETRY}
)
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TIMEZONE = "UTC"
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ACKS_LATE = True
# Workers keep their database connection across tasks: Celery's Django fixup would close it
# around every task. It is checked before each task (memoryconnector.celery) and replaced when
# broken or older than DATABASE_CONN_MAX_AGE; Celery closes it anyway every this many tasks.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=300)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=240)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Publishing must not hang a web request when the broker is down: fail fast, the sweep recovers.
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TASK_PUBLISH_RETRY = False
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = False
# Named queues (enrichment.services.Queue); a worker consumes all of them unless told -Q.
CELERY_TASK_DEFAULT_QUEUE = "maintenance"
CELERY_TASK_QUEUES = {"enrichment": {}, "maintenance": {}}
CELERY_TASK_ROUTES = {
    "enrichment.process_job": {"queue": "enrichment"},
    "enrichment.health_check": {"queue": "maintenance"},
    "alerting.*": {"queue": "maintenance"},
    "sync.*": {"queue": "maintenance"},
}
# The one beat schedule. Every entry expires, so a stalled beat or worker never piles them up.
CELERY_BEAT_SCHEDULE = {
    # Dispatch due and deferred jobs, re-queue expired leases, release stale reservations.
    "enrichment-sweep": {
        "task": "enrichment.sweep",
        "schedule": ENRICHMENT_POLL_INTERVAL_MS / 1000,
        "options": {"expires": max(1.0, ENRICHMENT_POLL_INTERVAL_MS / 1000)},
    },
    # Health rules -> alerts: budget breaker open too long, provider breaker, queue thresholds,
    # no worker heartbeat, recoveries (enrichment.monitoring).
    "enrichment-health-check": {
        "task": "enrichment.health_check",
        "schedule": 60.0,
        "options": {"expires": 60.0},
    },
    # Deliver alerts that are due again: failed channels after their backoff, enqueues lost to a
    # broker outage, deliveries of a worker that died.
    "alerts-retry-undelivered": {
        "task": "alerting.alerts_retry_undelivered",
        "schedule": 60.0,
        "options": {"expires": 60.0},
    },
    # After a change of embedding model or EMBEDDING_DIMENSIONS: re-embed a batch of memories
    # made by the old one, through the budget, only while no enrichment job waits or runs.
    # With OPENAI_BATCH_REEMBED the Batch API does it instead (enrichment-batch-api-poll).
    **(
        {}
        if OPENAI_BATCH_REEMBED
        else {
            "enrichment-reembed": {
                "task": "enrichment.reembed",
                "schedule": 30.0,
                "options": {"expires": 30.0},
            }
        }
    ),
    # The Batch API: poll open batches, apply and settle the results of ended ones, release the
    # holds of failed, expired or cancelled ones; with OPENAI_BATCH_REEMBED, submit the next
    # re-embedding batch when none is open (enrichment.batch_api).
    "enrichment-batch-api-poll": {
        "task": "enrichment.batch_api_poll",
        "schedule": float(OPENAI_BATCH_POLL_SECONDS),
        "options": {"expires": float(OPENAI_BATCH_POLL_SECONDS)},
    },
    # Delete Idempotency-Keys past IDEMPOTENCY_KEY_TTL_HOURS, so the table holds about a day of
    # keys instead of growing for ever. Hourly: a key outlives its TTL by at most an hour.
    "idempotency-keys-purge": {
        "task": "memories.idempotency_keys_purge",
        "schedule": 3600.0,
        "options": {"expires": 3600.0},
    },
    # Delete memories tombstoned more than SYNC_TOMBSTONE_DAYS ago (sync.services).
    "sync-tombstones-purge": {
        "task": "sync.tombstones_purge",
        "schedule": 3600.0,
        "options": {"expires": 3600.0},
    },
}

# --- Logging ------------------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_FORMAT = env.str("LOG_FORMAT", default="text")  # "json" in production

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "redact": {"()": "common.logging.RedactSecretsFilter"},
        "cache_outage": {"()": "common.logging.CacheOutageFilter"},
    },
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": ["asctime", "levelname", "name", "message"],
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["redact"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Our request log replaces Django's own per-request lines.
        "django.request": {"level": "ERROR"},
        "django.server": {"level": "WARNING"},
        # Cache errors django-redis ignored (Redis down): throttles fail open, one line each.
        DJANGO_REDIS_LOGGER: {"filters": ["cache_outage"]},
    },
}
