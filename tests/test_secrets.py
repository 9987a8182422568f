"""No key, token, Authorization value or Stripe secret reaches the process log, the access log or admin."""

import logging

import pytest
from django.test import Client

from billing.models import StripeEvent
from proxy.models import RequestLog
from tests.personas import link_codex, trainee
from tests.test_stripe_webhook import checkout, signed

OWN_OPENAI_KEY = "sk-trainee-private-0123456789"
CODEX_TOKEN = "codex-access-token-never-shown"
CODEX_REFRESH = "codex-refresh-token-never-shown"


def everything_logged(caplog) -> str:
    return "\n".join(f"{record.getMessage()} {record.args} {record.exc_text or ''}" for record in caplog.records)


def access_log_text() -> str:
    return "\n".join(str(row) for row in RequestLog.objects.values_list())


@pytest.mark.parametrize("auth_mode", ["openai", "codex"])
def test_secrets_stay_out_of_every_log_and_admin(gateway, upstream, settings, caplog, admin_user, auth_mode):
    settings.AUTH_MODE, settings.GATEWAY_IDENTITY = auth_mode, "key"
    settings.RATE_LIMIT_PER_MINUTE = 3
    caplog.set_level(logging.DEBUG)
    account, gateway_key = trainee("alice")
    link_codex(account, CODEX_TOKEN, refresh_token=CODEX_REFRESH)
    auth = {"Authorization": f"Bearer {gateway_key if auth_mode == 'codex' else OWN_OPENAI_KEY}"}
    with gateway.client() as client:
        client.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user"}]},
            headers={"X-Gateway-Key": gateway_key, **auth},
        )
        client.get("/v1/status/500", headers={"X-Gateway-Key": gateway_key, **auth})
        for _ in range(4):  # into the rate limit
            client.get("/v1/models", headers={"X-Gateway-Key": gateway_key, **auth})
        client.get("/v1/models", headers={"X-Gateway-Key": gateway_key + "x", **auth})
        client.post(
            "/v1/chat/completions",
            content=b"{bad",
            headers={"Content-Type": "application/json", "X-Gateway-Key": gateway_key, **auth},
        )
    gateway.settle()
    admin = Client()
    admin.force_login(admin_user)
    pages = "".join(
        admin.get(url).content.decode()
        for url in (
            "/admin/accounts/account/",
            f"/admin/accounts/account/{account.pk}/change/",
            "/admin/accounts/apikey/",
            "/admin/accounts/codexcredential/",
            f"/admin/accounts/codexcredential/{account.codex_credential.pk}/change/",
        )
    )

    secrets = [OWN_OPENAI_KEY, gateway_key, gateway_key[12:], CODEX_TOKEN, CODEX_REFRESH]
    for place, text in (
        ("process log", everything_logged(caplog)),
        ("access log", access_log_text()),
        ("admin", pages),
    ):
        for secret in secrets:
            assert secret not in text, f"a secret reached the {place}"
    assert RequestLog.objects.count() == 8


STRIPE_SECRET = "whsec_never_shown_0123456789abcdef"


def test_the_stripe_webhook_secret_and_signatures_stay_out_of_every_log_and_admin(
    gateway, upstream, settings, caplog, admin_user
):
    settings.STRIPE_WEBHOOK_SECRET = STRIPE_SECRET
    caplog.set_level(logging.DEBUG)
    good_body, good_headers = signed(checkout("evt_secret_1", "sam"), secret=STRIPE_SECRET)
    bad_body, bad_headers = signed(checkout("evt_secret_2", "sam"), secret="whsec_forged_by_someone")
    with gateway.client() as client:
        accepted = client.post("/billing/stripe/webhook", content=good_body, headers=good_headers)
        refused = client.post("/billing/stripe/webhook", content=bad_body, headers=bad_headers)
        client.get("/v1/models", headers={"X-User-ID": "sam", "Stripe-Signature": good_headers["Stripe-Signature"]})
    gateway.settle()
    admin = Client()
    admin.force_login(admin_user)
    event = StripeEvent.objects.get()
    responses = [
        admin.get(url)
        for url in (
            "/admin/billing/stripeevent/",
            f"/admin/billing/stripeevent/{event.pk}/change/",
            "/admin/accounts/account/",
        )
    ]
    assert [r.status_code for r in responses] == [200, 200, 200]
    pages = "".join(r.content.decode() for r in responses)

    assert (accepted.status_code, refused.status_code) == (200, 400)
    signatures = [headers["Stripe-Signature"].split("v1=")[1] for headers in (good_headers, bad_headers)]
    for place, text in (
        ("process log", everything_logged(caplog)),
        ("access log", access_log_text()),
        ("admin", pages),
    ):
        for secret in [STRIPE_SECRET, *signatures]:
            assert secret not in text, f"a Stripe secret or signature reached the {place}"
