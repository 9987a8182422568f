"""Settings kept as plain values for the request path follow every change Django announces."""

from django.conf import settings as django_settings
from django.test import override_settings

from gateway_project.lib import hot_settings


def test_a_setting_changed_by_a_test_is_read_at_once(settings):
    assert hot_settings.get("RATE_LIMIT_PER_MINUTE") == django_settings.RATE_LIMIT_PER_MINUTE

    settings.RATE_LIMIT_PER_MINUTE = 7
    first = hot_settings.get("RATE_LIMIT_PER_MINUTE")
    settings.RATE_LIMIT_PER_MINUTE = 9

    assert (first, hot_settings.get("RATE_LIMIT_PER_MINUTE")) == (7, 9)


def test_a_setting_overridden_for_a_while_comes_back_after():
    before = hot_settings.get("KEY_CACHE_SECONDS")

    with override_settings(KEY_CACHE_SECONDS=before + 3):
        during = hot_settings.get("KEY_CACHE_SECONDS")

    assert (during, hot_settings.get("KEY_CACHE_SECONDS")) == (before + 3, before)
