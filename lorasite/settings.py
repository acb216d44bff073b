"""Settings for every run mode; the environment alone chooses embedded or production."""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from lorasite.env import env_bool, env_int, env_list, env_str, env_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("LORASITE_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY")
DATABASE_URL = env_str("DATABASE_URL")
REDIS_URL = env_str("REDIS_URL")
RABBITMQ_URL = env_str("RABBITMQ_URL")

# Embedded mode (no DATABASE_URL) is a single-user laptop install: a generated key kept under var/
# is fine there. Production must bring its own key.
if not SECRET_KEY:
    if DATABASE_URL:
        raise ImproperlyConfigured("SECRET_KEY must be set when DATABASE_URL is set (production mode)")
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        import secrets

        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    SECRET_KEY = key_file.read_text().strip()

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    # Only for its packaged Swagger UI assets: /api/docs then loads them from our static files,
    # so the docs work offline and no CDN sees who reads them.
    "ninja",
    "lorasite.core.apps.CoreConfig",
    "lorasite.accounts.apps.AccountsConfig",
    "datasets_app.apps.DatasetsConfig",
    "training_app.apps.TrainingConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "lorasite.core.middleware.SecurityHeaders",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "lorasite.core.middleware.RejectNulCharacters",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "lorasite.urls"
ASGI_APPLICATION = "lorasite.asgi.application"
WSGI_APPLICATION = None

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
                "lorasite.accounts.context.teams",
            ],
        },
    },
]

# Under ASGI every request runs in a thread of its own, so persistent connections (conn_max_age > 0)
# pile up, one per thread, until Postgres refuses clients. Postgres gets psycopg's pool instead:
# at most DATABASE_POOL_SIZE connections per process (0: open and close one per request).
DATABASE_POOL_SIZE = env_int("DATABASE_POOL_SIZE", 8, minimum=0)
# How long a request waits for a pooled connection: through a burst, a connection frees up in well
# under a second; through an outage none comes, and the request answers 503 (Retry-After) after this.
DATABASE_POOL_TIMEOUT = env_int("DATABASE_POOL_TIMEOUT", 10, minimum=1)
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
    if DATABASES["default"]["ENGINE"].endswith("postgresql") and DATABASE_POOL_SIZE:
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1, "max_size": DATABASE_POOL_SIZE, "timeout": DATABASE_POOL_TIMEOUT, "max_idle": 60,
        }
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "lorasite.sqlite3",
            # Worker threads and web requests share the file: wait for locks instead of failing.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"},
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LOGIN_URL = "login"
# Failed sign-ins (password or API token) per address, and per username for passwords, per minute.
AUTH_FAILURES_PER_MINUTE = env_int("AUTH_FAILURES_PER_MINUTE", 10, minimum=1)
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "static")))
# Front-end libraries come pinned from package.json through `npm ci`; nothing vendored is committed.
STATICFILES_DIRS = [
    BASE_DIR / "static",
    ("vendor/htmx", BASE_DIR / "node_modules" / "htmx.org" / "dist"),
    ("vendor/uplot", BASE_DIR / "node_modules" / "uplot" / "dist"),
]
SERVE_STATIC = env_bool("SERVE_STATIC", not DATABASE_URL)

MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "/media/"
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 10 * 1024 * 1024, minimum=1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 4 * 1024 * 1024

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
X_FRAME_OPTIONS = "DENY"
# Only our own scripts run: no inline script or event handler, no other origin (lorasite.core.middleware
# SecurityHeaders sends it on every response). Styles may be inline (progress widths, uPlot, htmx).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# Behind a TLS-terminating proxy: trust its X-Forwarded-Proto, and ask browsers to stay on HTTPS.
if env_bool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)

# Broker: chosen in lorasite/broker.py from the same variables; kept here for /healthz and docs.
LORASITE_BROKER = env_str("LORASITE_BROKER", "redis" if REDIS_URL else "rabbitmq" if RABBITMQ_URL else "stub")
EMBEDDED_WORKER_THREADS = env_int("EMBEDDED_WORKER_THREADS", 2, minimum=1)
WORKER_CHECKIN_SECONDS = env_int("WORKER_CHECKIN_SECONDS", 15, minimum=1)

# Training jobs
LORASITE_MODELS_DIR = Path(env_str("LORASITE_MODELS_DIR", str(VAR_DIR / "models")))
JOB_HEARTBEAT_SECONDS = env_int("JOB_HEARTBEAT_SECONDS", 10, minimum=1)
JOB_STALE_AFTER_SECONDS = env_int("JOB_STALE_AFTER_SECONDS", 120, minimum=2)
JOB_MAX_ATTEMPTS = env_int("JOB_MAX_ATTEMPTS", 3, minimum=1)
# A retryable backend error (a remote server down, a rate limit) waits this long, doubling per attempt.
JOB_RETRY_BACKOFF_SECONDS = env_int("JOB_RETRY_BACKOFF_SECONDS", 10, minimum=1)
# How often workers look for lost job messages, and how old a sent message must be before the
# broker is asked whether it still holds it (Redis and the embedded broker can say; RabbitMQ cannot,
# so there a queued job is re-sent only after JOB_REDISPATCH_AFTER_SECONDS).
JOB_RECONCILE_SECONDS = env_int("JOB_RECONCILE_SECONDS", 3, minimum=1)
JOB_RECONCILE_GRACE_SECONDS = env_int("JOB_RECONCILE_GRACE_SECONDS", 5, minimum=0)
JOB_REDISPATCH_AFTER_SECONDS = env_int("JOB_REDISPATCH_AFTER_SECONDS", 300, minimum=1)
# Every job checkpoints at least this often (wall time), whatever its preset's save_every_n_steps.
JOB_CHECKPOINT_SECONDS = env_int("JOB_CHECKPOINT_SECONDS", 300, minimum=1)
JOB_TIME_LIMIT_HOURS = env_int("JOB_TIME_LIMIT_HOURS", 48, minimum=1)
# Auto-captioning: local models live in folders under CAPTION_MODELS_DIR (a team's provider names
# one); CLIP_TOKENIZER_DIR, a real CLIP tokenizer folder (e.g. an SD model's tokenizer/), makes the
# caption token counts exact (see docs/captioning.md).
CAPTION_MODELS_DIR = Path(env_str("CAPTION_MODELS_DIR", str(LORASITE_MODELS_DIR / "captioners")))
CAPTION_TORCH_THREADS = env_int("CAPTION_TORCH_THREADS", 2, minimum=1)
CLIP_TOKENIZER_DIR = env_str("CLIP_TOKENIZER_DIR", "")
# Team providers may target private/loopback addresses (a LAN Ollama or vLLM) only if allowed;
# embedded mode (a laptop) allows them by default. Providers without a team are the operator's.
CAPTION_ALLOW_PRIVATE_URLS = env_bool("CAPTION_ALLOW_PRIVATE_URLS", not DATABASE_URL)
# A running caption run whose worker has not written a heartbeat for this long is re-sent.
CAPTION_RUN_STALE_SECONDS = env_int("CAPTION_RUN_STALE_SECONDS", 60, minimum=2)
# Team webhooks may not target loopback/private addresses unless the operator allows it.
WEBHOOKS_ALLOW_PRIVATE = env_bool("WEBHOOKS_ALLOW_PRIVATE", False)
# The portal's public address (https://lora.example.com). Set, remote backends that can call back
# (Replicate) are given webhook URLs under it instead of being polled quickly.
SITE_URL = env_url("SITE_URL")

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # Progress streams are bounded and snapshot-able, but give slow consumers some slack.
            # redis-py 8 reads with a 5 s socket timeout by default, the same as channels-redis' 5 s
            # BZPOPMIN: the two race and the read times out, killing the consumer. Read longer.
            # redis-py's pool also refuses (instead of waiting) past 100 connections, which a burst of
            # disconnecting websockets exceeds, leaving dead channels in groups.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 30, "max_connections": 1000}],
                       "capacity": 1000, "expiry": 30,
                       "prefix": env_str("CHANNEL_LAYER_PREFIX", "asgi")},
        }
    }
    # Shared counters (sign-in throttling) must be seen by every process.
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                          "KEY_PREFIX": env_str("CHANNEL_LAYER_PREFIX", "asgi")}}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "filters": {"client_mistake": {"()": "lorasite.core.logfilters.ClientMistakeAsWarning"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"},
                 "client_mistakes": {"class": "logging.StreamHandler", "formatter": "plain",
                                     "filters": ["client_mistake"]}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # dramatiq's INFO lines (worker boot and shutdown) are noise in `serve` and `train`.
    "loggers": {"daphne": {"level": "WARNING"}, "django.channels.server": {"level": "WARNING"},
                "dramatiq": {"level": env_str("DRAMATIQ_LOG_LEVEL", "WARNING")},
                **{f"django.security.{name}": {"handlers": ["client_mistakes"], "propagate": False}
                   for name in ("RequestDataTooBig", "TooManyFieldsSent", "TooManyFilesSent",
                                "SuspiciousFileOperation")}},
}

# Datasets: upload limits (see docs/datasets.md). The pixel limit guards against decompression bombs:
# it is checked from the image header before any pixel is decoded.
DATASET_MAX_FILE_BYTES = env_int("DATASET_MAX_FILE_BYTES", 50 * 1024 * 1024, minimum=1)
DATASET_MAX_IMAGE_PIXELS = env_int("DATASET_MAX_IMAGE_PIXELS", 64_000_000, minimum=1)
# Pixels one process decodes at once over all uploads (~4 bytes each, twice while rotating): the
# memory ceiling of ingest is about 8 bytes × this, whatever the number of parallel uploads.
DATASET_DECODE_BUDGET_PIXELS = env_int("DATASET_DECODE_BUDGET_PIXELS", 64_000_000, minimum=1)
DATASET_MAX_ARCHIVE_BYTES = env_int("DATASET_MAX_ARCHIVE_BYTES", 1024 * 1024 * 1024, minimum=1)
DATASET_MAX_ARCHIVE_MEMBERS = env_int("DATASET_MAX_ARCHIVE_MEMBERS", 10_000, minimum=1)
DATASET_MAX_ARCHIVE_TOTAL_BYTES = env_int("DATASET_MAX_ARCHIVE_TOTAL_BYTES", 4 * 1024 * 1024 * 1024, minimum=1)
DATASET_MAX_MEMBER_RATIO = env_int("DATASET_MAX_MEMBER_RATIO", 200, minimum=1)
# Near-duplicates (datasets_app/near_duplicates.py): the share of strong edges left unmatched, and of
# colour cells changed, that two images may have and still be flagged as near-duplicates.
DATASET_NEAR_DUPLICATE_EDGE_PERCENT = env_int("DATASET_NEAR_DUPLICATE_EDGE_PERCENT", 8, minimum=0)
DATASET_NEAR_DUPLICATE_COLOUR_PERCENT = env_int("DATASET_NEAR_DUPLICATE_COLOUR_PERCENT", 15, minimum=0)
if env_str("DATASET_NEAR_DUPLICATE_DISTANCE"):
    # It counted bits of the 64-bit hash that was replaced; silently ignoring it would hide that.
    raise ImproperlyConfigured("DATASET_NEAR_DUPLICATE_DISTANCE is no longer used: near-duplicates are now tuned "
                               "with DATASET_NEAR_DUPLICATE_EDGE_PERCENT and DATASET_NEAR_DUPLICATE_COLOUR_PERCENT "
                               "(see docs/datasets.md)")
