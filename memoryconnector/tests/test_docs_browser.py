"""Swagger UI in headless Chromium, used as the reference's notes say: click "Authorize", enter
`Bearer <your-access-token>`, then "Try it out" on an endpoint."""

from __future__ import annotations

from accounts.services import tokens_for_user

from .browser import BROWSER_MARKS, RESULTS

pytestmark = BROWSER_MARKS


def test_it_authorizes_with_bearer_and_a_token_and_tries_auth_me(page, live_server, make_user):
    user = make_user("alice@example.com")
    token = tokens_for_user(user)["accessToken"]
    page.goto(f"{live_server.url}/api/v1/docs")

    page.click(".scheme-container button.authorize")
    dialog = page.locator(".modal-ux")
    assert "Bearer <your-access-token>" in dialog.inner_text()
    dialog.locator("input").fill(f"Bearer {token}")
    dialog.locator("button.authorize").click()
    dialog.locator("button.btn-done").click()

    operation = page.locator(".opblock-get", has=page.locator('[data-path="/api/v1/auth/me"]'))
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    with page.expect_response(lambda r: r.url.endswith("/api/v1/auth/me")) as answer:
        operation.locator("button.execute").click()

    response = answer.value
    assert response.request.headers["authorization"] == f"Bearer {token}"
    assert response.status == 200
    assert response.json()["email"] == "alice@example.com"
    # Swagger UI shows the answer too.
    live = operation.locator(".live-responses-table tbody .response-col_status")
    assert live.first.inner_text().strip() == "200"
    RESULTS.mkdir(exist_ok=True)
    operation.screenshot(path=str(RESULTS / "swagger-authorize.png"))
    assert page.js_errors == []
