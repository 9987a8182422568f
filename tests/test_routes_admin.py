"""Operators edit upstreams and routes in admin: an upstream's API key is write-only (the page
says only whether one is set), and a pin on an account or a plan must name an upstream."""

import pytest
from django.db import connection

from accounts.models import Account
from billing.models import Plan
from proxy.models import Route, RouteTarget, Upstream

pytestmark = pytest.mark.django_db

KEY = "sk-proj-the-operators-own-key-0123456789"
FORM = {
    "name": "openai",
    "base_url": "https://api.openai.com/",
    "auth": "api_key",
    "api_key": KEY,
    "headers": "{}",
    "connect_timeout": "",
    "first_byte_timeout": "20",
    "first_event_timeout": "",
    "idle_timeout": "",
    "retries": "2",
    "enabled": "on",
}


def stored_key_column(name: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key FROM proxy_upstream WHERE name = %s", [name])
        return cursor.fetchone()[0]


def test_the_api_key_is_stored_encrypted_and_never_shown_again(admin_client):
    added = admin_client.post("/admin/proxy/upstream/add/", FORM)
    upstream = Upstream.objects.get(name="openai")
    pages = [
        admin_client.get("/admin/proxy/upstream/").content.decode(),
        admin_client.get(f"/admin/proxy/upstream/{upstream.pk}/change/").content.decode(),
        admin_client.get(f"/admin/proxy/upstream/{upstream.pk}/history/").content.decode(),
    ]

    assert added.status_code == 302
    assert (upstream.api_key, upstream.base_url, upstream.first_byte_timeout) == (KEY, "https://api.openai.com", 20)
    assert KEY not in stored_key_column("openai")
    assert all(KEY not in page and KEY[:12] not in page for page in pages)
    assert 'alt="True"' in pages[0]  # the list says a key is set
    assert "A key is stored (encrypted)" in pages[1]


def test_a_blank_key_keeps_the_stored_one_and_a_new_one_replaces_it(admin_client):
    admin_client.post("/admin/proxy/upstream/add/", FORM)
    pk = Upstream.objects.get().pk

    kept = admin_client.post(f"/admin/proxy/upstream/{pk}/change/", {**FORM, "api_key": "", "retries": "1"})
    after_keep = Upstream.objects.get()
    replaced = admin_client.post(f"/admin/proxy/upstream/{pk}/change/", {**FORM, "api_key": "sk-proj-new"})

    assert (kept.status_code, replaced.status_code) == (302, 302)
    assert (after_keep.api_key, after_keep.retries) == (KEY, 1)
    assert Upstream.objects.get().api_key == "sk-proj-new"


def test_auth_api_key_without_a_key_and_a_credential_in_headers_are_refused(admin_client):
    keyless = admin_client.post("/admin/proxy/upstream/add/", {**FORM, "api_key": ""})
    header = admin_client.post("/admin/proxy/upstream/add/", {**FORM, "headers": '{"Authorization": "Bearer x"}'})
    reserved = admin_client.post("/admin/proxy/upstream/add/", {**FORM, "name": "default"})

    assert "auth api_key needs an API key" in keyless.content.decode()
    assert "carries a credential" in header.content.decode()
    assert "is the upstream at OPENCLAW_URL" in reserved.content.decode()
    assert not Upstream.objects.exists()


def test_a_route_and_its_targets_are_edited_on_one_page(admin_client):
    bridge = Upstream.objects.create(name="bridge", base_url="http://bridge.test")
    openai = Upstream.objects.create(name="openai", base_url="https://api.openai.com", auth="api_key", api_key=KEY)
    form = {
        "model": "gpt-4o",
        "targets-TOTAL_FORMS": "2",
        "targets-INITIAL_FORMS": "0",
        "targets-0-upstream": bridge.pk,
        "targets-0-model": "",
        "targets-0-priority": "1",
        "targets-0-weight": "1",
        "targets-1-upstream": openai.pk,
        "targets-1-model": "gpt-4o-2024-08-06",
        "targets-1-priority": "2",
        "targets-1-weight": "1",
    }

    added = admin_client.post("/admin/proxy/route/add/", form)
    listing = admin_client.get("/admin/proxy/route/").content.decode()

    assert added.status_code == 302
    assert list(RouteTarget.objects.order_by("priority").values_list("upstream__name", "model")) == [
        ("bridge", ""),
        ("openai", "gpt-4o-2024-08-06"),
    ]
    assert "1: bridge (caller’s model), 2: openai (gpt-4o-2024-08-06)" in listing
    assert KEY not in listing
    assert Route.objects.get().model == "gpt-4o"


def test_a_pin_on_an_account_or_a_plan_must_name_an_upstream(admin_client):
    Upstream.objects.create(name="acme-bridge", base_url="https://llm.acme.example")
    account = Account.objects.create(user_id="acme")
    plan, _ = Plan.objects.update_or_create(tier="tier3", defaults={})
    account_form = {"user_id": "acme", "email": "", "name": "", "tier": "", "stripe_customer_id": ""}
    account_form.update({f"{prefix}-{n}": "0" for prefix in ("api_keys", "tier_changes") for n in ("TOTAL_FORMS",)})
    account_form.update({f"{p}-INITIAL_FORMS": "0" for p in ("api_keys", "tier_changes")})
    plan_form = {"tier": "tier3", "stripe_price_id": ""}

    refused = admin_client.post(
        f"/admin/accounts/account/{account.pk}/change/", {**account_form, "pinned_upstream": "acme"}
    )
    pinned = admin_client.post(
        f"/admin/accounts/account/{account.pk}/change/", {**account_form, "pinned_upstream": "acme-bridge"}
    )
    plan_refused = admin_client.post(f"/admin/billing/plan/{plan.pk}/change/", {**plan_form, "pinned_upstream": "x"})
    plan_pinned = admin_client.post(
        f"/admin/billing/plan/{plan.pk}/change/", {**plan_form, "pinned_upstream": "acme-bridge"}
    )

    assert "No upstream is named &#x27;acme&#x27;. Upstreams: acme-bridge." in refused.content.decode()
    assert "No upstream is named &#x27;x&#x27;" in plan_refused.content.decode()
    assert (pinned.status_code, plan_pinned.status_code) == (302, 302)
    assert Account.objects.get().pinned_upstream == "acme-bridge"
    assert Plan.objects.get(tier="tier3").pinned_upstream == "acme-bridge"
