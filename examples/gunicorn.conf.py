"""gunicorn settings for the Flask example: several workers, the app loaded once before forking.

    gunicorn -c examples/gunicorn.conf.py --chdir examples flask_app:app

With ``preload_app`` the app is imported in the master process, but the exporter is
created in each worker after the fork: its sending thread and connections would not
survive the fork. Until a worker has set its tracer provider, the instrumentation's
tracers are proxies that start forwarding once it is set.
"""

import os

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_mixpanel import MixpanelSpanExporter

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "3"))
preload_app = True


def post_fork(server, worker):
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(MixpanelSpanExporter()))
    trace.set_tracer_provider(provider)


def worker_exit(server, worker):
    # Sends what the worker still holds before it exits.
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()
