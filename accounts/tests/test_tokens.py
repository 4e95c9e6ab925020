"""Revocable tokens: logout, a password change or a deactivation revokes every token of the user
(and reactivation revives none), a reused refresh token revokes its chain, and racing refreshes
of one token never yield two valid chains."""

from __future__ import annotations

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.core.management import call_command
from rest_framework.test import APIClient
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from accounts.models import RefreshTokenFamily, User
from common.testing import assert_error, run_in_threads
from conftest import PASSWORD

pytestmark = pytest.mark.django_db

LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
ME = "/api/v1/auth/me"


def login(email: str = "alice@example.com", password: str = PASSWORD) -> dict:
    response = APIClient().post(LOGIN, {"email": email, "password": password}, "json")
    assert response.status_code == 200, response.content
    return response.json()


def me(access: str):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client.get(ME)


def refresh(token: str):
    return APIClient().post(REFRESH, {"refreshToken": token}, "json")


def test_it_logs_out_by_revoking_the_whole_refresh_chain(user):
    first = login()
    second = refresh(first["refreshToken"]).json()

    response = APIClient().post(LOGOUT, {"refreshToken": second["refreshToken"]}, "json")

    assert response.status_code == 204
    assert_error(refresh(second["refreshToken"]), 401, "authentication_failed")
    assert_error(refresh(first["refreshToken"]), 401, "authentication_failed")
    # Safe to repeat.
    again = APIClient().post(LOGOUT, {"refreshToken": second["refreshToken"]}, "json")
    assert again.status_code == 204
    # Only that login: another session of the same user lives on.
    other = login()
    assert refresh(other["refreshToken"]).status_code == 200


def test_it_refuses_to_log_out_with_a_token_that_is_not_ours(user):
    tokens = login()
    client = APIClient()
    assert_error(client.post(LOGOUT, {"refreshToken": "garbage"}, "json"), 401)
    assert_error(client.post(LOGOUT, {"refreshToken": tokens["accessToken"]}, "json"), 401)
    assert_error(client.post(LOGOUT, {}, "json"), 400, "validation_error")


def test_it_revokes_the_chain_when_a_rotated_refresh_token_is_reused(user):
    stolen = login()["refreshToken"]
    legit = refresh(stolen).json()

    # The thief (or the victim) presents the already rotated token: the whole chain dies.
    error = assert_error(refresh(stolen), 401, "authentication_failed")
    assert "already used" in error["message"]
    assert_error(refresh(legit["refreshToken"]), 401, "authentication_failed")
    family = RefreshTokenFamily.objects.get(user=user)
    assert family.revoked_reason == "reused"
    # Every refresh token of the chain is blacklisted, as the admin shows.
    assert OutstandingToken.objects.filter(user=user).count() == 2
    assert BlacklistedToken.objects.filter(token__user=user).count() == 2


def test_it_revokes_access_and_refresh_tokens_when_the_password_changes(user):
    tokens = login()
    rotated = refresh(tokens["refreshToken"]).json()
    assert me(rotated["accessToken"]).status_code == 200

    user.set_password("a-brand-new-passphrase")
    user.save()

    for access in (tokens["accessToken"], rotated["accessToken"]):
        error = assert_error(me(access), 401, "authentication_failed")
        assert error["message"] == "This token has been revoked; log in again."
    assert_error(refresh(rotated["refreshToken"]), 401, "authentication_failed")
    # The new password gives working tokens.
    fresh = login(password="a-brand-new-passphrase")
    assert me(fresh["accessToken"]).status_code == 200
    assert refresh(fresh["refreshToken"]).status_code == 200


def test_it_revokes_tokens_when_changepassword_is_run(user, monkeypatch):
    tokens = login()
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "another-long-passphrase")

    call_command("changepassword", user.email)

    assert_error(me(tokens["accessToken"]), 401)
    assert_error(refresh(tokens["refreshToken"]), 401)


class QuickPBKDF2Hasher(PBKDF2PasswordHasher):
    algorithm = "quick_pbkdf2"
    iterations = 1


def test_it_keeps_tokens_on_a_password_hash_upgrade(user, settings):
    tokens = login()
    # Django rehashes a password at login when the preferred hasher changes; that is not a
    # password change.
    settings.PASSWORD_HASHERS = [
        f"{__name__}.QuickPBKDF2Hasher",
        *settings.PASSWORD_HASHERS,
    ]
    login()
    assert User.objects.get(pk=user.pk).password.startswith("quick_pbkdf2$")

    assert me(tokens["accessToken"]).status_code == 200
    assert refresh(tokens["refreshToken"]).status_code == 200


def test_it_revokes_tokens_on_deactivation_and_reactivation_revives_none(user):
    tokens = login()
    rotated = refresh(tokens["refreshToken"]).json()

    user.is_active = False
    user.save()
    assert_error(me(rotated["accessToken"]), 401)
    assert_error(refresh(rotated["refreshToken"]), 401)

    user.is_active = True
    user.save()
    for access in (tokens["accessToken"], rotated["accessToken"]):
        assert_error(me(access), 401, "authentication_failed")
    assert_error(refresh(rotated["refreshToken"]), 401, "authentication_failed")
    assert me(login()["accessToken"]).status_code == 200


def test_it_does_not_revive_tokens_when_a_stale_copy_of_the_user_is_saved(user):
    stale = User.objects.get(pk=user.pk)  # e.g. an admin form opened before the revocation
    tokens = login()
    user.set_password("a-brand-new-passphrase")
    user.save()

    stale.first_name = "whatever"
    stale.is_staff = False
    stale.save()  # writes its old token_version? It must not.

    assert_error(me(tokens["accessToken"]), 401)


def test_it_never_stores_the_refresh_token_itself(user):
    tokens = login()
    refresh(tokens["refreshToken"])

    stored = list(OutstandingToken.objects.filter(user=user).values_list("token", flat=True))
    assert stored == ["", ""]


@pytest.mark.postgres
def test_it_lets_one_of_several_racing_refreshes_win_and_then_revokes_the_chain(
    user, transactional_db
):
    token = login()["refreshToken"]

    results = run_in_threads(8, lambda i: refresh(token))

    statuses = sorted(r.status_code for r in results)
    assert statuses == [200] + [401] * 7
    # The losers presented an already rotated token: the chain, the winner's pair included,
    # is revoked, so no valid chain remains (never several).
    winner = next(r.json() for r in results if r.status_code == 200)
    assert_error(refresh(winner["refreshToken"]), 401)
    family = RefreshTokenFamily.objects.get(user=user)
    assert family.revoked_reason == "reused"
    assert not OutstandingToken.objects.filter(user=user, blacklistedtoken__isnull=True).exists()
