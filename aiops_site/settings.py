"""All settings, read from the environment through the strict helpers in `aiops_site.env`.

With no DATABASE_URL / REDIS_URL, the embedded PostgreSQL and Redis under AIOPS_RUN_DIR
(default `.run/`) are used; `make run` and `make test` start them. See the README's
configuration table for every variable.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import dj_database_url

from aiops_site.embedded import APP_ROLE, DB_NAME, pg_socket_dir, read_redis_port
from aiops_site.env import (
    EnvError,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_str,
    run_secret,
)
from aiops_site.queues import task_queues

BASE_DIR = Path(__file__).resolve().parent.parent
RUN_DIR = Path(env_str("AIOPS_RUN_DIR", str(BASE_DIR / ".run"))).resolve()

# --- Data stores -------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL")
EMBEDDED_DATABASE = not DATABASE_URL
if EMBEDDED_DATABASE:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": DB_NAME,
            # The app role by default; `make run` migrates as the owner role and `make test` runs
            # as the superuser (pytest-django creates and flushes the test database).
            "USER": env_str("AIOPS_DB_USER", APP_ROLE),
            "HOST": str(pg_socket_dir(RUN_DIR)),
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
        }
    }
else:
    try:
        DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
    except Exception as exc:  # dj_database_url raises bare ValueError/KeyError on junk
        raise EnvError(f"DATABASE_URL={DATABASE_URL!r} is not a database URL: {exc}") from None
    if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        raise EnvError(f"DATABASE_URL={DATABASE_URL!r} must name a PostgreSQL database (postgres://...)")

# A database host that does not answer must not hold a request (or a worker) past this: the
# request gets 503 + Retry-After instead (aiops_site/outage.py). A URL's own ?connect_timeout= wins.
DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
    "connect_timeout", env_int("AIOPS_DB_CONNECT_TIMEOUT", 5, minimum=1, maximum=300))

# Migrations (`make run`, the image's migrate role) run as the schema's owner with this URL
# when it is given; everything else uses DATABASE_URL, the app role.
AIOPS_MIGRATE_DATABASE_URL = env_str("AIOPS_MIGRATE_DATABASE_URL")
# The role web, workers and beat connect as: after each `migrate` it is granted row access and
# nothing more (agents/db_roles.py). Empty: grant nothing (one role does everything).
AIOPS_DB_APP_ROLE = env_str("AIOPS_DB_APP_ROLE", APP_ROLE if EMBEDDED_DATABASE else "")

REDIS_URL = env_str("REDIS_URL")
EMBEDDED_REDIS = not REDIS_URL
if EMBEDDED_REDIS:
    # Before the embedded Redis has ever started there is no port yet; 0 fails fast and clearly.
    REDIS_URL = f"redis://127.0.0.1:{read_redis_port(RUN_DIR) or 0}/0"
elif not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise EnvError(f"REDIS_URL={REDIS_URL!r} must start with redis://, rediss:// or unix://")

# --- Security ----------------------------------------------------------------------------
SECRET_KEY = env_str("AIOPS_SECRET_KEY")
if not SECRET_KEY:
    if not EMBEDDED_DATABASE:
        raise EnvError("AIOPS_SECRET_KEY is required when DATABASE_URL names a database (it signs sessions)")
    SECRET_KEY = run_secret(RUN_DIR, "secret_key", nbytes=50)
DEBUG = env_bool("AIOPS_DEBUG", False)
ALLOWED_HOSTS = env_list("AIOPS_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("AIOPS_CSRF_TRUSTED_ORIGINS", [])
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("AIOPS_SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
if env_bool("AIOPS_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Secure cookies mean the site is served over HTTPS: browsers are told to use nothing else
# (Django's SecurityMiddleware sends it on HTTPS responses only).
SECURE_HSTS_SECONDS = env_int("AIOPS_HSTS_SECONDS", 31_536_000, minimum=0) if SESSION_COOKIE_SECURE else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("AIOPS_HSTS_INCLUDE_SUBDOMAINS", False)
# Content-Security-Policy (django-csp): our own scripts only -- no inline script, no eval; the
# console's htmx and the admin load theirs from /static/. Inline styles stay allowed (the admin
# and htmx's indicator set style attributes); nothing may frame us.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
        "object-src": ["'none'"],
    }
}
# Login throttling (django-axes): after AIOPS_LOGIN_FAILURE_LIMIT wrong passwords for one user
# name from one address, that pair is locked out for AIOPS_LOGIN_COOLOFF_MINUTES (429); every
# lockout is an AuditEntry (agents/access.py). A success resets the count.
AXES_FAILURE_LIMIT = env_int("AIOPS_LOGIN_FAILURE_LIMIT", 5, minimum=1, maximum=1000)
AXES_COOLOFF_TIME = timedelta(minutes=env_float("AIOPS_LOGIN_COOLOFF_MINUTES", 15.0, minimum=0.1, maximum=10_080.0))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "console/locked_out.html"
AXES_VERBOSE = False
AXES_USERNAME_CALLABLE = "agents.access.axes_username"
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out pair before any password check
    "django.contrib.auth.backends.ModelBackend",
]

# --- Django ------------------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_prometheus",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served from here (the CSP allows only 'self')
    "django_celery_beat",
    "django_htmx",
    "axes",
    "k8s",
    "agents",
    "playbooks",
    "channels",
    "api",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "aiops_site.observability.RequestIdMiddleware",
    # PostgreSQL, Redis or the broker down -> 503 + Retry-After, so senders retry (aiops_site/outage.py).
    "aiops_site.outage.DependencyOutageMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django_htmx.middleware.HtmxMiddleware",  # request.htmx: the console's partial updates
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks: turns a lockout into its 429 page
]

ROOT_URLCONF = "aiops_site.urls"
WSGI_APPLICATION = "aiops_site.wsgi.application"
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
            ]
        },
    }
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("AIOPS_STATIC_ROOT", str(RUN_DIR / "static")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
LOGIN_URL = "/admin/login/"
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "api.problems.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
# The REST API (/api/v1/): requests per token (per user for a console session), counted in Redis.
AIOPS_API_RATE = env_str("AIOPS_API_RATE", "1200/minute")
if not re.fullmatch(r"[1-9][0-9]*/(second|minute|hour|day)", AIOPS_API_RATE):
    raise EnvError(f"AIOPS_API_RATE={AIOPS_API_RATE!r} is not N/second, N/minute, N/hour or N/day")
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "api": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
            "KEY_PREFIX": "aiops:api", "OPTIONS": {"socket_timeout": 2, "socket_connect_timeout": 2}},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "AIOps agent API",
    "DESCRIPTION": (
        "Incidents, playbook runs, approvals, rules and playbooks, clusters, tools, the audit log and the "
        "assistant, for scripts, CI and other tools. Authenticate with `Authorization: Bearer aiops_...` "
        "(a personal token from the console's API tokens page or the admin). Errors are RFC 9457 problem "
        "details naming the field at fault."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "IncidentStateEnum": "playbooks.models.Incident.State",
        "IncidentSeverityEnum": "playbooks.models.Incident.Severity",
        "RunStateEnum": "playbooks.models.PlaybookRun.State",
        "RunOutcomeEnum": "playbooks.models.PlaybookRun.Outcome",
        "StepRunStateEnum": "playbooks.models.StepRun.State",
        "ApprovalStateEnum": "agents.models.Approval.State",
    },
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "api.schema.add_problem_responses"],
}

# --- Celery ------------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", REDIS_URL)
# The queue tasks are published to and workers consume by default. Two deployments sharing one
# Redis (or a test session beside a dev stack) keep their work apart with different names.
CELERY_TASK_DEFAULT_QUEUE = env_str("AIOPS_CELERY_QUEUE", "celery")
# Chat deliveries have a queue of their own, consumed by every worker (a worker started without
# -Q takes every queue listed here) and by the `outbound` process alone (python -m
# aiops_site.outbound), so a delivery never waits for a worker slot that a poll or a playbook step holds.
AIOPS_OUTBOUND_QUEUE = env_str("AIOPS_OUTBOUND_QUEUE", f"{CELERY_TASK_DEFAULT_QUEUE}.outbound")
CELERY_TASK_QUEUES = task_queues(CELERY_TASK_DEFAULT_QUEUE, AIOPS_OUTBOUND_QUEUE)  # each with a binding of its own
CELERY_TASK_ROUTES = ("aiops_site.queues.route_deliveries",)  # to AIOPS_OUTBOUND_QUEUE (see there)
# Threads of the outbound process (deliveries wait on the chat platform, not on the CPU) and the
# port it serves its own metrics on (0: none; under one PROMETHEUS_MULTIPROC_DIR with the worker,
# as in `make run` and compose, the worker's port serves them).
AIOPS_OUTBOUND_CONCURRENCY = env_int("AIOPS_OUTBOUND_CONCURRENCY", 4, minimum=1, maximum=64)
AIOPS_OUTBOUND_METRICS_PORT = env_int("AIOPS_OUTBOUND_METRICS_PORT", 0, minimum=0, maximum=65535)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("AIOPS_TASK_SOFT_TIME_LIMIT", 120, minimum=5)
CELERY_TASK_TIME_LIMIT = env_int("AIOPS_TASK_TIME_LIMIT", 150, minimum=10)
if CELERY_TASK_TIME_LIMIT <= CELERY_TASK_SOFT_TIME_LIMIT:
    raise EnvError(
        f"AIOPS_TASK_TIME_LIMIT={CELERY_TASK_TIME_LIMIT} must be above "
        f"AIOPS_TASK_SOFT_TIME_LIMIT={CELERY_TASK_SOFT_TIME_LIMIT}"
    )
# Redis redelivers an unacked message after visibility_timeout. The default (one hour) would
# leave a crashed worker's step waiting an hour; a little above the hard time limit is the
# shortest safe value (shorter would redeliver tasks that are still running).
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_TASK_TIME_LIMIT + 30}
# Celery's Django fixup closes the database connection after every task unless this is set: a new
# PostgreSQL backend (fork, authentication, cold catalog caches) for each task, ~25 ms of a short
# one. With it, a connection is closed every 1,000 tasks, and Django's own rule decides in between
# as for a request (CONN_MAX_AGE, CONN_HEALTH_CHECKS: aiops_site.celery runs close_old_connections).
CELERY_DB_REUSE_MAX = 1000
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_TASK_TIME_LIMIT + 30}

# --- Observability -----------------------------------------------------------------------
AIOPS_LOG_LEVEL = env_choice("AIOPS_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
AIOPS_LOG_FORMAT = env_choice("AIOPS_LOG_FORMAT", "auto", ("auto", "json", "console"))
PROMETHEUS_EXPORT_MIGRATIONS = False
# Ports of their own for metrics (0 = off): the gunicorn master and the Celery worker's main
# process serve every child's values there (see aiops_site/metrics.py). In a container bind
# 0.0.0.0 so Prometheus can reach it; on a laptop loopback is enough.
AIOPS_WEB_METRICS_PORT = env_int("AIOPS_WEB_METRICS_PORT", 0, minimum=0, maximum=65535)
AIOPS_WORKER_METRICS_PORT = env_int("AIOPS_WORKER_METRICS_PORT", 0, minimum=0, maximum=65535)
AIOPS_METRICS_ADDRESS = env_str("AIOPS_METRICS_ADDRESS", "127.0.0.1")
# Celery queues whose depth aiops_celery_queue_length reports; empty = the queues Celery is configured with.
AIOPS_METRICS_QUEUES = env_list("AIOPS_METRICS_QUEUES", [])
# Seconds a 503 asks a sender to wait while PostgreSQL, Redis or the broker is down.
AIOPS_RETRY_AFTER = env_int("AIOPS_RETRY_AFTER", 30, minimum=1, maximum=3600)

# --- The product -------------------------------------------------------------------------
AIOPS_POLL_INTERVAL = env_int("AIOPS_POLL_INTERVAL", 30, minimum=1, maximum=3600)
AIOPS_RESOLVE_AFTER = env_int("AIOPS_RESOLVE_AFTER", 2, minimum=1, maximum=100)
# Incidents an Alertmanager batch opened are announced (rules, notifications) by a task after the
# batch commits; the sweep announces those still waiting after this many seconds (a lost task message).
AIOPS_ANNOUNCE_SWEEP_AFTER = env_int("AIOPS_ANNOUNCE_SWEEP_AFTER", 15, minimum=1, maximum=3600)
AIOPS_UNREACHABLE_AFTER = env_int("AIOPS_UNREACHABLE_AFTER", 3, minimum=1, maximum=100)
# Polls of an unreachable cluster back off (interval x 2^(failures-1)) up to this many seconds.
AIOPS_POLL_BACKOFF_MAX = env_int("AIOPS_POLL_BACKOFF_MAX", 600, minimum=1, maximum=86400)
# The `watch` process (manage.py watch): a cluster's lease lives this long without renewal, so
# another watcher takes a dead one's clusters over within it (plus one scan). Events on a
# workload are coalesced: a workload with no detector pass in the last AIOPS_WATCH_WINDOW is
# passed AIOPS_WATCH_LEAD after its first event (the other objects one change writes arrive
# meanwhile), one passed within the window waits for the window's end: at most one pass per
# workload per window.
AIOPS_WATCH_LEASE_TTL = env_float("AIOPS_WATCH_LEASE_TTL", 6.0, minimum=2.0, maximum=300.0)
AIOPS_WATCH_WINDOW = env_float("AIOPS_WATCH_WINDOW", 0.5, minimum=0.0, maximum=30.0)
AIOPS_WATCH_LEAD = env_float("AIOPS_WATCH_LEAD", 0.05, minimum=0.0, maximum=30.0)
AIOPS_WATCH_METRICS_PORT = env_int("AIOPS_WATCH_METRICS_PORT", 0, minimum=0, maximum=65535)
AIOPS_AUTO_REMEDIATION = env_bool("AIOPS_AUTO_REMEDIATION", True)
AIOPS_DRY_RUN = env_bool("AIOPS_DRY_RUN", False)
AIOPS_READ_ONLY = env_bool("AIOPS_READ_ONLY", False)
AIOPS_APPROVAL_TTL = env_int("AIOPS_APPROVAL_TTL", 300, minimum=10, maximum=86400)
# Members of this Django group decide approvals (unless a request names its own approvers).
AIOPS_APPROVER_GROUP = env_str("AIOPS_APPROVER_GROUP", "approvers")
AIOPS_ACTIONS_PER_HOUR = env_int("AIOPS_ACTIONS_PER_HOUR", 20, minimum=0)
AIOPS_ALERTMANAGER_TOKEN = env_str("AIOPS_ALERTMANAGER_TOKEN")
AIOPS_KUBECONFIG = env_str("KUBECONFIG")
AIOPS_PUBLIC_URL = env_str("AIOPS_PUBLIC_URL", "http://127.0.0.1:8000")

# The Kubernetes MCP server (k8s.mcp_server) served over streamable HTTP on loopback.
AIOPS_MCP_TOKEN = env_str("AIOPS_MCP_TOKEN") or (run_secret(RUN_DIR, "mcp_token") if EMBEDDED_DATABASE else "")
AIOPS_MCP_URL = env_str("AIOPS_MCP_URL", "http://127.0.0.1:8765/mcp")
AIOPS_MCP_OUTPUT_LIMIT = env_int("AIOPS_MCP_OUTPUT_LIMIT", 16 * 1024, minimum=1024)
AIOPS_MCP_TIMEOUT = env_float("AIOPS_MCP_TIMEOUT", 30.0, minimum=1.0)
# A mutating call left `started` this long past AIOPS_MCP_TIMEOUT with no retry is resolved by
# the reconciler (re-reading the cluster); a step's retry, within its lease, usually comes first.
AIOPS_ORPHAN_GRACE = env_int("AIOPS_ORPHAN_GRACE", 60, minimum=0)
# A running playbook step holds a lease its worker renews every third of it; a lapsed lease means
# a dead worker and the step is sent again (the reconciler runs every AIOPS_RECONCILE_INTERVAL).
# A queued step whose message went quiet this long (lost by the broker) is sent again too.
AIOPS_STEP_LEASE = env_int("AIOPS_STEP_LEASE", 30, minimum=3)
AIOPS_RECONCILE_INTERVAL = env_int("AIOPS_RECONCILE_INTERVAL", 10, minimum=1)
AIOPS_STEP_REQUEUE_AFTER = env_int("AIOPS_STEP_REQUEUE_AFTER", 60, minimum=5)
AIOPS_MAX_SCALE_REPLICAS = env_int("AIOPS_MAX_SCALE_REPLICAS", 20, minimum=1)
AIOPS_MAX_HPA_REPLICAS = env_int("AIOPS_MAX_HPA_REPLICAS", 50, minimum=1)
AIOPS_MEMORY_LIMIT_MAX_FACTOR = env_float("AIOPS_MEMORY_LIMIT_MAX_FACTOR", 2.0, minimum=1.0, maximum=8.0)

# The LLM: any OpenAI-compatible endpoint; GitHub Models by default.
LLM_BASE_URL = env_str("LLM_BASE_URL", "https://models.github.ai/inference")
LLM_API_KEY = env_str("LLM_API_KEY")
LLM_DEFAULT_MODEL = env_str("LLM_DEFAULT_MODEL", "gpt-4o-mini")
LLM_TIMEOUT = env_float("LLM_TIMEOUT", 60.0, minimum=1.0)
# Aliases people type (`/model claude`) -> the provider's model id; the admin's ModelAlias rows
# add to and override these. Format: "alias=model,alias=model".
LLM_MODEL_ALIASES = env_str(
    "LLM_MODEL_ALIASES",
    "gpt-4o=openai/gpt-4o,gpt-4o-mini=openai/gpt-4o-mini,gpt-4.1=openai/gpt-4.1,"
    "llama=meta/Llama-3.3-70B-Instruct,mistral=mistral-ai/mistral-medium-2505,deepseek=deepseek/DeepSeek-V3-0324",
)
# Channel-kind defaults, between a person's preference and LLM_DEFAULT_MODEL: "slack=gpt-4o,web=llama".
LLM_CHANNEL_MODELS = env_str("LLM_CHANNEL_MODELS", "")
LLM_RCA_MODEL = env_str("LLM_RCA_MODEL", "")  # empty = LLM_DEFAULT_MODEL
LLM_MAX_RETRIES = env_int("LLM_MAX_RETRIES", 3, minimum=0, maximum=10)
LLM_RETRY_BACKOFF = env_float("LLM_RETRY_BACKOFF", 1.0, minimum=0.0, maximum=60.0)
LLM_RETRY_MAX_WAIT = env_float("LLM_RETRY_MAX_WAIT", 30.0, minimum=0.0, maximum=600.0)
LLM_BREAKER_THRESHOLD = env_int("LLM_BREAKER_THRESHOLD", 5, minimum=1, maximum=1000)
LLM_BREAKER_COOLDOWN = env_float("LLM_BREAKER_COOLDOWN", 60.0, minimum=1.0, maximum=3600.0)
LLM_MAX_TOOL_ROUNDS = env_int("LLM_MAX_TOOL_ROUNDS", 5, minimum=1, maximum=20)
LLM_TOOL_OUTPUT_BUDGET = env_int("LLM_TOOL_OUTPUT_BUDGET", 24_000, minimum=1000)
LLM_CONTEXT_TOKENS = env_int("LLM_CONTEXT_TOKENS", 6000, minimum=500)
LLM_REDACT_RESOURCE_NAMES = env_bool("LLM_REDACT_RESOURCE_NAMES", False)
# Every request carries max_tokens: without it a local model writes until its context is full
# (minutes on a CPU). Per purpose, because a chat answer is short and a JSON report is not.
LLM_MAX_TOKENS_CHAT = env_int("LLM_MAX_TOKENS_CHAT", 800, minimum=16, maximum=65536)
LLM_MAX_TOKENS_RCA = env_int("LLM_MAX_TOKENS_RCA", 1200, minimum=64, maximum=65536)
# What the RCA shows the model: "full" (the compacted objects as JSON, up to 150 numbered log lines)
# or "compact" (a few hundred tokens of facts, for small local models on a CPU: agents/rca/llm_input.py).
LLM_RCA_PROMPT = env_choice("LLM_RCA_PROMPT", "full", ("full", "compact"))
# The RCA's investigation (agents/rca/investigate.py): with an LLM and a cluster, the model may call
# LOW tools (logs, events, objects, query_prometheus) for this many rounds and characters of output
# before it writes the report; LLM_RCA_TOOL_CHOICE is the first round's tool_choice (auto, required,
# or a LOW tool's name: llama-cpp-python's server returns tool calls only for a named tool).
LLM_RCA_INVESTIGATE = env_bool("LLM_RCA_INVESTIGATE", True)
LLM_RCA_TOOL_ROUNDS = env_int("LLM_RCA_TOOL_ROUNDS", 3, minimum=1, maximum=10)
LLM_RCA_TOOL_OUTPUT_BUDGET = env_int("LLM_RCA_TOOL_OUTPUT_BUDGET", 12_000, minimum=1000)
LLM_RCA_TOOL_CHOICE = env_str("LLM_RCA_TOOL_CHOICE", "auto").strip() or "auto"
if not re.fullmatch(r"auto|required|[A-Za-z0-9_-]{1,64}", LLM_RCA_TOOL_CHOICE):
    raise EnvError(f"LLM_RCA_TOOL_CHOICE={LLM_RCA_TOOL_CHOICE!r} is not auto, required or a tool name")
# Wall-clock budget of one chat answer (every round, retry and tool call) and of the LLM part of
# one RCA. Each request's timeout is the smaller of LLM_TIMEOUT and what is left of the budget;
# the Celery tasks that do this work get soft/hard limits a little above it (agents/llm.py).
LLM_CHAT_TIME_LIMIT = env_int("LLM_CHAT_TIME_LIMIT", 150, minimum=5, maximum=3600)
LLM_RCA_TIME_LIMIT = env_int("LLM_RCA_TIME_LIMIT", 150, minimum=5, maximum=3600)
# What an endpoint+model was found not to support (structured outputs, tools) is remembered in
# Redis this long, so it is learned once and not paid for on every request.
LLM_CAPABILITY_TTL = env_int("LLM_CAPABILITY_TTL", 6 * 3600, minimum=60, maximum=30 * 86400)
# The first round's tool_choice in chat: "auto" (the model decides), "required" (it must call a
# tool), or the name of one LOW tool it must call first. llama-cpp-python's server returns tool
# calls only for a named tool (see README, "LLM servers").
LLM_TOOL_CHOICE = env_str("LLM_TOOL_CHOICE", "auto").strip() or "auto"
if not re.fullmatch(r"auto|required|none|[A-Za-z0-9_-]{1,64}", LLM_TOOL_CHOICE):
    raise EnvError(f"LLM_TOOL_CHOICE={LLM_TOOL_CHOICE!r} is not auto, required, none or a tool name")
for _name, _value in (("LLM_MODEL_ALIASES", LLM_MODEL_ALIASES), ("LLM_CHANNEL_MODELS", LLM_CHANNEL_MODELS)):
    for _item in filter(None, (item.strip() for item in _value.split(","))):
        if "=" not in _item or not all(part.strip() for part in _item.split("=", 1)):
            raise EnvError(f"{_name}={_value!r}: {_item!r} is not name=value")

# Chat platforms: a platform whose secrets are unset is disabled (its endpoints answer 404).
TELEGRAM_BOT_TOKEN = env_str("TELEGRAM_BOT_TOKEN")
TELEGRAM_WEBHOOK_SECRET = env_str("TELEGRAM_WEBHOOK_SECRET")
TELEGRAM_API_BASE_URL = env_str("TELEGRAM_API_BASE_URL", "https://api.telegram.org")
SLACK_BOT_TOKEN = env_str("SLACK_BOT_TOKEN")
SLACK_SIGNING_SECRET = env_str("SLACK_SIGNING_SECRET")
SLACK_API_BASE_URL = env_str("SLACK_API_BASE_URL", "https://slack.com/api/")
DISCORD_APPLICATION_ID = env_str("DISCORD_APPLICATION_ID")
DISCORD_PUBLIC_KEY = env_str("DISCORD_PUBLIC_KEY")
DISCORD_BOT_TOKEN = env_str("DISCORD_BOT_TOKEN")
DISCORD_API_BASE_URL = env_str("DISCORD_API_BASE_URL", "https://discord.com/api/v10")
# Outbox delivery: attempts per message before it is marked failed, and the exponential
# back-off for 5xx/network errors (a 429's own Retry-After is honoured instead).
AIOPS_CHAT_MAX_ATTEMPTS = env_int("AIOPS_CHAT_MAX_ATTEMPTS", 8, minimum=1, maximum=50)
AIOPS_CHAT_RETRY_BASE = env_float("AIOPS_CHAT_RETRY_BASE", 2.0, minimum=0.05, maximum=600.0)
AIOPS_CHAT_RETRY_MAX = env_float("AIOPS_CHAT_RETRY_MAX", 300.0, minimum=1.0, maximum=3600.0)
AIOPS_CHAT_HTTP_TIMEOUT = env_float("AIOPS_CHAT_HTTP_TIMEOUT", 15.0, minimum=1.0, maximum=120.0)
# Storm control: more than AIOPS_STORM_THRESHOLD incidents opened on one cluster within
# AIOPS_STORM_WINDOW seconds is a storm: each target gets one summary, then messages of their own
# only for critical incidents. Targets with `digest` on get info-level messages batched every
# AIOPS_DIGEST_INTERVAL seconds.
AIOPS_STORM_THRESHOLD = env_int("AIOPS_STORM_THRESHOLD", 10, minimum=1, maximum=100000)
AIOPS_STORM_WINDOW = env_int("AIOPS_STORM_WINDOW", 60, minimum=1, maximum=86400)
AIOPS_DIGEST_INTERVAL = env_int("AIOPS_DIGEST_INTERVAL", 300, minimum=10, maximum=86400)

from aiops_site.schedule import beat_schedule  # noqa: E402

CELERY_BEAT_SCHEDULE = beat_schedule(AIOPS_POLL_INTERVAL, AIOPS_RECONCILE_INTERVAL, AIOPS_DIGEST_INTERVAL)

# Prometheus multiprocess mode: web and worker processes on one host share one registry dir.
PROMETHEUS_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")

from aiops_site.observability import configure_logging  # noqa: E402  (needs the settings above)

LOGGING_CONFIG = None
configure_logging(level=AIOPS_LOG_LEVEL, fmt=AIOPS_LOG_FORMAT)
