"""The customer's own pages at /account/: sign-in, usage, keys, Codex session.

Server-rendered, usable without JavaScript, every change a POST under CSRF. Buying and
managing a plan are billing's views (billing.views), reached from the account page.
"""

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.module_loading import import_string
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import codex, identity, sessions, signin
from accounts.forms import CodexSessionForm, EmailSignInForm, KeySignInForm, NewKeyForm
from accounts.models import ApiKey, CodexCredential
from gateway_project.lib.client_addresses import client_ip

MAX_ACTIVE_KEYS = 20


@never_cache
@sensitive_post_parameters("key")
@require_http_methods(["GET", "POST"])
def sign_in(request: HttpRequest) -> HttpResponse:
    if sessions.signed_in_account(request) is not None:
        return redirect("accounts-home")
    email_form, key_form = EmailSignInForm(), KeySignInForm()
    if request.method == "GET":
        return _sign_in_page(request, email_form, key_form)
    ip = client_ip(request)
    if "email" in request.POST:
        email_form = EmailSignInForm(request.POST)
        if not email_form.is_valid():
            return _sign_in_page(request, email_form, key_form, status=400)
        email = email_form.cleaned_data["email"]
        throttled = signin.ip_throttled(ip) or signin.link_throttled(email)
        if throttled:
            return _sign_in_page(request, email_form, key_form, error=throttled.message, status=429)
        signin.count_attempt(ip)
        signin.send_link(email)
        return render(request, "accounts/link_sent.html", {"email": email, "minutes": signin.LINK_MINUTES})
    key_form = KeySignInForm(request.POST)
    if not key_form.is_valid():
        return _sign_in_page(request, email_form, key_form, status=400)
    throttled = signin.ip_throttled(ip)
    if throttled:
        return _sign_in_page(request, email_form, KeySignInForm(), error=throttled.message, status=429)
    key = signin.key_of(key_form.cleaned_data["key"])
    if key is None:
        signin.count_attempt(ip)
        error = "This key is not valid: it is unknown or was revoked."
        return _sign_in_page(request, email_form, KeySignInForm(), error=error, status=400)
    sessions.sign_in(request, key.account, sessions.by_key(key))
    return redirect("accounts-home")


def _sign_in_page(request, email_form, key_form, *, error: str = "", status: int = 200) -> HttpResponse:
    context = {"email_form": email_form, "key_form": key_form, "error": error, "minutes": signin.LINK_MINUTES}
    return render(request, "accounts/sign_in.html", context, status=status)


@never_cache
@require_http_methods(["GET", "POST"])
def sign_in_link(request: HttpRequest, token: str) -> HttpResponse:
    """GET asks for a press of a button, POST signs in: mail scanners that open links must
    not spend them."""
    try:
        account = signin.account_of_link(token) if request.method == "GET" else signin.spend_link(token)
    except signin.LinkRefused as refusal:
        return render(request, "accounts/link_refused.html", {"reason": str(refusal)}, status=400)
    if request.method == "GET":
        return render(request, "accounts/link_confirm.html", {"account": account})
    sessions.sign_in(request, account, sessions.by_email(account))
    return redirect("accounts-home")


@require_POST
def sign_out(request: HttpRequest) -> HttpResponse:
    sessions.sign_out(request)
    messages.info(request, "You are signed out.")
    return redirect("accounts-sign-in")


@never_cache
@require_GET
@sessions.customer_required
def home(request: HttpRequest) -> HttpResponse:
    return _home_page(request)


def _home_page(request: HttpRequest, *, new_key: str = "", key_form=None, codex_form=None, status=200):
    account = request.account
    context = {
        "account": account,
        # Sections of other apps (billing: use and plan), listed in settings.
        "sections": [import_string(path)(request, account) for path in settings.ACCOUNT_PAGE_SECTIONS],
        "keys": list(account.api_keys.order_by("revoked_at", "-created_at")),
        "codex": CodexCredential.objects.filter(account=account).first(),
        "now": timezone.now(),
        "new_key": new_key,
        "key_form": key_form or NewKeyForm(),
        "codex_form": codex_form or CodexSessionForm(),
        # Every worker sees a revocation at its next check of the callers' version.
        "revoked_at_once": not settings.KEY_CACHE_SECONDS or not settings.CHANGE_CHECK_MS,
        "codex_mode": settings.AUTH_MODE == "codex",
    }
    return render(request, "accounts/home.html", context, status=status)


@never_cache
@require_POST
@sessions.customer_required
def create_key(request: HttpRequest) -> HttpResponse:
    form = NewKeyForm(request.POST)
    if form.is_valid() and request.account.api_keys.active().count() >= MAX_ACTIVE_KEYS:
        form.add_error(None, f"You have {MAX_ACTIVE_KEYS} active keys: revoke one you no longer use first.")
    if not form.is_valid():
        return _home_page(request, key_form=form, status=400)
    _, raw_key = ApiKey.objects.issue(request.account, name=form.cleaned_data["name"])
    # Rendered here, never redirected to: the key is in this one response and nowhere else.
    return _home_page(request, new_key=raw_key)


@require_POST
@sessions.customer_required
def revoke_key(request: HttpRequest, key_id: int) -> HttpResponse:
    key = get_object_or_404(ApiKey, pk=key_id, account=request.account)
    if ApiKey.objects.filter(pk=key.pk).revoke():
        identity.forget_keys([key.key_hash])
        messages.success(request, f"Key {key.prefix}... is revoked.")
    return redirect("accounts-home")


@require_POST
@sessions.customer_required
def link_codex(request: HttpRequest) -> HttpResponse:
    form = CodexSessionForm(request.POST, request.FILES)
    if form.is_valid():
        try:
            tokens = codex.read_tokens(form.cleaned_data["auth_json"])
        except ValueError as error:
            form.add_error("auth_json", f"{error} Choose the auth.json that `codex login` wrote.")
    if not form.is_valid():
        return _home_page(request, codex_form=form, status=400)
    credential = codex.store_session(request.account, tokens, timezone.now())
    _forget_account_keys(request)
    messages.success(request, f"Your Codex session is linked; it expires {credential.expires_at:%Y-%m-%d %H:%M} UTC.")
    return redirect("accounts-home")


@require_POST
@sessions.customer_required
def unlink_codex(request: HttpRequest) -> HttpResponse:
    deleted, _ = CodexCredential.objects.filter(account=request.account).delete()
    if deleted:
        _forget_account_keys(request)
        messages.success(request, "Your Codex session is unlinked: the gateway no longer holds its tokens.")
    return redirect("accounts-home")


def _forget_account_keys(request: HttpRequest) -> None:
    """The account's keys carry its Codex session in the key cache: look them up afresh."""
    identity.forget_keys(list(request.account.api_keys.active().values_list("key_hash", flat=True)))
