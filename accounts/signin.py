"""Customer sign-in to the account page: a one-time link sent by email, or a gateway key.

Nothing is stored for a link but the account's last sign-in time: the link is signed with
SECRET_KEY, carries its own age (LINK_MINUTES at most) and the account's last sign-in as it
was when the link was made, so the first sign-in, by this link or any other way, spends it.
"""

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core import signing
from django.core.cache import cache
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from accounts.identity import KEY_PATTERN
from accounts.models import Account, ApiKey, hash_key

logger = logging.getLogger(__name__)

LINK_MINUTES = 15
_LINK_SALT = "accounts.sign-in-link"

# Attempts allowed per WINDOW: links asked for one address, and attempts of any kind (links
# asked, keys tried) from one IP. Counted in the cache: Redis when configured, else per worker.
WINDOW = timedelta(minutes=15)
LINKS_PER_ADDRESS = 3
ATTEMPTS_PER_IP = 20


class LinkRefused(Exception):
    """Why a sign-in link does not sign anyone in, in words for the person holding it."""


@dataclass(frozen=True)
class Throttled:
    message: str


def _version(account: Account) -> str:
    return account.signed_in_at.isoformat() if account.signed_in_at else ""


def _address(account: Account) -> str:
    """The address a link was sent to, as the link holds it: signed, not encrypted, so hashed."""
    return hashlib.sha256(account.email.lower().encode()).hexdigest()[:20]


def make_link(account: Account) -> str:
    token = signing.dumps(
        {"a": account.pk, "e": _address(account), "v": _version(account)}, salt=_LINK_SALT, compress=True
    )
    return settings.PUBLIC_URL + reverse("accounts-sign-in-link", args=[token])


def account_of_link(token: str) -> Account:
    """The account a valid, unspent link signs in to; LinkRefused otherwise."""
    try:
        claims = signing.loads(token, salt=_LINK_SALT, max_age=timedelta(minutes=LINK_MINUTES))
    except signing.SignatureExpired:
        raise LinkRefused(f"This sign-in link has expired: links work for {LINK_MINUTES} minutes.") from None
    except signing.BadSignature:
        raise LinkRefused("This is not a valid sign-in link: it may have been cut short when copied.") from None
    account = Account.objects.filter(pk=claims.get("a")).first()
    if account is None or not account.email or _address(account) != claims.get("e"):
        raise LinkRefused("This sign-in link is no longer valid.")
    if _version(account) != claims.get("v"):
        raise LinkRefused("This sign-in link was already used: each link works once.")
    return account


def spend_link(token: str) -> Account:
    """Sign-in by link, exactly once: of two uses racing, one wins."""
    account = account_of_link(token)
    spent = Account.objects.filter(pk=account.pk, signed_in_at=account.signed_in_at).update(signed_in_at=timezone.now())
    if not spent:
        raise LinkRefused("This sign-in link was already used: each link works once.")
    return account


def send_link(email: str) -> None:
    """Mail a sign-in link to the account with this address, if there is one. The caller
    answers the same either way: whether an address has an account is nobody's business, so
    the mail goes from a thread of its own and the answer does not wait for the mail server."""
    account = Account.objects.filter(email__iexact=email).exclude(email="").first()
    if account is not None:
        _mailer.submit(_send, account.user_id, account.email, make_link(account))


def _send(user_id: str, address: str, link: str) -> None:
    context = {"link": link, "minutes": LINK_MINUTES, "user_id": user_id}
    try:
        send_mail("Your sign-in link", render_to_string("accounts/sign_in_email.txt", context), None, [address])
    except Exception as error:  # SMTP refusals, timeouts, DNS: nobody is waiting for an answer
        logger.error("sign-in link for account %s not sent: %s", user_id, type(error).__name__)


def settle_mail() -> None:
    """Wait until the links asked for so far are handed to the mail backend (tests)."""
    _mailer.submit(int).result()


_mailer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sign-in-mail")


def account_of_key(raw_key: str) -> Account | None:
    raw_key = raw_key.strip()
    if not KEY_PATTERN.fullmatch(raw_key):
        return None
    key = ApiKey.objects.active().select_related("account").filter(key_hash=hash_key(raw_key)).first()
    return key.account if key else None


def throttle(ip: str, email: str | None = None) -> Throttled | None:
    """Count one attempt from `ip` (and for `email`); the answer when there were too many."""
    minutes = int(WINDOW.total_seconds() // 60)
    if not _allow("ip", ip, ATTEMPTS_PER_IP):
        return Throttled(f"Too many sign-in attempts from your network. Try again in {minutes} minutes.")
    if email is not None and not _allow("email", email.lower(), LINKS_PER_ADDRESS):
        return Throttled(
            f"Several sign-in links were sent to this address already. Use the newest one, "
            f"or ask again in {minutes} minutes."
        )
    return None


def _allow(scope: str, who: str, limit: int) -> bool:
    """A fixed window counter in the cache. If the cache is down, sign-in stays open: keys
    cannot be guessed, and the per-IP limit is back when the cache is."""
    key = f"signin:{scope}:{hashlib.sha256(who.encode()).hexdigest()[:40]}"
    seconds = int(WINDOW.total_seconds())
    try:
        if cache.add(key, 1, seconds):
            return True
        return cache.incr(key) <= limit
    except ValueError:  # expired between add and incr
        cache.set(key, 1, seconds)
        return True
    except Exception as error:
        logger.warning("sign-in throttle unavailable (%s); allowing the attempt", type(error).__name__)
        return True
