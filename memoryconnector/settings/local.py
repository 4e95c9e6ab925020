"""Local development: DEBUG on, the embedded PostgreSQL by default, a demo staff user allowed."""

from .base import *  # noqa: F403
from .base import env, env_flag

DEBUG = env_flag("DJANGO_DEBUG", True)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="") or "local-development-only-not-a-secret"  # noqa: S105
SIMPLE_JWT["SIGNING_KEY"] = env.str("JWT_SIGNING_KEY", default="") or SECRET_KEY  # noqa: F405
DEMO_USER_ALLOWED = True
# GET /metrics is served without a token when METRICS_TOKEN is unset (never in production).
METRICS_OPEN_WITHOUT_TOKEN = True
