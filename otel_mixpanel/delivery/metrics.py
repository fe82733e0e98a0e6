"""Delivery counters as OpenTelemetry observable counters.

One set of instruments per process, summing over the live senders: creating them per
sender would register duplicate instruments. ``get_meter`` is a no-op until the
application sets a meter provider, and the API's proxy meter picks the provider up later.
"""

from __future__ import annotations

import threading
import weakref
from typing import Callable, Iterable, Protocol

from opentelemetry import metrics

METER_NAME = "otel_mixpanel.delivery"
COUNTER_NAMES = ("accepted", "sent", "retried", "rejected", "dropped")
DESCRIPTIONS = {
    "accepted": "Events and profile updates written to the spool for delivery.",
    "sent": "Records Mixpanel accepted.",
    "retried": "Records in requests that failed for a transient reason and were sent again.",
    "rejected": ("Records Mixpanel refused for good (a 400, or too large), and messages that are not "
                 "JSON objects; dropped."),
    "dropped": "Records discarded because the spool was full (the oldest go first), or could not be written.",
}


class HasCounters(Protocol):
    def counter_values(self) -> dict[str, int]: ...


_sources: weakref.WeakSet[HasCounters] = weakref.WeakSet()
_lock = threading.Lock()
_registered = False


def metric_name(counter: str) -> str:
    return f"{METER_NAME}.{counter}"


def _callback(counter: str) -> Callable[[metrics.CallbackOptions], Iterable[metrics.Observation]]:
    def observe(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        total = sum(source.counter_values()[counter] for source in list(_sources))
        return [metrics.Observation(total)]

    return observe


def register(source: HasCounters) -> None:
    global _registered
    with _lock:
        _sources.add(source)
        if _registered:
            return
        _registered = True
    meter = metrics.get_meter(METER_NAME)
    for counter in COUNTER_NAMES:
        meter.create_observable_counter(
            metric_name(counter), callbacks=[_callback(counter)], unit="{record}", description=DESCRIPTIONS[counter]
        )
