"""Who is on the other end of a request: the client's address, and its keyed hash.

The raw address is never stored: the access log, sign-in throttles and staff lockouts keep
`hash_ip`, an HMAC under a server key, which correlates one client's requests and is useless
without the key.
"""

import functools
import hashlib
import hmac
import ipaddress

from django.conf import settings
from django.http import HttpRequest

from gateway_project.lib import from_settings


def client_ip(request: HttpRequest) -> str:
    header = from_settings.get("CLIENT_IP_HEADER")
    if header:
        forwarded = request.headers.get(header, "").split(",")[0].strip()
        if forwarded:
            return forwarded
    return request.META.get("REMOTE_ADDR") or ""


def hash_ip(ip: str) -> str:
    """Keyed, truncated hash: correlates one client's requests, useless without the key."""
    return _keyed_hash(from_settings.get("IP_HASH_KEY"), ip)


@functools.lru_cache(maxsize=4096)  # a call's client is usually one of a few seen lately
def _keyed_hash(key: str, ip: str) -> str:
    return hmac.new(key.encode(), ip.encode(), hashlib.sha256).hexdigest()[:8]


def pseudonymous_client_ip(request: HttpRequest) -> str:
    """For stores that want an address (django-axes' AXES_CLIENT_IP_CALLABLE): the keyed hash
    of the client's address, shaped as a private IPv6 address (fd00::/8). One client always
    gets the same one; nobody gets the real address back without the key."""
    digest = hmac.new(settings.IP_HASH_KEY.encode(), client_ip(request).encode(), hashlib.sha256).digest()
    return str(ipaddress.IPv6Address(b"\xfd" + digest[:15]))
