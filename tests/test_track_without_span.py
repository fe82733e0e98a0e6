"""``otel_mixpanel.track()`` where no span is recording: sent on a span of its own, or said why not.

Each case runs in a new interpreter, whose global tracer provider it sets (or not).
"""

from __future__ import annotations

from test_sampling import run_python

SET_UP = """
    import threading
    from opentelemetry import baggage, context, trace
    from opentelemetry.sdk.trace import TracerProvider
    from otel_mixpanel import MixpanelSpanExporter, track
    from otel_mixpanel.sampling import MixpanelSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(MixpanelSpanProcessor(MixpanelSpanExporter(schedule_delay_ms=20)))
    {set_provider}
"""


def test_a_thread_without_the_request_context_still_sends_and_says_why_it_has_no_user(ingest):
    code = SET_UP.format(set_provider="trace.set_tracer_provider(provider)") + """
    # As run_in_executor runs a function: in a thread that has none of the request's context.
    for name in ("Thread Event", "Second Thread Event"):
        worker = threading.Thread(target=track, args=(name, {"n": 1}))
        worker.start(); worker.join()
    provider.shutdown()
    """
    run = run_python(code, ingest)
    assert run.returncode == 0, run.stderr
    events = ingest.wait_for(2)
    assert sorted(e["event"] for e in events) == ["Second Thread Event", "Thread Event"]
    assert run.stderr.count("no span is recording and nothing tells the user") == 1, run.stderr
    assert "contextvars.copy_context().run" in run.stderr


def test_without_a_span_the_ids_in_the_baggage_are_used(ingest):
    code = SET_UP.format(set_provider="trace.set_tracer_provider(provider)") + """
    ctx = baggage.set_baggage("otel_mixpanel.device_id", "3f2c4b1e-8d7a-4c2e-9b1f-0a1b2c3d4e5f")
    token = context.attach(baggage.set_baggage("otel_mixpanel.user_id", "user-5", context=ctx))
    track("Webhook Handled")
    context.detach(token)
    provider.shutdown()
    """
    run = run_python(code, ingest)
    assert run.returncode == 0, run.stderr
    [event] = ingest.wait_for(1)
    assert (event["properties"]["$device_id"], event["properties"]["$user_id"]) == (
        "3f2c4b1e-8d7a-4c2e-9b1f-0a1b2c3d4e5f", "user-5")
    assert "track(" not in run.stderr


def test_without_a_tracer_provider_it_says_once_that_the_event_is_lost(ingest):
    code = SET_UP.format(set_provider="") + """
    track("Lost Event")
    track("Lost Event")
    """
    run = run_python(code, ingest)
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("the event is lost") == 1, run.stderr
    assert "trace.set_tracer_provider()" in run.stderr
