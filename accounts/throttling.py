"""Throttles on logging in: per client address (DRF's scoped throttle; the address comes from
DRF's get_ident, which trusts X-Forwarded-For only as far as NUM_PROXIES says) and per account
(accounts.lockout). The API's auth endpoints and the admin site's login share both."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from rest_framework.throttling import ScopedRateThrottle

from . import lockout


class AuthThrottle(ScopedRateThrottle):
    """The "auth" scope (AUTH_THROTTLE_RATE) for views that set `throttle_scope`."""

    scope_attr = "throttle_scope"


class _AdminLoginScope:
    """What AuthThrottle reads from a view: the admin login counts against the "auth" rate."""

    throttle_scope = "auth"


def _too_many(request: HttpRequest, wait: int) -> HttpResponse:
    context = {**admin.site.each_context(request), "wait": wait, "title": "Too many attempts"}
    response = TemplateResponse(request, "admin/login_throttled.html", context, status=429)
    response["Retry-After"] = str(wait)
    return response


def admin_login(request: HttpRequest, extra_context=None) -> HttpResponse:
    """The admin site's login view behind the address throttle and the account lockout."""
    if request.method != "POST":
        return admin.site.login(request, extra_context)
    throttle = AuthThrottle()
    if not throttle.allow_request(request, _AdminLoginScope):
        return _too_many(request, int((throttle.wait() or 1) + 0.999))
    email = request.POST.get("username", "").strip()
    wait = lockout.login_locked_for(email)
    if wait:
        return _too_many(request, wait)
    response = admin.site.login(request, extra_context)
    # A successful login redirects with the user logged in; a failure re-renders the form.
    if response.status_code == 302 and request.user.is_authenticated:
        lockout.login_succeeded(email)
    else:
        lockout.login_failed(email)
    return response
