"""Settings kept as plain values for the request path follow every change Django announces."""

from django.conf import settings as django_settings
from django.test import override_settings

from gateway_project.lib import from_settings


def test_a_setting_changed_by_a_test_is_read_at_once(settings):
    assert from_settings.get("RATE_LIMIT_PER_MINUTE") == django_settings.RATE_LIMIT_PER_MINUTE

    settings.RATE_LIMIT_PER_MINUTE = 7
    first = from_settings.get("RATE_LIMIT_PER_MINUTE")
    settings.RATE_LIMIT_PER_MINUTE = 9

    assert (first, from_settings.get("RATE_LIMIT_PER_MINUTE")) == (7, 9)


def test_a_setting_overridden_for_a_while_comes_back_after():
    before = from_settings.get("KEY_CACHE_SECONDS")

    with override_settings(KEY_CACHE_SECONDS=before + 3):
        during = from_settings.get("KEY_CACHE_SECONDS")

    assert (during, from_settings.get("KEY_CACHE_SECONDS")) == (before + 3, before)


def test_a_value_held_from_settings_follows_a_change(settings):
    reads = []

    @from_settings.held
    def doubled() -> int:
        reads.append(1)
        return settings.RATE_LIMIT_PER_MINUTE * 2

    settings.RATE_LIMIT_PER_MINUTE = 7
    first, again = doubled(), doubled()
    settings.RATE_LIMIT_PER_MINUTE = 9

    assert (first, again, doubled(), len(reads)) == (14, 14, 18, 2)
