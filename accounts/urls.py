from django.urls import path

from . import api

urlpatterns = [
    path("login", api.LoginApi.as_view(), name="auth-login"),
    path("refresh", api.RefreshApi.as_view(), name="auth-refresh"),
    path("logout", api.LogoutApi.as_view(), name="auth-logout"),
    path("register", api.RegisterApi.as_view(), name="auth-register"),
    path("me", api.MeApi.as_view(), name="auth-me"),
]
