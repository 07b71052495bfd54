"""Swagger UI in a real browser: headless Chromium, offline, against a live gunicorn.

The page must render every operation of /openapi.json from the service's own assets,
and "Try it out" must work end to end: sign in from the page, paste the token into the
Authorize dialog, call protected operations. The browser may reach 127.0.0.1 only: its
host resolver answers "not found" for every other name, and each test checks every
request the browser made.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Error, Page, expect, sync_playwright

from helpers import PASSWORD
from servers import gunicorn, migrate, server_env

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
# Debian's Chromium, cut off from everything but loopback (the driver's own browser
# download is neither possible nor wanted). The profile is a fresh directory.
CHROMIUM_ARGS = [
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--no-sandbox",
    "--disable-gpu",
]
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"needs Chromium at {CHROMIUM} (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    db_file = tmp_path_factory.mktemp("swagger-ui") / "ui.db"
    env = server_env(APP_ENV="development", DATABASE_URL=f"sqlite:///{db_file}")
    migrate(env)
    with gunicorn(env) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
        )
        yield context
        context.close()


@pytest.fixture
def requests_made(browser: Any) -> Iterator[Any]:
    """The URL of every request the browser makes during the test."""
    urls: list[str] = []

    def record(request: Any) -> None:
        urls.append(request.url)

    browser.on("request", record)
    yield urls
    browser.remove_listener("request", record)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    page.close()
    assert errors == [], "the page threw JavaScript errors"


def assert_only_loopback(urls: list[str]) -> None:
    assert urls, "no request recorded"
    assert {urlsplit(url).hostname for url in urls} == {"127.0.0.1"}, urls


def spec_operations(url: str) -> list[tuple[str, str]]:
    with urllib.request.urlopen(f"{url}/openapi.json", timeout=5) as response:  # noqa: S310
        spec = json.load(response)
    return sorted(
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in HTTP_METHODS
    )


def operation(page: Page, method: str, path: str) -> Any:
    """One operation block, e.g. ``operation(page, "POST", "/stores")``."""
    return page.locator(f".opblock-{method.lower()}").filter(
        has=page.locator(f'.opblock-summary-path[data-path="{path}"]')
    )


def try_it_out(
    page: Page,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
) -> tuple[int, dict[str, Any]]:
    """Expand an operation, press "Try it out", fill the parameters and the body (else
    the page's own example is sent), execute; the status code and JSON body that the
    page shows."""
    block = operation(page, method, path)
    block.locator(".opblock-summary-control").click()
    block.locator(".try-out__btn").click()
    for name, value in (params or {}).items():
        block.locator(f'tr[data-param-name="{name}"] input').fill(str(value))
    if body is not None:
        block.locator("textarea.body-param__text").fill(json.dumps(body))
    block.locator("button.execute").click()
    shown = block.locator(".live-responses-table .response")
    status = int(shown.locator(".response-col_status").inner_text())
    return status, json.loads(shown.locator(".highlight-code pre").inner_text())


def authorize(page: Page, token: str) -> None:
    """Paste a token into the Authorize dialog (the spec's ``bearerAuth`` scheme)."""
    page.locator(".auth-wrapper button.authorize").click()
    dialog = page.locator(".modal-ux")
    expect(dialog).to_contain_text("bearerAuth")
    dialog.locator("input").fill(token)
    dialog.locator("button.modal-btn.authorize").click()
    expect(dialog).to_contain_text("Authorized")
    dialog.locator("button.btn-done").click()


def test_the_page_renders_every_operation_of_the_spec(
    server: Any, page: Any, requests_made: Any
) -> None:
    expected = spec_operations(server)
    page.goto(f"{server}/swagger-ui")
    blocks = page.locator(".opblock")
    expect(blocks).to_have_count(len(expected))
    rendered = page.eval_on_selector_all(
        ".opblock",
        """blocks => blocks.map(b => [
            b.querySelector('.opblock-summary-method').textContent,
            b.querySelector('.opblock-summary-path').dataset.path,
        ])""",
    )
    assert sorted(map(tuple, rendered)) == expected
    expect(page.locator(".info .title")).to_contain_text("Stores REST API")
    assert_only_loopback(requests_made)
    assets = [url for url in requests_made if "/swagger-ui/assets/" in url]
    assert {urlsplit(url).path.rsplit("/", 1)[1] for url in assets} >= {
        "swagger-ui.css",
        "swagger-ui-bundle.js",
    }


def test_try_it_out_signs_in_and_calls_protected_operations(
    server: Any, page: Any, requests_made: Any
) -> None:
    page.goto(f"{server}/swagger-ui")
    user = {"username": "swagger", "email": "swagger@example.com", "password": PASSWORD}

    status, body = try_it_out(page, "POST", "/register", user)
    assert status == 201, body
    user_id = body["id"]
    credentials = {"username": "swagger", "password": PASSWORD}
    status, tokens = try_it_out(page, "POST", "/login", credentials)
    assert status == 200, tokens
    authorize(page, tokens["access_token"])

    with page.expect_request(lambda request: request.url.endswith("/users/me")) as sent:
        status, body = try_it_out(page, "GET", "/users/me")
    assert sent.value.headers["authorization"] == f"Bearer {tokens['access_token']}"
    assert status == 200, body
    assert body["username"] == "swagger"

    status, body = try_it_out(page, "POST", "/stores", {"name": "Swagger Shop"})
    assert status == 201, body
    assert body["owner_id"] == user_id
    with urllib.request.urlopen(f"{server}/stores/{body['id']}", timeout=5) as response:  # noqa: S310
        assert json.load(response)["name"] == "Swagger Shop"

    milk = {"name": "Milk", "price": "1.50", "store_id": body["id"], "stock": 12}
    status, item = try_it_out(page, "POST", "/items", milk)
    assert status == 201, item
    # The stock body as the page fills it (the schema's example): a move that works.
    status, movement = try_it_out(
        page, "POST", "/items/{item_id}/stock", None, {"item_id": item["id"]}
    )
    assert status == 201, movement
    assert (movement["delta"], movement["reason"], movement["stock_after"]) == (-2, "sale", 10)
    assert_only_loopback(requests_made)


def test_the_browser_cannot_reach_beyond_loopback(server: Any, page: Any) -> None:
    with pytest.raises(Error, match="ERR_NAME_NOT_RESOLVED"):
        page.goto(server.replace("127.0.0.1", "localhost") + "/health")
