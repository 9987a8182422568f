"""Customer sign-in to the account page: a one-time link sent by email, or a gateway key.

Nothing is stored for a link but the account's last sign-in time: the link is signed with
SECRET_KEY, carries its own age (LINK_MINUTES at most) and the account's last sign-in as it
was when the link was made, so the first sign-in, by this link or any other way, spends it.
"""

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
from django.utils.crypto import salted_hmac

from accounts import sessions
from accounts.identity import KEY_PATTERN
from accounts.models import Account, ApiKey, hash_key
from gateway_project.lib.client_addresses import hash_ip
from gateway_project.lib.wording import counted

logger = logging.getLogger(__name__)

LINK_MINUTES = 15
_LINK_SALT = "accounts.sign-in-link"

# Allowed per WINDOW: links asked for one address, and from one IP links asked for and keys
# that failed (settings.SIGN_IN_ATTEMPTS_PER_IP). Counted in the cache: Redis when configured,
# else per worker; under keyed hashes, never the address itself.
WINDOW = timedelta(minutes=15)
LINKS_PER_ADDRESS = 3


class LinkRefused(Exception):
    """Why a sign-in link does not sign anyone in, in words for the person holding it."""


@dataclass(frozen=True)
class Throttled:
    message: str


def _version(account: Account) -> str:
    return account.signed_in_at.isoformat() if account.signed_in_at else ""


def make_link(account: Account) -> str:
    token = signing.dumps(
        {"a": account.pk, "e": sessions.email_digest(account), "v": _version(account)}, salt=_LINK_SALT, compress=True
    )
    return settings.PUBLIC_URL + reverse("accounts-sign-in-link", args=[token])


def account_of_link(token: str) -> Account:
    """The account a valid, unspent link signs in to; LinkRefused otherwise."""
    try:
        claims = signing.loads(token, salt=_LINK_SALT, max_age=timedelta(minutes=LINK_MINUTES))
    except signing.SignatureExpired:
        raise LinkRefused(f"This sign-in link has expired: links work for {counted(LINK_MINUTES, 'minute')}.") from None
    except signing.BadSignature:
        raise LinkRefused("This is not a valid sign-in link: it may have been cut short when copied.") from None
    account = Account.objects.filter(pk=claims.get("a")).first()
    if account is None or not account.email or sessions.email_digest(account) != claims.get("e"):
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


def key_of(raw_key: str) -> ApiKey | None:
    """The active key pasted, if it is one; signing in with it spends any emailed link."""
    raw_key = raw_key.strip()
    if not KEY_PATTERN.fullmatch(raw_key):
        return None
    key = ApiKey.objects.active_with_hash(hash_key(raw_key)).select_related("account").first()
    if key is not None:
        Account.objects.filter(pk=key.account_id).update(signed_in_at=timezone.now())
    return key


def ip_throttled(ip: str) -> Throttled | None:
    """Whether `ip` used up its attempts (links asked for, keys that failed). Sign-ins that work
    are not counted: a workshop behind one address is not locked out by its own trainees."""
    if _count("ip", hash_ip(ip)) < settings.SIGN_IN_ATTEMPTS_PER_IP:
        return None
    return Throttled(f"Too many sign-in attempts from your network. Try again in {_minutes()}.")


def count_attempt(ip: str) -> None:
    _add("ip", hash_ip(ip))


def link_throttled(email: str) -> Throttled | None:
    """Count a link asked for `email`; too many: the same answer whether or not it has an account."""
    if _add("email", email.lower()) <= LINKS_PER_ADDRESS:
        return None
    return Throttled(
        f"Several sign-in links were sent to this address already. Use the newest one, or ask again in {_minutes()}."
    )


def _minutes() -> str:
    return counted(int(WINDOW.total_seconds() // 60), "minute")


def _cache_key(scope: str, who: str) -> str:
    return f"signin:{scope}:{salted_hmac('accounts.signin', who).hexdigest()[:40]}"


def _count(scope: str, who: str) -> int:
    try:
        return cache.get(_cache_key(scope, who), 0)
    except Exception as error:
        logger.warning("sign-in throttle unavailable (%s); allowing the attempt", type(error).__name__)
        return 0


def _add(scope: str, who: str) -> int:
    """One more in a fixed window counter; the count. If the cache is down, sign-in stays open:
    keys cannot be guessed, and the limits are back when the cache is."""
    key, seconds = _cache_key(scope, who), int(WINDOW.total_seconds())
    try:
        if cache.add(key, 1, seconds):
            return 1
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, seconds)
        return 1
    except Exception as error:
        logger.warning("sign-in throttle unavailable (%s); allowing the attempt", type(error).__name__)
        return 0
