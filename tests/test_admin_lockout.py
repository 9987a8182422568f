"""Staff sign-in locks a username out after repeated failures (django-axes).

Every sign-in here posts the admin's real login form with its CSRF token, as a browser does.
"""

import html
import logging
import re
from datetime import timedelta

import pytest
import time_machine
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from tests.test_configuration import start_django

LOGIN = "/admin/login/"
ADA_PASSWORD = "ada-right-horse-battery"
GRACE_PASSWORD = "grace-right-staple-7"
WRONG = [f"guess-{n:02d}-nope" for n in range(20)]


@pytest.fixture(autouse=True)
def _fast_hashes(settings):
    # Each sign-in hashes a password; the real hasher spends ~0.4 s on it by design.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def ada(db) -> User:
    return User.objects.create_user("ada", password=ADA_PASSWORD, is_staff=True)


@pytest.fixture
def grace(db) -> User:
    return User.objects.create_user("grace", password=GRACE_PASSWORD, is_staff=True)


@pytest.fixture
def clock():
    """A fixed instant close to the real one (admin sessions must not expire), clock stopped."""
    with time_machine.travel(timezone.now().replace(microsecond=0), tick=False) as traveller:
        yield traveller


@pytest.fixture
def locked_out(ada, clock) -> Client:
    """The browser that just sent ada's username with twenty wrong passwords."""
    browser = Client(enforce_csrf_checks=True)
    for guess in WRONG:
        sign_in(browser, "ada", guess)
    return browser


def _form_token(page: str) -> str:
    [token] = re.findall(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    return token


def sign_in(browser: Client, username: str, password: str):
    """Open the login page, then post its form (an anonymous browser only)."""
    token = _form_token(browser.get(LOGIN).content.decode())
    form = {"csrfmiddlewaretoken": token, "username": username, "password": password, "next": "/admin/"}
    return browser.post(LOGIN, form)


def text(page: str) -> str:
    """What a reader sees: the page without tags, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def lockout_settings(**variables: str) -> str:
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "from axes.helpers import get_cool_off; print(settings.AXES_FAILURE_LIMIT, get_cool_off())"
    )
    result = start_django(code=code, **variables)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_limit_and_the_lockout_time_come_from_the_environment():
    assert lockout_settings(ADMIN_LOGIN_FAILURE_LIMIT="", ADMIN_LOCKOUT_MINUTES="") == "10 0:30:00"
    assert lockout_settings(ADMIN_LOGIN_FAILURE_LIMIT="5", ADMIN_LOCKOUT_MINUTES="90") == "5 1:30:00"
    assert lockout_settings(ADMIN_LOCKOUT_MINUTES="7") == "10 0:07:00"


def test_twenty_wrong_passwords_lock_that_username_out_while_other_staff_still_sign_in(ada, grace, settings):
    limit = settings.AXES_FAILURE_LIMIT
    browser = Client(enforce_csrf_checks=True)  # one browser: one client IP for both

    statuses = [sign_in(browser, "ada", guess).status_code for guess in WRONG]
    right = sign_in(browser, "ada", ADA_PASSWORD)

    assert statuses == [200] * (limit - 1) + [429] * (len(WRONG) - limit + 1)
    assert right.status_code == 429
    assert "the username ada is locked" in text(right.content.decode())
    assert "sessionid" not in right.cookies
    assert "_auth_user_id" not in browser.session

    other = sign_in(browser, "grace", GRACE_PASSWORD)

    assert other.status_code == 302
    assert other["Location"] == "/admin/"
    assert browser.session["_auth_user_id"] == str(grace.pk)
    assert browser.get("/admin/").status_code == 200


def test_the_lockout_page_says_why_for_how_long_and_who_can_lift_it(locked_out):
    response = sign_in(locked_out, "ada", ADA_PASSWORD)
    page = response.content.decode()
    shown = text(page)

    assert response.status_code == 429
    assert "Too many failed sign-ins: the username ada is locked after 10 failed attempts." in shown
    assert "It can sign in again 30 minutes after the failed attempt that locked it." in shown
    assert "every attempt is refused, even with the right password" in shown
    assert "under Axes › Access attempts" in shown
    assert "python manage.py axes_reset_username ada" in shown
    assert 'id="site-name"' in page  # the admin's header and look
    assert 'href="/admin/login/"' in page
    for secret in [*WRONG, ADA_PASSWORD]:
        assert secret not in page


def test_the_lockout_page_escapes_the_typed_username(db, settings):
    settings.AXES_FAILURE_LIMIT = 1
    browser = Client(enforce_csrf_checks=True)

    page = sign_in(browser, "<b>x</b>", "guess").content.decode()

    assert "<b>x</b>" not in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page


def test_a_username_without_an_account_locks_the_same_way(db, settings):
    """The lockout says nothing about whether the account exists."""
    browser = Client(enforce_csrf_checks=True)

    statuses = [sign_in(browser, "nobody", guess).status_code for guess in WRONG]

    limit = settings.AXES_FAILURE_LIMIT
    assert statuses == [200] * (limit - 1) + [429] * (len(WRONG) - limit + 1)


def test_operators_see_the_locked_username_in_admin(locked_out, admin_client, settings):
    response = admin_client.get("/admin/axes/accessattempt/?locked_out=yes")

    assert response.status_code == 200
    rows = [(row.username, row.failures_since_start) for row in response.context["cl"].result_list]
    assert rows == [("ada", settings.AXES_FAILURE_LIMIT)]  # guesses while locked are refused unchecked
    assert "Locked Out" in response.content.decode()


def test_no_password_tried_is_stored_or_logged(locked_out, admin_client, caplog):
    caplog.set_level(logging.DEBUG)
    sign_in(locked_out, "ada", ADA_PASSWORD)  # refused, while locked
    attempt = AccessAttempt.objects.get()

    stored = "\n".join(
        str(getattr(row, field.attname))
        for model in (AccessAttempt, AccessLog, AccessFailureLog)
        for row in model.objects.all()
        for field in model._meta.fields
    )
    change_page = admin_client.get(f"/admin/axes/accessattempt/{attempt.pk}/change/").content.decode()

    assert attempt.post_data.count("password=********************") >= 1
    for secret in [*WRONG, ADA_PASSWORD]:
        assert secret not in stored
        assert secret not in change_page
        assert secret not in caplog.text


def test_after_the_cool_off_the_right_password_works_again(locked_out, clock):
    clock.shift(timedelta(minutes=30, seconds=1))

    response = sign_in(locked_out, "ada", ADA_PASSWORD)

    assert response.status_code == 302
    assert not AccessAttempt.objects.filter(username="ada").exists()


def test_attempts_while_locked_out_do_not_prolong_the_lockout(locked_out, clock):
    clock.shift(timedelta(minutes=29))
    early = sign_in(locked_out, "ada", ADA_PASSWORD)
    clock.shift(timedelta(minutes=1, seconds=1))  # 30 minutes after the guess that locked ada
    after_waiting = sign_in(locked_out, "ada", ADA_PASSWORD)

    assert [early.status_code, after_waiting.status_code] == [429, 302]


def test_attempts_keep_no_raw_address(locked_out):
    (attempt,) = AccessAttempt.objects.filter(username="ada")
    assert attempt.ip_address != "127.0.0.1" and attempt.ip_address.startswith("fd")


def test_a_success_clears_the_failures_before_it(ada, settings):
    limit = settings.AXES_FAILURE_LIMIT
    browser = Client(enforce_csrf_checks=True)
    for guess in WRONG[: limit - 1]:
        sign_in(browser, "ada", guess)

    assert sign_in(browser, "ada", ADA_PASSWORD).status_code == 302
    assert not AccessAttempt.objects.exists()

    later = Client(enforce_csrf_checks=True)
    statuses = [sign_in(later, "ada", guess).status_code for guess in WRONG[:limit]]
    assert statuses == [200] * (limit - 1) + [429]


def test_an_operator_lifts_the_lock_in_admin(locked_out, admin_client):
    attempt = AccessAttempt.objects.get(username="ada")

    admin_client.post(
        "/admin/axes/accessattempt/", {"action": "delete_selected", "_selected_action": [attempt.pk], "post": "yes"}
    )

    assert not AccessAttempt.objects.exists()
    assert sign_in(locked_out, "ada", ADA_PASSWORD).status_code == 302


def test_axes_reset_username_lifts_the_lock(locked_out, capsys):
    call_command("axes_reset_username", "ada")

    assert capsys.readouterr().out == "1 attempts removed.\n"
    assert sign_in(locked_out, "ada", ADA_PASSWORD).status_code == 302


def test_the_served_gateway_locks_out_through_its_async_middleware(gateway, settings):
    # Served over plain http on loopback: the browser would not send secure cookies back.
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    User.objects.create_user("ada", password=ADA_PASSWORD, is_staff=True)
    limit = settings.AXES_FAILURE_LIMIT

    def post_login(browser, password: str):
        token = _form_token(browser.get(LOGIN).text)
        return browser.post(LOGIN, data={"csrfmiddlewaretoken": token, "username": "ada", "password": password})

    with gateway.client() as browser:
        statuses = [post_login(browser, guess).status_code for guess in WRONG[:limit]]
        right = post_login(browser, ADA_PASSWORD)

    assert statuses == [200] * (limit - 1) + [429]
    assert right.status_code == 429
    assert "python manage.py axes_reset_username ada" in text(right.text)
    assert "sessionid" not in right.cookies
