"""gateway_breaker_state, read when scraped from the state every process shares (Redis, else
the database's mirror, proxy.health_view): right whichever worker answers the scrape, where
a gauge each worker set would show that worker's own view. Registered by proxy.metrics."""

import logging
from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

NAME = "gateway_breaker_state"
HELP = (
    "Circuit breaker of each upstream: 0 closed, 1 open, 2 probing (cool-down over: the next call or probe tries it)."
)
VALUES = {"closed": 0, "open": 1, "probing": 2}


class BreakerStates(Collector):
    def __init__(self) -> None:
        self._failing = False

    def describe(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily(NAME, HELP, labels=["upstream"])]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(NAME, HELP, labels=["upstream"])
        try:
            from proxy import health_view  # here: it imports the breakers, which import proxy.metrics

            for name, state in health_view.states().items():
                family.add_metric([name], VALUES[state])
        except Exception:
            # The database or Redis down: the scrape goes on without the family's samples.
            if not self._failing:
                logger.exception("metrics: the breaker states could not be read")
            self._failing = True
        else:
            self._failing = False
        yield family


BREAKER_STATES = BreakerStates()
