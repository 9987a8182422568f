"""Who is signed in to the account page: a customer's session holds their account's id.

Customers are accounts, not Django users: staff sign in to the admin, customers to
/account/, and the two never stand in for each other.
"""

from collections.abc import Callable
from functools import wraps

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone

from accounts.models import Account

SESSION_KEY = "account_id"


def sign_in(request: HttpRequest, account: Account) -> None:
    """Start a new session for `account` (a new session key: a fixated one is worthless)."""
    request.session.cycle_key()
    request.session[SESSION_KEY] = account.pk
    Account.objects.filter(pk=account.pk).update(signed_in_at=timezone.now())


def sign_out(request: HttpRequest) -> None:
    request.session.pop(SESSION_KEY, None)
    request.session.cycle_key()


def signed_in_account(request: HttpRequest) -> Account | None:
    account_id = request.session.get(SESSION_KEY)
    if account_id is None:
        return None
    return Account.objects.filter(pk=account_id).first()


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
