"""An operator runs the event from admin in a real browser."""

import re

from django.utils import timezone
from playwright.sync_api import expect

from accounts.models import ApiKey, hash_key
from tests.faulty_upstream import answer as faulty_answer
from tests.personas import busy_hour, trainee


def test_an_operator_logs_in_and_watches_the_dashboard(operator):
    busy_hour(timezone.now())

    operator.log_in()
    operator.screenshot("admin-index", docs="admin-index")
    operator.page.click("text=Dashboard: requests, rate limits, errors, quotas")

    page = operator.page
    expect(page.locator("h1")).to_have_text("Live activity")
    expect(page.locator("#recent tbody tr").first).to_contain_text("alice")
    expect(page.locator("#recent tbody tr").first).to_contain_text("150 ms")
    expect(page.locator("svg.activity-chart rect.bar")).to_have_count(5)
    operator.screenshot("dashboard", docs="admin-dashboard")


def test_an_operator_filters_the_request_log_to_429s(operator):
    busy_hour(timezone.now())

    operator.log_in()
    page = operator.open("/admin/proxy/requestlog/")
    expect(page.locator("td.field-status")).to_have_count(8)
    operator.screenshot("request-log", docs="admin-requests")
    page.click("#changelist-filter >> text=429 rate limited")

    expect(page).to_have_url(re.compile(r"status_class=429"))
    expect(page.locator("td.field-status")).to_have_count(4)
    assert set(page.locator("td.field-status").all_inner_texts()) == {"429"}
    operator.screenshot("request-log-429s", docs="admin-requests-429")


def test_an_operator_opens_a_user_summary(operator):
    busy_hour(timezone.now())

    operator.log_in()
    page = operator.open("/admin/proxy/usersummary/")
    operator.screenshot("user-summaries", docs="admin-user-summaries")
    page.click("#result_list >> text=alice")

    expect(page.locator("h1")).to_have_text("View user summary")
    expect(page.locator(".field-avg_latency")).to_contain_text("150 ms")
    expect(page.locator(".field-rate_limited")).to_contain_text("1")
    operator.screenshot("user-summary-alice", docs="admin-user-summary")
    page.click("text=Requests of alice")
    expect(page.locator("td.field-status")).to_have_count(3)
    operator.screenshot("requests-of-alice")


def test_an_operator_issues_an_api_key_and_sees_it_once(operator):
    account, _ = trainee("alice")

    operator.log_in()
    page = operator.open("/admin/accounts/account/")
    page.check(f"input.action-select[value='{account.pk}']")
    page.select_option("select[name=action]", "issue_api_key")
    operator.screenshot("accounts-action")
    page.click("button[name=index]")

    raw_key = page.locator("code.issued-key").inner_text()
    assert re.fullmatch(r"gk_[A-Za-z0-9_-]{43}", raw_key)
    assert ApiKey.objects.filter(account=account, key_hash=hash_key(raw_key)).exists()
    operator.screenshot("key-issued", docs="admin-key-issued")

    page.go_back()
    page.reload()
    assert raw_key not in page.content()
    page = operator.open(f"/admin/accounts/account/{account.pk}/change/")
    expect(page.locator("#api_keys-group")).to_contain_text(raw_key[:10])
    assert raw_key not in page.content()
    operator.screenshot("account-without-the-key")


def test_an_operator_sees_which_upstream_is_failing(operator, gateway, faulty, clock):
    from proxy import health
    from proxy.models import Route, RouteTarget, Upstream

    bridge = Upstream.objects.create(name="bridge", base_url=faulty[0].url, auth="none", retries=0)
    spare = Upstream.objects.create(name="spare", base_url=faulty[1].url, auth="none", retries=0)
    route = Route.objects.create(model="*")
    RouteTarget.objects.create(route=route, upstream=bridge, priority=1)
    RouteTarget.objects.create(route=route, upstream=spare, priority=2)
    faulty[0].play(then=faulty_answer(503))
    with gateway.client() as client:
        for _ in range(4):
            chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
            assert client.post("/v1/chat/completions", json=chat, headers={"X-User-ID": "ann"}).status_code == 200
    gateway.server.call(health.settle())
    gateway.server.call(health.flush())

    operator.log_in()
    page = operator.open("/admin/proxy/upstream/")

    bridge_row = page.locator("#result_list tbody tr", has_text="bridge")
    expect(bridge_row.locator("td.field-state")).to_have_text("open")
    expect(bridge_row.locator("td.field-last_error")).to_contain_text("answered 503")
    expect(page.locator("#result_list tbody tr", has_text="spare").locator("td.field-state")).to_have_text("closed")
    operator.screenshot("upstreams-one-open", docs="admin-upstreams")

    page = operator.open("/admin/proxy/route/")
    expect(page.locator("#result_list tbody tr", has_text="*")).to_contain_text(re.compile(r"1: bridge .*, 2: spare "))
    operator.screenshot("routes", docs="admin-routes")
