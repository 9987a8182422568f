"""Server-rendered SVG charts for the dashboard and the account page: no JavaScript, no CDN."""

from datetime import date

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from gateway_project.lib.wording import counted

WIDTH, HEIGHT = 720, 160
_LEFT, _BOTTOM, _TOP = 40, 20, 10


class _Plot:
    """Bars in slots along the x axis, scaled to the tallest."""

    def __init__(self, slots: int, peak: int) -> None:
        self.peak = peak or 1
        self.slot = (WIDTH - _LEFT) / max(slots, 1)
        self.height = HEIGHT - _BOTTOM - _TOP

    def bar(self, index: int, count: int, base: int, css: str, title: str) -> tuple:
        """A bar of `count` standing on `base` (bars stacked in one slot)."""
        height = self.height * count / self.peak
        y = HEIGHT - _BOTTOM - self.height * base / self.peak - height
        x = _LEFT + index * self.slot + 1
        return (css, f"{x:.1f}", f"{y:.1f}", f"{max(self.slot - 2, 1):.1f}", f"{height:.1f}", title)

    def label(self, index: int, anchor: str, text: str) -> tuple:
        return (f"{_LEFT + (index + 0.5) * self.slot:.1f}", HEIGHT - 4, anchor, text)

    def svg(self, css: str, description: str, bars: list[tuple], labels: list[tuple]) -> SafeString:
        return format_html(
            '<svg class="{css}" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{description}">'
            '<line x1="{left}" y1="{base}" x2="{w}" y2="{base}" class="axis"/>'
            '<text x="{label_x}" y="{top_text}" text-anchor="end">{peak}</text>'
            '<text x="{label_x}" y="{base}" text-anchor="end">0</text>'
            "{bars}{labels}</svg>",
            css=css,
            description=description,
            w=WIDTH,
            h=HEIGHT,
            left=_LEFT,
            base=HEIGHT - _BOTTOM,
            label_x=_LEFT - 4,
            top_text=_TOP + 8,
            peak=self.peak,
            bars=format_html_join(
                "", '<rect class="{}" x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>', bars
            ),
            labels=format_html_join("", '<text x="{}" y="{}" text-anchor="{}">{}</text>', labels),
        )


def requests_per_minute(minutes: list) -> SafeString:
    """Bars of requests per minute (proxy.activity.Minute); the parts answered 429 (amber) and the
    upstream errors (red) drawn on top."""
    plot = _Plot(len(minutes), max((m.requests for m in minutes), default=0))
    bars = []
    for index, minute in enumerate(minutes):
        if not minute.requests:
            continue
        title = (
            f"{minute.start:%H:%M} UTC: {counted(minute.requests, 'request')}, "
            f"{minute.rate_limited} rate limited, {minute.upstream_errors} upstream errors"
        )
        ok = minute.requests - minute.rate_limited - minute.upstream_errors
        bars.append(plot.bar(index, minute.requests, 0, "bar", title))
        if minute.rate_limited:
            bars.append(plot.bar(index, minute.rate_limited, ok, "bar-429", title))
        if minute.upstream_errors:
            bars.append(plot.bar(index, minute.upstream_errors, ok + minute.rate_limited, "bar-5xx", title))
    ticks = [(index, minutes[index].start) for index in (0, len(minutes) // 2, len(minutes) - 1)] if minutes else []
    labels = [
        plot.label(index, anchor, f"{start:%H:%M}")
        for (index, start), anchor in zip(ticks, ("start", "middle", "end"), strict=True)
    ]
    return plot.svg("activity-chart", "Requests per minute over the last hour", bars, labels)


def requests_per_day(days: list[tuple[date, int, str]]) -> SafeString:
    """Bars of one customer's requests per day of the month; each bar's title tells its day,
    requests and what they came to (`days`: day, requests, a description of use and cost)."""
    plot = _Plot(len(days), max((requests for _, requests, _ in days), default=0))
    bars = [
        plot.bar(index, requests, 0, "bar", _day_title(day, requests, detail))
        for index, (day, requests, detail) in enumerate(days)
        if requests
    ]
    labels = [plot.label(index, "middle", f"{day:%d}") for index, (day, _, _) in enumerate(days)]
    return plot.svg("usage-chart", "Requests per day this month", bars, labels)


def _day_title(day: date, requests: int, detail: str) -> str:
    return f"{day:%b %d}: {counted(requests, 'request')}" + (f", {detail}" if detail else "")
