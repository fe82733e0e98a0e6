"""pytest plugin (registered as ``otel_mixpanel`` in ``pytest11``): the ``mixpanel_capture`` fixture.

The fixture gives a ``MixpanelCapture`` that receives every span of the global tracer provider
ended during the test, and converts it as the exporter would: no server, no token, no network.
When the application has not set a tracer provider, the plugin sets an SDK one, so instrumented
code and ``otel_mixpanel.track()`` calls have spans to record on. See ``docs/testing.md``.

Loaded into every pytest run where otel-mixpanel is installed, so it imports nothing of its own
until a test asks for the fixture.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import pytest

if TYPE_CHECKING:
    from otel_mixpanel.testing.capture import CaptureRouter, MixpanelCapture

_router: CaptureRouter | None = None
_routed: set[int] = set()


def _route_global_spans() -> CaptureRouter:
    """The router, added once to the global tracer provider; an SDK provider is set if there is none yet."""
    global _router
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from otel_mixpanel.testing.capture import CaptureRouter

    if _router is None:
        _router = CaptureRouter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider) and id(provider) not in _routed:
        provider.add_span_processor(_router)
        _routed.add(id(provider))
    return _router


@pytest.fixture
def mixpanel_capture() -> Iterator[MixpanelCapture]:
    """What the code under test would send to Mixpanel: ``.events``, ``.profile_updates``, ``.records``."""
    from otel_mixpanel.testing.capture import MixpanelCapture

    router = _route_global_spans()
    capture = MixpanelCapture()
    router.current = capture.span_processor
    try:
        yield capture
    finally:
        router.current = None
        capture.exporter.shutdown()
