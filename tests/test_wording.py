"""Counts and durations read as English."""

import pytest

from gateway_project.lib.wording import counted


@pytest.mark.parametrize(
    ("number", "noun", "plural", "text"),
    [
        (1, "second", "", "1 second"),
        (0, "second", "", "0 seconds"),
        (2, "minute", "", "2 minutes"),
        (1_000, "request", "", "1,000 requests"),
        (1.0, "second", "", "1 second"),
        (0.5, "second", "", "0.5 seconds"),
        (90.0, "second", "", "90 seconds"),
        (1, "user's total", "users' totals", "1 user's total"),
        (3, "user's total", "users' totals", "3 users' totals"),
    ],
)
def test_a_count_reads_as_english(number, noun, plural, text):
    assert counted(number, noun, plural) == text
