"""Counts and durations as English reads them: "1 second", "2 seconds", "1,000 requests".

Templates use Django's `pluralize` filter for the same; this is for messages built in Python.
"""


def counted(number: int | float, noun: str, plural: str = "") -> str:
    """`number` with `noun` in the right number; `plural` where adding "s" is wrong."""
    shown = f"{number:,}" if isinstance(number, int) else f"{number:,g}"
    return f"{shown} {noun if number == 1 else plural or noun + 's'}"
