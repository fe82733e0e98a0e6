"""Celery tasks for the background-job tests, run by a real worker (``celery -A celery_jobs worker``).

The worker sets tracing up as a production worker would: the Mixpanel exporter behind
``MixpanelSpanProcessor`` (which gives each task's span the ids of the request that
enqueued it) and the Celery instrumentation. Settings come from the environment.
"""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_init, worker_shutdown
from opentelemetry import trace

import otel_mixpanel

app = Celery("celery_jobs", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(task_default_queue=os.environ.get("CELERY_QUEUE", "celery"), worker_hijack_root_logger=False,
                broker_connection_retry_on_startup=True)


@worker_init.connect
def set_up_tracing(**_: object) -> None:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.sdk.trace import TracerProvider

    from otel_mixpanel import MixpanelSpanExporter
    from otel_mixpanel.sampling import MixpanelSpanProcessor

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return  # opentelemetry-instrument has set tracing up, the Celery instrumentation included
    provider = TracerProvider()
    provider.add_span_processor(MixpanelSpanProcessor(MixpanelSpanExporter()))
    trace.set_tracer_provider(provider)
    CeleryInstrumentor().instrument()


@worker_shutdown.connect
def flush_tracing(**_: object) -> None:
    trace.get_tracer_provider().shutdown()  # type: ignore[attr-defined]


@app.task
def send_receipt(order_id: str) -> str:
    otel_mixpanel.track("Receipt Sent", {"order_id": order_id})
    return order_id


@app.task
def nightly_report(run: str) -> None:
    # Not tied to a request: the job says who its events belong to.
    trace.get_current_span().set_attribute("enduser.id", "reporting-bot")
    otel_mixpanel.track("Report Built", {"rows": 3, "run": run})


@app.task
def notify_account_owner(owner: str, run: str) -> None:
    # Enqueued by one user's request, about another user's account: the job names that user.
    trace.get_current_span().set_attribute("enduser.id", owner)
    otel_mixpanel.track("Owner Notified", {"run": run})
