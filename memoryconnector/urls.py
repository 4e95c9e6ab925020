"""URL map: the JSON API under /api/v1/, its docs, health probes, the staff dashboard and the
admin site."""

from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from accounts.throttling import admin_login
from common.errors import api_not_found

from . import admin_api, health, metrics

api_v1 = [
    path("auth/", include("accounts.urls")),
    path("", include("memories.urls")),
    path("", include("costs.urls")),
    path("", include("enrichment.urls")),
    path("", include("sync.urls")),
    path("admin/stats", admin_api.StatsApi.as_view(), name="admin-stats"),
    path("schema", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file: no inline script (CSP).
    path("docs", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="docs"),
]

urlpatterns = [
    # The front page (and the admin's "View site" link) is the API's documentation.
    path("", RedirectView.as_view(pattern_name="docs", permanent=False), name="home"),
    path("api/v1/", include(api_v1)),
    re_path(r"^api/", api_not_found),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
    # Before admin.site.urls, whose catch-all would otherwise answer /admin/dashboard/.
    path("admin/dashboard/", include("memoryconnector.dashboard")),
    # Before admin.site.urls too: the admin's login, throttled like the API's.
    path("admin/login/", admin_login),
    path("admin/", admin.site.urls),
]

handler400 = "common.errors.json_handler400"
handler403 = "common.errors.json_handler403"
handler404 = "common.errors.json_handler404"
handler500 = "common.errors.json_handler500"
