"""A customer serves themselves in a real browser: signs in by emailed link, watches their use,
makes and revokes a key, links their Codex session, and buys a plan through Stripe."""

import json
import logging
import re

import httpx
import openai
import pytest
from playwright.sync_api import expect

from accounts import signin
from accounts.models import Account
from billing.models import Plan
from proxy.models import RequestLog
from tests.e2e.conftest import SCREENSHOTS, VIEWPORT, Camera, _static_file
from tests.test_stripe_webhook import checkout, signed

CODEX_ACCESS_TOKEN = "eyJhbGciOiJub25lIn0.eyJleHAiOjIwMDAwMDAwMDB9.alice-codex-access-token"
CODEX_REFRESH_TOKEN = "rt_alice-codex-refresh-token"
WEBHOOK_SECRET = "whsec_browser_test"


@pytest.fixture
def customer_page(browser, gateway):
    context = browser.new_context(viewport=VIEWPORT)
    context.route("**/static/**", _static_file)
    page = context.new_page()
    page.snap = Camera(page, SCREENSHOTS / "customer-self-service")
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def shop(settings, gateway, fake_stripe):
    settings.PUBLIC_URL = gateway.url
    settings.STRIPE_SUCCESS_URL = f"{gateway.url}/account/?checkout=success"
    settings.STRIPE_CANCEL_URL = f"{gateway.url}/account/?checkout=cancelled"
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.AUTH_MODE = "codex"
    settings.GATEWAY_IDENTITY = "key"
    Plan.objects.update_or_create(tier="tier2", defaults={"stripe_price_id": "price_tier2_monthly"})
    fake_stripe.add_price("price_tier2_monthly", 2000)
    return fake_stripe


def test_a_customer_signs_in_manages_keys_and_codex_and_buys_a_plan(
    customer_page, gateway, upstream, shop, mailoutbox, tmp_path, caplog
):
    caplog.set_level(logging.DEBUG)
    Account.objects.create(user_id="alice", email="alice@example.org")
    page = customer_page
    seen_pages = []

    # Signs in with the link emailed to her.
    page.goto(f"{gateway.url}/account/")
    expect(page).to_have_url(re.compile(r"/account/sign-in/$"))
    page.fill("#id_email", "Alice@Example.org")
    page.snap("sign-in", docs="account-sign-in")
    page.click("#email-sign-in button")
    expect(page.locator("#link-sent")).to_contain_text("a sign-in link is on its way")
    page.snap("link-sent")
    signin.settle_mail()
    assert len(mailoutbox) == 1
    link = re.search(r"http://\S+/account/sign-in/link/\S+", mailoutbox[0].body).group(0)
    page.goto(link)
    page.click("#confirm-sign-in")
    expect(page).to_have_url(re.compile(r"/account/$"))
    expect(page.locator("#plan-name")).to_have_text("free")
    expect(page.locator("tr.plan[data-tier=tier2] .price")).to_have_text("$20.00 a month")
    page.snap("signed-in", docs="account-plans", of="#billing")

    # Links her Codex session by uploading the auth.json `codex login` wrote.
    auth_json = tmp_path / "auth.json"
    auth_json.write_text(
        json.dumps({"tokens": {"access_token": CODEX_ACCESS_TOKEN, "refresh_token": CODEX_REFRESH_TOKEN}})
    )
    page.set_input_files("#link-codex input[type=file]", auth_json)
    page.click("#link-codex button")
    expect(page.locator("#codex-status .status")).to_have_text("linked")
    seen_pages.append(page.content())
    page.snap("codex-linked", docs="account-codex", of="#codex")

    # Creates a key, and calls /v1 with it through the OpenAI SDK.
    page.fill("#create-key input[name=name]", "notebook")
    page.click("#create-key button")
    raw_key = page.locator("#new-key").inner_text()
    assert re.fullmatch(r"gk_[A-Za-z0-9_-]{43}", raw_key)
    page.snap("key-created", docs="account-new-key", of="#keys")
    sdk = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=raw_key, max_retries=0)
    completion = sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content.endswith("You said: hi")
    assert upstream.last.headers["x-codex-token"] == CODEX_ACCESS_TOKEN
    gateway.settle()

    # Sees the use /api/usage reports.
    page.goto(f"{gateway.url}/account/")
    usage = httpx.get(f"{gateway.url}/api/usage", headers={"X-Gateway-Key": raw_key}).json()
    assert usage["requests"]["used"] == 1 and usage["tokens"]["used"] > 0
    expect(page.locator("#meter-requests .used")).to_have_text(f"{usage['requests']['used']:,}")
    expect(page.locator("#meter-tokens .used")).to_have_text(f"{usage['tokens']['used']:,}")
    expect(page.locator(".usage-chart rect.bar")).to_have_count(1)
    assert raw_key not in page.content()
    seen_pages.append(page.content())
    page.snap("usage", docs="account-usage", of="#usage")

    # Revokes the key: the next call is refused.
    page.click(f"tr.api-key[data-prefix='{raw_key[:10]}'] button.revoke")
    expect(page.locator(f"tr.api-key[data-prefix='{raw_key[:10]}']")).to_contain_text("revoked")
    with pytest.raises(openai.AuthenticationError) as refused:
        sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "again"}])
    assert refused.value.status_code == 401
    page.snap("key-revoked")

    # Upgrades: lands on Stripe's (fake) checkout page.
    page.click("button.upgrade[data-tier=tier2]")
    expect(page.locator("body")).to_contain_text("Fake Stripe Checkout")
    page.snap("checkout")
    (session,) = shop.checkouts()
    assert session.form["client_reference_id"] == "alice"
    assert session.form["line_items[0][price]"] == "price_tier2_monthly"

    # Stripe reports the finished checkout; the plan shows on reload.
    body, headers = signed(checkout("evt_browser_1", "alice", tier="tier2"), secret=WEBHOOK_SECRET)
    assert httpx.post(f"{gateway.url}/billing/stripe/webhook", content=body, headers=headers).status_code == 200
    page.goto(f"{gateway.url}/account/?checkout=success")
    expect(page.locator("#plan-name")).to_have_text("Tier 2")
    seen_pages.append(page.content())
    page.snap("plan-bought", docs="account-plan-bought")

    # Manages it in Stripe's (fake) billing portal.
    page.click("#manage-billing")
    expect(page.locator("body")).to_contain_text("Fake Stripe Billing Portal")
    (portal,) = shop.portals()
    assert portal.form["customer"] == "cus_alice"
    page.snap("billing-portal")

    # The Codex tokens are in no page, no log line and no access-log row.
    rows = [json.dumps(list(vars(row).values()), default=str) for row in RequestLog.objects.all()]
    for secret in (CODEX_ACCESS_TOKEN, CODEX_REFRESH_TOKEN, raw_key):
        assert not any(secret in text for text in seen_pages)
        assert secret not in caplog.text
        assert not any(secret in row for row in rows)
