import pytest
from django.test import override_settings

from accounts.models import User
from common.testing import assert_error
from conftest import PASSWORD, client_for

pytestmark = pytest.mark.django_db

LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
REGISTER = "/api/v1/auth/register"
ME = "/api/v1/auth/me"


def test_it_logs_in_with_email_and_password(anon, user):
    response = anon.post(LOGIN, {"email": "alice@example.com", "password": PASSWORD}, "json")
    assert response.status_code == 200
    body = response.json()
    assert body["user"] == {
        "id": user.id,
        "email": "alice@example.com",
        "roles": ["user"],
        "createdAt": body["user"]["createdAt"],
    }
    me = client_for(None)
    me.credentials(HTTP_AUTHORIZATION=f"Bearer {body['accessToken']}")
    assert me.get(ME).json()["email"] == "alice@example.com"


def test_it_logs_in_case_insensitively(anon, user):
    response = anon.post(LOGIN, {"email": "ALICE@Example.com", "password": PASSWORD}, "json")
    assert response.status_code == 200


def test_it_shows_the_admin_role_for_staff(anon, staff):
    response = anon.post(LOGIN, {"email": staff.email, "password": PASSWORD}, "json")
    assert response.json()["user"]["roles"] == ["user", "admin"]


def test_it_answers_the_same_401_for_unknown_email_and_wrong_password(anon, user):
    wrong_password = anon.post(LOGIN, {"email": user.email, "password": "nope"}, "json")
    unknown_email = anon.post(LOGIN, {"email": "bob@example.com", "password": "nope"}, "json")
    first = assert_error(wrong_password, 401, "authentication_failed")
    second = assert_error(unknown_email, 401, "authentication_failed")
    assert first == second


def test_it_refuses_a_deactivated_user(anon, make_user):
    make_user("gone@example.com", is_active=False)
    response = anon.post(LOGIN, {"email": "gone@example.com", "password": PASSWORD}, "json")
    assert_error(response, 401)


def test_it_requires_both_fields_to_log_in(anon):
    error = assert_error(anon.post(LOGIN, {"email": "a@b.c"}, "json"), 400, "validation_error")
    assert "password" in error["details"]


def test_it_throttles_login_with_retry_after(anon, user, monkeypatch):
    from accounts.api import AuthThrottle

    monkeypatch.setattr(AuthThrottle, "THROTTLE_RATES", {"auth": "3/min"})
    for _ in range(3):
        anon.post(LOGIN, {"email": user.email, "password": "wrong"}, "json")
    response = anon.post(LOGIN, {"email": user.email, "password": PASSWORD}, "json")
    error = assert_error(response, 429, "throttled")
    assert int(response["Retry-After"]) > 0
    assert error["details"]["retryAfterSeconds"] > 0


def test_it_throttles_registration(anon, monkeypatch):
    from accounts.api import AuthThrottle

    monkeypatch.setattr(AuthThrottle, "THROTTLE_RATES", {"auth": "2/min"})
    for i in range(2):
        anon.post(REGISTER, {"email": f"r{i}@example.com", "password": "long-passphrase-1"}, "json")
    response = anon.post(
        REGISTER, {"email": "r9@example.com", "password": "long-passphrase-1"}, "json"
    )
    assert_error(response, 429, "throttled")
    assert not User.objects.filter(email="r9@example.com").exists()


def test_it_rotates_refresh_tokens(anon, user):
    tokens = anon.post(LOGIN, {"email": user.email, "password": PASSWORD}, "json").json()
    first = anon.post(REFRESH, {"refreshToken": tokens["refreshToken"]}, "json")
    assert first.status_code == 200
    pair = first.json()
    assert set(pair) == {"accessToken", "refreshToken"}
    assert pair["refreshToken"] != tokens["refreshToken"]

    again = anon.post(REFRESH, {"refreshToken": pair["refreshToken"]}, "json")
    assert again.status_code == 200


def test_it_refuses_garbage_and_access_tokens_as_refresh_tokens(anon, user):
    tokens = anon.post(LOGIN, {"email": user.email, "password": PASSWORD}, "json").json()
    assert_error(anon.post(REFRESH, {"refreshToken": "garbage"}, "json"), 401)
    assert_error(anon.post(REFRESH, {"refreshToken": tokens["accessToken"]}, "json"), 401)
    assert_error(anon.post(REFRESH, {}, "json"), 400, "validation_error")


def test_it_registers_a_user_and_returns_tokens(anon, db):
    response = anon.post(
        REGISTER, {"email": "New@Example.com", "password": "a-long-enough-passphrase"}, "json"
    )
    assert response.status_code == 201
    body = response.json()
    assert body["user"]["email"] == "new@example.com"
    assert body["user"]["roles"] == ["user"]
    assert User.objects.get(email="new@example.com").check_password("a-long-enough-passphrase")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"email": "x@example.com", "password": "short"}, "password"),
        ({"email": "x@example.com", "password": "password123"}, "password"),
        ({"email": "x@example.com", "password": "12345678901"}, "password"),
        ({"email": "not-an-email", "password": "a-long-enough-passphrase"}, "email"),
        ({"email": "x@example.com", "password": 12345678}, "password"),
    ],
)
def test_it_validates_registration(anon, payload, field):
    error = assert_error(anon.post(REGISTER, payload, "json"), 400, "validation_error")
    assert field in error["details"]
    assert not User.objects.filter(email="x@example.com").exists()


def test_it_refuses_a_second_account_for_an_email(anon, user):
    response = anon.post(
        REGISTER, {"email": "alice@example.com", "password": "a-long-enough-passphrase"}, "json"
    )
    assert_error(response, 409, "conflict")


@override_settings(ALLOW_REGISTRATION=False)
def test_it_can_turn_registration_off(anon):
    response = anon.post(
        REGISTER, {"email": "x@example.com", "password": "a-long-enough-passphrase"}, "json"
    )
    assert_error(response, 403, "permission_denied")
    assert not User.objects.filter(email="x@example.com").exists()


def test_me_needs_a_token(anon):
    response = anon.get(ME)
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_me_refuses_a_forged_token(anon):
    anon.credentials(HTTP_AUTHORIZATION="Bearer not.a.jwt")
    assert_error(anon.get(ME), 401)
