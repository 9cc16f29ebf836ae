"""The one settings module: every value comes from the environment, with a working default."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import dj_database_url
import django_stubs_ext
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

# Lets admin and queryset classes be subscripted at run time (ModelAdmin[Plan]).
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("TF_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def envbool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def envint(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}") from exc


def envstr(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envlist(name: str, default: str = "") -> list[str]:
    return [part.strip() for part in os.environ.get(name, default).split(",") if part.strip()]


DEBUG = envbool("DEBUG", True)


def _secret_key() -> str:
    key = os.environ.get("SECRET_KEY", "")
    if key:
        return key
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. With DEBUG off the server will not start without one: "
            "set SECRET_KEY to a long random string (for example the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`)."
        )
    # Development: generate once and keep it under var/ so sessions survive restarts.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
# Fernet keys (comma-separated) that encrypt upstream API keys at rest (gateway/crypto.py): the
# first encrypts, all decrypt. Empty: one derived from SECRET_KEY (the embedded mode's default).
TOKENFACTORY_SECRET_KEYS = envlist("TOKENFACTORY_SECRET_KEYS")
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS")
SITE_URL = envstr("SITE_URL", "http://127.0.0.1:8000").rstrip("/")
SITE_NAME = "Token Factory"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "ninja",
    "django_ratelimit",
    "channels",
    "axes",
    "accounts",
    "billing",
    "gateway",
    # Single sign-on (OpenID Connect): allauth's socialaccount needs its account app; our own
    # log-in, sign-up and password pages stay ours, only /accounts/oidc/... is allauth's.
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
]

MIDDLEWARE = [
    # Static files are served by WhiteNoise in tokenfactory/handlers.py, outside this chain.
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Who acts and from where, for audit events recorded while serving the request.
    "accounts.audit.AuditMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # A throttled sign-up or reset (django-ratelimit) gets RATELIMIT_VIEW's 429 page.
    "django_ratelimit.middleware.RatelimitMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    # Last, as django-axes asks: turns a locked-out log-in into its 429 page.
    "axes.middleware.AxesMiddleware",
]

# django-axes counts failed log-ins (the dashboard's and the admin's) by account and, separately,
# by client address; past the limit that account or address is refused for the cool-off time,
# even with the right password. `manage.py axes_reset` lifts every lock.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = envint("LOGIN_FAILURE_LIMIT", 10)
AXES_COOLOFF_TIME = envint("LOGIN_LOCKOUT_MINUTES", 15) / 60  # hours
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_USERNAME_CALLABLE = "accounts.throttle.login_username"
AXES_CLIENT_IP_CALLABLE = "accounts.throttle.client_address"
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
# Sign-ups and password-reset mails per client address, and reset mails per address (more are
# silently not sent): "count/period" with period s, m, h or d (django-ratelimit's syntax).
# The plan accounts that sign themselves up start on (a slug or name); empty: the default plan.
SIGNUP_PLAN = envstr("SIGNUP_PLAN")
SIGNUP_RATE_PER_CLIENT = envstr("SIGNUP_RATE_PER_CLIENT", "5/h")
PASSWORD_RESET_RATE_PER_CLIENT = envstr("PASSWORD_RESET_RATE_PER_CLIENT", "10/h")
PASSWORD_RESET_RATE_PER_EMAIL = envstr("PASSWORD_RESET_RATE_PER_EMAIL", "3/h")
RATELIMIT_VIEW = "accounts.throttle.too_many"

ROOT_URLCONF = "tokenfactory.urls"
ASGI_APPLICATION = "tokenfactory.asgi.application"
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "landing"

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
                "tokenfactory.context_processors.site",
                "accounts.context_processors.organisations",
            ],
        },
    },
]

DATABASES: dict[str, Any] = {
    "default": dj_database_url.parse(
        envstr("DATABASE_URL", f"sqlite:///{VAR_DIR / 'tokenfactory.sqlite3'}"),
        conn_max_age=envint("DB_CONN_MAX_AGE", 0),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and a busy timeout let the simulator, the server and Celery's eager tasks share the file.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = envstr("REDIS_URL")
CACHES: dict[str, dict[str, Any]]
if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    # The cache holds the live meters' watcher counts: state, not copies, so nothing may be
    # culled (LocMemCache's default drops a third of its entries past 300).
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "OPTIONS": {"MAX_ENTRIES": 10_000_000},
        }
    }
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    # Without Redis the sign-up and reset throttles count per process (one process: exact).
    SILENCED_SYSTEM_CHECKS = ["django_ratelimit.E003", "django_ratelimit.W001"]

CELERY_BROKER_URL = envstr("CELERY_BROKER_URL")
CELERY_RESULT_BACKEND = envstr("CELERY_RESULT_BACKEND") or None
# No broker: tasks run in the calling process, so one command runs the whole platform.
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = "UTC"

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

STATIC_URL = "/static/"
STATIC_ROOT = Path(envstr("STATIC_ROOT", str(VAR_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
MEDIA_ROOT = Path(envstr("MEDIA_ROOT", str(VAR_DIR / "media")))
WHITENOISE_USE_FINDERS = DEBUG

EMAIL_BACKEND = envstr("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = envstr("DEFAULT_FROM_EMAIL", "Token Factory <noreply@localhost>")
if envstr("EMAIL_HOST"):
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_HOST = envstr("EMAIL_HOST")
    EMAIL_PORT = envint("EMAIL_PORT", 587)
    EMAIL_HOST_USER = envstr("EMAIL_HOST_USER")
    EMAIL_HOST_PASSWORD = envstr("EMAIL_HOST_PASSWORD")
    EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", True)

# Production hardening switches on with DEBUG off; SECURE_SSL_REDIRECT stays an explicit choice
# because TLS usually ends at the load balancer.
# Behind a proxy the client's address is the last one in X-Forwarded-For (the one the proxy
# added); otherwise the socket's peer.
BEHIND_PROXY = envbool("BEHIND_PROXY", False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if BEHIND_PROXY else None
# Cookies only over HTTPS; scripts/run (plain HTTP on this machine) sets SECURE_COOKIES=false.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = envbool("SECURE_COOKIES", not DEBUG)
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# The pages' Content-Security-Policy (django-csp): scripts and styles from our own static files
# only (Chart.js is vendored), plus the one inline script in base.html by its per-request nonce;
# style="" attributes are allowed (not <style> elements); the live meter's websocket is 'self'.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF],
        "style-src-attr": ["'unsafe-inline'"],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "frame-ancestors": [NONE],
    }
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "accounts.api.ManagementKeyAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "accounts.api.exception_handler",
    "UNAUTHENTICATED_USER": None,
}

LOG_LEVEL = envstr("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "tokenfactory.logs.JsonFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's own default config gives "django" a plain-text console handler under DEBUG:
        # every 4xx/5xx would be printed twice (once plain, once as JSON through the root).
        "django": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
        "django.db.backends": {"level": "WARNING"},
    },
}

# --- Token Factory ---------------------------------------------------------------------------
# Requests larger than this are refused with 413 before they are parsed.
GATEWAY_MAX_BODY_BYTES = envint("GATEWAY_MAX_BODY_BYTES", 32 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = GATEWAY_MAX_BODY_BYTES
# A request's headers must arrive within this many seconds of the connection (or of the request
# before it), and its whole body within this many of the first read: otherwise 408 / closed.
HTTP_HEADER_TIMEOUT_SECONDS = envint("HTTP_HEADER_TIMEOUT_SECONDS", 10)
HTTP_BODY_TIMEOUT_SECONDS = envint("HTTP_BODY_TIMEOUT_SECONDS", 60)
GATEWAY_KEY_CACHE_SECONDS = envint("GATEWAY_KEY_CACHE_SECONDS", 30)
GATEWAY_CATALOG_CACHE_SECONDS = envint("GATEWAY_CATALOG_CACHE_SECONDS", 30)
GATEWAY_CONNECT_TIMEOUT_MS = envint("GATEWAY_CONNECT_TIMEOUT_MS", 5_000)
GATEWAY_FIRST_BYTE_TIMEOUT_MS = envint("GATEWAY_FIRST_BYTE_TIMEOUT_MS", 60_000)
GATEWAY_TOTAL_TIMEOUT_MS = envint("GATEWAY_TOTAL_TIMEOUT_MS", 600_000)
GATEWAY_MAX_ATTEMPTS = envint("GATEWAY_MAX_ATTEMPTS", 3)
# When Redis cannot be reached at admission: "closed" answers 503 (limits are unavailable),
# "open" admits on this process's own counters until Redis is back.
GATEWAY_REDIS_DOWN = envstr("GATEWAY_REDIS_DOWN", "closed")
if GATEWAY_REDIS_DOWN not in ("closed", "open"):
    raise ImproperlyConfigured(
        f"GATEWAY_REDIS_DOWN must be closed or open, not {GATEWAY_REDIS_DOWN!r}"
    )
SIMULATOR_HOST = envstr("SIMULATOR_HOST", "127.0.0.1")
SIMULATOR_PORT = envint("SIMULATOR_PORT", 9100)
SIMULATOR_URL = envstr("SIMULATOR_URL", f"http://{SIMULATOR_HOST}:{SIMULATOR_PORT}")
KEY_ROTATION_GRACE_HOURS = envint("KEY_ROTATION_GRACE_HOURS", 24)
# How long an e-mailed invitation to join an organisation works (accounts.members).
INVITATION_DAYS = envint("INVITATION_DAYS", 7)
# Batches: lines in flight per batch, how long a runner's lease lasts without a heartbeat
# (then another worker takes the batch over), and the largest input file.
BATCH_CONCURRENCY = envint("BATCH_CONCURRENCY", 8)
BATCH_LEASE_SECONDS = envint("BATCH_LEASE_SECONDS", 30)
BATCH_MAX_FILE_BYTES = envint("BATCH_MAX_FILE_BYTES", 200 * 1024 * 1024)
# Raw usage records older than this are deleted, but only once they are in the rollups.
USAGE_RETENTION_DAYS = envint("USAGE_RETENTION_DAYS", 90)
# Days a paid plan stays on after a failed payment before the account falls back to Test.
BILLING_GRACE_DAYS = envint("BILLING_GRACE_DAYS", 7)
# Gateway processes drain the usage buffer themselves unless Celery workers do (a broker is set).
METERING_DRAIN_IN_PROCESS = envbool("METERING_DRAIN_IN_PROCESS", not CELERY_BROKER_URL)
METERING_FLUSH_INTERVAL_MS = envint("METERING_FLUSH_INTERVAL_MS", 500)
# Embedded mode (no Redis): how old a process's in-memory copy of a prepaid balance may get before
# admission reloads it from the database, so a credit made by another process (a shell, a
# management command) is seen within this bound.
GATEWAY_BALANCE_RELOAD_MS = envint("GATEWAY_BALANCE_RELOAD_MS", 10_000)

# GET /metrics (Prometheus) demands "Authorization: Bearer <this>" when set; unset, it is served
# only to loopback and private-network addresses.
METRICS_TOKEN = envstr("METRICS_TOKEN")

STRIPE_SECRET_KEY = envstr("STRIPE_SECRET_KEY")
STRIPE_PUBLISHABLE_KEY = envstr("STRIPE_PUBLISHABLE_KEY")
STRIPE_WEBHOOK_SECRET = envstr("STRIPE_WEBHOOK_SECRET")
STRIPE_API_BASE = envstr("STRIPE_API_BASE")


# --- Single sign-on (OpenID Connect, django-allauth) -------------------------------------------
def oidc_providers(raw: str) -> list[dict[str, Any]]:
    """OIDC_PROVIDERS, a JSON list of {"id", "name", "server_url", "client_id", "secret"}, as
    allauth's openid_connect APPS. Providers an operator adds in the admin (Social applications,
    provider "openid_connect") are offered as well."""
    if not raw.strip():
        return []
    try:
        entries = json.loads(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"OIDC_PROVIDERS is not valid JSON: {exc}") from exc
    if not isinstance(entries, list):
        raise ImproperlyConfigured("OIDC_PROVIDERS must be a JSON list of providers")
    apps = []
    for entry in entries:
        missing = [
            field
            for field in ("id", "name", "server_url", "client_id")
            if not isinstance(entry, dict) or not entry.get(field)
        ]
        if missing:
            raise ImproperlyConfigured(
                f"every entry of OIDC_PROVIDERS needs id, name, server_url and client_id "
                f"(and usually secret); {entry!r} lacks {', '.join(missing)}"
            )
        apps.append(
            {
                "provider_id": str(entry["id"]),
                "name": str(entry["name"]),
                "client_id": str(entry["client_id"]),
                "secret": str(entry.get("secret", "")),
                "settings": {"server_url": str(entry["server_url"]).rstrip("/")},
            }
        )
    return apps


SOCIALACCOUNT_PROVIDERS: dict[str, dict[str, Any]] = {
    "openid_connect": {"APPS": oidc_providers(envstr("OIDC_PROVIDERS")), "OAUTH_PKCE_ENABLED": True}
}
# People log in by e-mail (no usernames); allauth only ever signs people up through a provider.
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*"]
ACCOUNT_EMAIL_VERIFICATION = "none"
ACCOUNT_ADAPTER = "accounts.sso_adapter.AccountAdapter"
SOCIALACCOUNT_ADAPTER = "accounts.sso_adapter.SocialAccountAdapter"
SOCIALACCOUNT_AUTO_SIGNUP = True
SOCIALACCOUNT_EMAIL_REQUIRED = True
SOCIALACCOUNT_LOGIN_ON_GET = False
SOCIALACCOUNT_STORE_TOKENS = False
# A first SSO log-in for an address that already has an account links to it, but only when the
# provider marks the address verified (allauth only matches verified addresses).
SOCIALACCOUNT_EMAIL_AUTHENTICATION = True
SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT = True
# Domain verification looks up TXT records through these resolvers (comma-separated, ip or
# ip:port); empty: the system's.
DOMAIN_VERIFICATION_NAMESERVERS = envlist("DOMAIN_VERIFICATION_NAMESERVERS")
