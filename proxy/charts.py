"""Server-rendered SVG for the dashboard: no JavaScript, no CDN, readable without a browser's help."""

from datetime import date

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from proxy.activity import Minute

WIDTH, HEIGHT = 720, 160
_LEFT, _BOTTOM, _TOP = 40, 20, 10


def requests_per_minute(minutes: list[Minute]) -> SafeString:
    """Bars of requests per minute; the parts answered 429 (amber) and 5xx (red) drawn on top."""
    peak = max((m.requests for m in minutes), default=0) or 1
    plot_height = HEIGHT - _BOTTOM - _TOP
    slot = (WIDTH - _LEFT) / max(len(minutes), 1)

    def bar(index: int, count: int, base: int, css: str, label: str) -> tuple:
        height = plot_height * count / peak
        y = HEIGHT - _BOTTOM - plot_height * base / peak - height
        return (css, f"{_LEFT + index * slot + 1:.1f}", f"{y:.1f}", f"{max(slot - 2, 1):.1f}", f"{height:.1f}", label)

    bars = []
    for index, minute in enumerate(minutes):
        if not minute.requests:
            continue
        label = (
            f"{minute.start:%H:%M} UTC: {minute.requests} requests, "
            f"{minute.rate_limited} rate limited, {minute.server_errors} 5xx"
        )
        ok = minute.requests - minute.rate_limited - minute.server_errors
        bars.append(bar(index, minute.requests, 0, "bar", label))
        if minute.rate_limited:
            bars.append(bar(index, minute.rate_limited, ok, "bar-429", label))
        if minute.server_errors:
            bars.append(bar(index, minute.server_errors, ok + minute.rate_limited, "bar-5xx", label))
    ticks = [(index, minutes[index].start) for index in (0, len(minutes) // 2, len(minutes) - 1)] if minutes else []
    return format_html(
        '<svg class="activity-chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        'aria-label="Requests per minute over the last hour">'
        '<line x1="{left}" y1="{base}" x2="{w}" y2="{base}" class="axis"/>'
        '<text x="{label_x}" y="{top_text}" text-anchor="end">{peak}</text>'
        '<text x="{label_x}" y="{base}" text-anchor="end">0</text>'
        "{bars}{ticks}</svg>",
        w=WIDTH,
        h=HEIGHT,
        left=_LEFT,
        base=HEIGHT - _BOTTOM,
        label_x=_LEFT - 4,
        top_text=_TOP + 8,
        peak=peak,
        bars=format_html_join(
            "",
            '<rect class="{}" x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>',
            bars,
        ),
        ticks=format_html_join(
            "",
            '<text x="{}" y="{}" text-anchor="{}">{}</text>',
            (
                (f"{_LEFT + (index + 0.5) * slot:.1f}", HEIGHT - 4, anchor, f"{start:%H:%M}")
                for (index, start), anchor in zip(ticks, ("start", "middle", "end"), strict=True)
            ),
        ),
    )


def requests_per_day(days: list[tuple[date, int, str]]) -> SafeString:
    """Bars of one customer's requests per day of the month; each bar's title tells its day,
    requests and what they came to (`days`: day, requests, a description of use and cost)."""
    peak = max((requests for _, requests, _ in days), default=0) or 1
    plot_height = HEIGHT - _BOTTOM - _TOP
    slot = (WIDTH - _LEFT) / max(len(days), 1)
    bars = (
        (
            f"{_LEFT + index * slot + 1:.1f}",
            f"{HEIGHT - _BOTTOM - plot_height * requests / peak:.1f}",
            f"{max(slot - 2, 1):.1f}",
            f"{plot_height * requests / peak:.1f}",
            f"{day:%b %d}: {requests} requests{', ' + detail if detail else ''}",
        )
        for index, (day, requests, detail) in enumerate(days)
        if requests
    )
    labels = (
        (f"{_LEFT + (index + 0.5) * slot:.1f}", HEIGHT - 4, f"{day:%d}") for index, (day, _, _) in enumerate(days)
    )
    return format_html(
        '<svg class="usage-chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        'aria-label="Requests per day this month">'
        '<line x1="{left}" y1="{base}" x2="{w}" y2="{base}" class="axis"/>'
        '<text x="{label_x}" y="{top_text}" text-anchor="end">{peak}</text>'
        '<text x="{label_x}" y="{base}" text-anchor="end">0</text>'
        "{bars}{labels}</svg>",
        w=WIDTH,
        h=HEIGHT,
        left=_LEFT,
        base=HEIGHT - _BOTTOM,
        label_x=_LEFT - 4,
        top_text=_TOP + 8,
        peak=peak,
        bars=format_html_join(
            "", '<rect class="bar" x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>', bars
        ),
        labels=format_html_join("", '<text x="{}" y="{}" text-anchor="middle">{}</text>', labels),
    )
