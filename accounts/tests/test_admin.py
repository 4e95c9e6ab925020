"""Staff: the outstanding and blacklisted token pages never show a token, and "revoke" ends a
session."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken

from accounts.models import RefreshTokenFamily
from accounts.services import tokens_for_user

pytestmark = pytest.mark.django_db

OUTSTANDING = "/admin/token_blacklist/outstandingtoken/"
BLACKLISTED = "/admin/token_blacklist/blacklistedtoken/"


@pytest.fixture
def admin_client_(make_user) -> Client:
    client = Client()
    client.force_login(make_user("root@example.com", staff=True, is_superuser=True))
    return client


def test_it_shows_token_ids_users_and_dates_but_never_a_token(admin_client_, user):
    tokens = tokens_for_user(user)
    outstanding = OutstandingToken.objects.get(user=user)

    pages = [
        admin_client_.get(OUTSTANDING),
        admin_client_.get(f"{OUTSTANDING}{outstanding.pk}/change/"),
    ]

    for page in pages:
        assert page.status_code == 200
        body = page.content.decode()
        assert outstanding.jti in body and user.email in body
        assert tokens["refreshToken"] not in body
        assert tokens["refreshToken"].split(".")[1] not in body  # not even its payload
    assert b'name="token"' not in pages[1].content


def test_it_revokes_selected_tokens_and_their_sessions(admin_client_, user):
    tokens = tokens_for_user(user)
    kept = tokens_for_user(user)
    outstanding = OutstandingToken.objects.get(
        jti=RefreshTokenFamily.objects.earliest("created_at").current_jti
    )

    response = admin_client_.post(
        OUTSTANDING, {"action": "revoke", "_selected_action": [outstanding.pk]}, follow=True
    )

    assert response.status_code == 200
    assert b"1 session(s) ended" in response.content
    refused = APIClient().post(
        "/api/v1/auth/refresh", {"refreshToken": tokens["refreshToken"]}, "json"
    )
    assert refused.status_code == 401
    still = APIClient().post("/api/v1/auth/refresh", {"refreshToken": kept["refreshToken"]}, "json")
    assert still.status_code == 200
    listed = admin_client_.get(BLACKLISTED)
    assert outstanding.jti.encode() in listed.content


def test_it_offers_no_add_edit_or_delete_of_tokens(admin_client_, user):
    tokens_for_user(user)
    outstanding = OutstandingToken.objects.get(user=user)

    assert admin_client_.get(f"{OUTSTANDING}add/").status_code == 403
    assert admin_client_.get(f"{OUTSTANDING}{outstanding.pk}/delete/").status_code == 403
    assert admin_client_.get(f"{BLACKLISTED}add/").status_code == 403
    changed = admin_client_.post(f"{OUTSTANDING}{outstanding.pk}/change/", {"jti": "other"})
    assert changed.status_code == 403
    assert OutstandingToken.objects.get(pk=outstanding.pk).jti == outstanding.jti
