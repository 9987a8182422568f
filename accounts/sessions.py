"""Who is signed in to the account page: a customer's session holds their account's id and
what proved it (the key used, or the address the link was sent to), and ends when that
proof does: a revoked key, a changed address.

Customers are accounts, not Django users: staff sign in to the admin, customers to
/account/, and the two never stand in for each other.
"""

import hashlib
from collections.abc import Callable
from functools import wraps

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

from accounts.models import Account, ApiKey

SESSION_KEY = "account_id"
PROOF_KEY = "account_proof"


def by_key(key: ApiKey) -> str:
    return f"key:{key.pk}"


def email_digest(account: Account) -> str:
    """The account's address as links and sessions hold it: signed, not encrypted, so hashed."""
    return hashlib.sha256(account.email.lower().encode()).hexdigest()[:20]


def by_email(account: Account) -> str:
    return "email:" + email_digest(account)


def sign_in(request: HttpRequest, account: Account, proof: str) -> None:
    """Start a new session for `account` (a new session key: a fixated one is worthless)."""
    request.session.cycle_key()
    request.session[SESSION_KEY] = account.pk
    request.session[PROOF_KEY] = proof


def sign_out(request: HttpRequest) -> None:
    request.session.pop(SESSION_KEY, None)
    request.session.pop(PROOF_KEY, None)
    request.session.cycle_key()


def signed_in_account(request: HttpRequest) -> Account | None:
    account_id = request.session.get(SESSION_KEY)
    if account_id is None:
        return None
    account = Account.objects.filter(pk=account_id).first()
    if account is None or not _still_proven(account, request.session.get(PROOF_KEY, "")):
        sign_out(request)
        return None
    return account


def _still_proven(account: Account, proof: str) -> bool:
    kind, _, value = proof.partition(":")
    if kind == "key":
        return value.isdigit() and account.api_keys.active().filter(pk=int(value)).exists()
    return kind == "email" and bool(account.email) and proof == by_email(account)


def customer_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The view gets `request.account`; a caller without a session goes to the sign-in page."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        account = signed_in_account(request)
        if account is None:
            return redirect(reverse("accounts-sign-in"))
        request.account = account
        return view(request, *args, **kwargs)

    return wrapper
