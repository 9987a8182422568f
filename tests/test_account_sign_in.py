"""Customers sign in to /account/ with a one-time emailed link or their gateway key; nothing
tells a stranger which addresses have accounts, and floods are turned away."""

import re
import threading
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta

import pytest
import time_machine
from django.core import signing
from django.core.cache import cache
from django.core.mail.backends.base import BaseEmailBackend
from django.test import Client
from django.utils import timezone

from accounts import signin
from accounts.models import Account, ApiKey
from accounts.sessions import SESSION_KEY
from tests.personas import trainee

pytestmark = pytest.mark.django_db
SIGN_IN = "/account/sign-in/"


@pytest.fixture(autouse=True)
def fresh_throttle(settings):
    settings.PUBLIC_URL = "https://gateway.example.org"
    cache.clear()
    yield
    cache.clear()


class _MailedAtOnce:
    """Links mailed on the request's own thread: these tests are about what is mailed."""

    def submit(self, send, *args):
        future = Future()
        future.set_result(send(*args))
        return future


@pytest.fixture(autouse=True)
def mailed_at_once(monkeypatch):
    monkeypatch.setattr(signin, "_mailer", _MailedAtOnce())


@pytest.fixture
def alice():
    account, raw_key = trainee("alice")
    account.email = "Alice@Example.org"
    account.save()
    return account, raw_key


def link_in(message) -> str:
    return re.search(r"https://gateway\.example\.org(/account/sign-in/link/\S+)", message.body).group(1)


def ask_link(client: Client, email: str):
    return client.post(SIGN_IN, {"email": email})


def page_text(response, email: str) -> str:
    """The page as a stranger compares it: without the address they typed or the form's CSRF token."""
    text = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", response.text)
    return text.replace(email, "ADDRESS").replace(email.upper(), "ADDRESS")


def signed_in(client: Client) -> bool:
    return SESSION_KEY in client.session and client.get("/account/").status_code == 200


def test_an_emailed_link_signs_in_once(alice, mailoutbox):
    client = Client(enforce_csrf_checks=False)
    response = ask_link(client, "alice@example.org")  # any case

    assert response.status_code == 200
    assert "a sign-in link is on its way" in response.text
    assert [m.to for m in mailoutbox] == [["Alice@Example.org"]]
    path = link_in(mailoutbox[0])
    assert "15 minutes" in mailoutbox[0].body

    confirm = client.get(path)  # what a mail scanner opening the link does
    assert confirm.status_code == 200 and "alice" in confirm.text
    assert not signed_in(client)
    response = client.post(path)
    assert response.status_code == 302 and response["Location"] == "/account/"
    page = client.get("/account/")
    assert page.status_code == 200 and "alice" in page.text

    stranger = Client()
    again = stranger.post(path)
    assert again.status_code == 400
    assert "already used" in again.text
    assert not signed_in(stranger)


def test_a_link_does_not_carry_the_address_it_was_sent_to(alice, mailoutbox):
    ask_link(Client(), "alice@example.org")
    payload = link_in(mailoutbox[0]).rsplit("/", 1)[1].split(":")[0]
    claims = signing.b64_decode(payload.lstrip(".").encode())
    claims = zlib.decompress(claims) if payload.startswith(".") else claims

    assert b'"a":' in claims  # what is readable without the key: the account's number and a hash
    assert b"example.org" not in claims.lower() and b"alice" not in claims.lower()


def test_a_link_is_spent_by_any_later_sign_in(alice, mailoutbox):
    account, raw_key = alice
    ask_link(Client(), account.email)
    path = link_in(mailoutbox[0])
    Client().post(SIGN_IN, {"key": raw_key})

    refused = Client().post(path)
    assert refused.status_code == 400 and "already used" in refused.text


def test_an_expired_link_is_refused(alice, mailoutbox):
    ask_link(Client(), "alice@example.org")
    path = link_in(mailoutbox[0])

    with time_machine.travel(timezone.now() + timedelta(minutes=15, seconds=5)):
        client = Client()
        response = client.post(path)

    assert response.status_code == 400
    assert "expired" in response.text and "15 minutes" in response.text
    assert not signed_in(client)


def test_a_tampered_link_is_refused(alice, mailoutbox):
    ask_link(Client(), "alice@example.org")
    path = link_in(mailoutbox[0])
    client = Client()

    for bad in (path[:-3], path.replace("link/", "link/x")):
        response = client.post(bad)
        assert response.status_code == 400 and "not a valid sign-in link" in response.text
    assert not signed_in(client)


def test_a_link_of_a_changed_address_is_refused(alice, mailoutbox):
    account, _ = alice
    ask_link(Client(), account.email)
    account.email = "alice@elsewhere.example"
    account.save()

    assert Client().post(link_in(mailoutbox[0])).status_code == 400


def test_the_answer_never_tells_whether_an_address_has_an_account(alice, mailoutbox):
    known = ask_link(Client(), "alice@example.org")
    unknown = ask_link(Client(), "nobody@example.org")

    assert known.status_code == unknown.status_code == 200
    assert page_text(known, "alice@example.org") == page_text(unknown, "nobody@example.org")
    assert len(mailoutbox) == 1


def test_a_bad_address_gets_the_form_back(mailoutbox):
    response = Client().post(SIGN_IN, {"email": "not an address"})
    assert response.status_code == 400
    assert "Enter a valid email address" in response.text
    assert mailoutbox == []


def test_a_gateway_key_signs_in(alice):
    _, raw_key = alice
    client = Client()
    response = client.post(SIGN_IN, {"key": f"  {raw_key} "})
    assert response.status_code == 302
    assert signed_in(client)


@pytest.mark.parametrize("kind", ["unknown", "revoked", "malformed"])
def test_a_wrong_key_gets_a_clear_answer_and_no_session(alice, kind):
    account, raw_key = alice
    key = {"unknown": "gk_" + "x" * 43, "revoked": raw_key, "malformed": "sk-not-a-gateway-key"}[kind]
    if kind == "revoked":
        ApiKey.objects.filter(account=account).revoke()
    client = Client()

    response = client.post(SIGN_IN, {"key": key})

    assert response.status_code == 400
    assert "This key is not valid" in response.text
    assert key not in response.text
    assert not signed_in(client)


def test_a_flood_from_one_address_is_turned_away_even_with_the_right_key(alice, settings):
    settings.SIGN_IN_ATTEMPTS_PER_IP = 20
    _, raw_key = alice
    client = Client()
    answers = [client.post(SIGN_IN, {"key": "gk_" + f"{n:043d}"}).status_code for n in range(20)]
    assert answers == [400] * 20

    response = client.post(SIGN_IN, {"key": raw_key})
    assert response.status_code == 429
    assert "Too many sign-in attempts" in response.text
    assert not signed_in(client)
    # Another network is not held up by it.
    assert Client(REMOTE_ADDR="192.0.2.7").post(SIGN_IN, {"key": raw_key}).status_code == 302


def test_a_workshop_behind_one_address_signs_in_whatever_its_number(settings):
    settings.SIGN_IN_ATTEMPTS_PER_IP = 20
    keys = [trainee(f"trainee-{n}")[1] for n in range(30)]

    answers = [Client().post(SIGN_IN, {"key": key}).status_code for key in keys]

    assert answers == [302] * 30


def test_links_for_one_address_are_limited_alike_whether_or_not_it_has_an_account(alice, mailoutbox):
    answers = {}
    for email in ("alice@example.org", "nobody@example.org"):
        responses = [
            ask_link(Client(REMOTE_ADDR=f"198.51.100.{n}"), email.upper() if n % 2 else email) for n in range(4)
        ]
        answers[email] = [(r.status_code, page_text(r, email)) for r in responses]

    assert [status for status, _ in answers["alice@example.org"]] == [200, 200, 200, 429]
    assert answers["alice@example.org"] == answers["nobody@example.org"]
    assert "Several sign-in links were sent to this address" in answers["nobody@example.org"][3][1]
    assert len(mailoutbox) == 3


def test_sign_in_forms_need_the_csrf_token(alice):
    _, raw_key = alice
    client = Client(enforce_csrf_checks=True)
    assert client.post(SIGN_IN, {"key": raw_key}).status_code == 403

    page = client.get(SIGN_IN)
    token = page.cookies["csrftoken"].value
    assert client.post(SIGN_IN, {"key": raw_key, "csrfmiddlewaretoken": token}).status_code == 302


def test_sign_in_gives_a_new_session_key(alice):
    client = Client()
    client.get(SIGN_IN)
    client.session.save()
    before = client.session.session_key
    client.post(SIGN_IN, {"key": alice[1]})
    assert client.session.session_key != before


def test_a_session_ends_with_the_key_that_opened_it(alice):
    account, raw_key = alice
    client = Client()
    client.post(SIGN_IN, {"key": raw_key})
    ApiKey.objects.filter(account=account).revoke()
    assert client.get("/account/")["Location"] == SIGN_IN


def test_a_session_ends_when_the_address_its_link_went_to_changes(alice, mailoutbox):
    account, _ = alice
    ask_link(Client(), account.email)
    client = Client()
    client.post(link_in(mailoutbox[0]))
    assert client.get("/account/").status_code == 200
    account.email = "alice@elsewhere.example"
    account.save()
    assert client.get("/account/")["Location"] == SIGN_IN


def test_the_account_page_needs_a_session_and_sign_out_ends_it(alice):
    _, raw_key = alice
    client = Client()
    assert client.get("/account/")["Location"] == SIGN_IN

    client.post(SIGN_IN, {"key": raw_key})
    assert client.get("/account/").status_code == 200
    assert client.post("/account/sign-out/").status_code == 302
    assert client.get("/account/")["Location"] == SIGN_IN


def test_a_deleted_account_ends_its_session(alice):
    account, raw_key = alice
    client = Client()
    client.post(SIGN_IN, {"key": raw_key})
    Account.objects.filter(pk=account.pk).delete()
    assert client.get("/account/")["Location"] == SIGN_IN


class SlowMailServer(BaseEmailBackend):
    """An email backend that holds every message until the test lets it go."""

    release = threading.Event()
    sent: list = []

    def send_messages(self, messages):
        self.release.wait(timeout=10)
        self.sent.extend(messages)
        return len(messages)


def test_the_answer_does_not_wait_for_the_mail_server(alice, settings, monkeypatch):
    settings.EMAIL_BACKEND = f"{__name__}.SlowMailServer"
    monkeypatch.setattr(signin, "_mailer", ThreadPoolExecutor(max_workers=1))
    SlowMailServer.release.clear()
    SlowMailServer.sent.clear()

    known = ask_link(Client(), "alice@example.org")  # answered while the mail server holds the link
    assert known.status_code == 200 and not SlowMailServer.sent

    SlowMailServer.release.set()
    signin.settle_mail()
    assert [message.to for message in SlowMailServer.sent] == [["Alice@Example.org"]]


def test_the_deploy_checks_warn_of_links_that_cannot_reach_customers(settings):
    from django.core.checks import run_checks

    settings.PUBLIC_URL = "http://127.0.0.1:8000"
    settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
    ids = {message.id for message in run_checks(include_deployment_checks=True)}
    assert {"gateway.W003", "gateway.W004"} <= ids

    settings.PUBLIC_URL = "https://gateway.example.org"
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    ids = {message.id for message in run_checks(include_deployment_checks=True)}
    assert not {"gateway.W003", "gateway.W004"} & ids
