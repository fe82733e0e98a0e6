"""Which modules the build compiles with mypyc (setup.py), and whether this installation's are.

Said by ``otel-mixpanel --version`` and the exporter's start line, since a build that could not compile
installs pure Python without a word (pip hides build output): the same behaviour, with conversion 1.5 to 1.7
times as costly per request. setup.py runs this file by itself, so it imports nothing but the standard library.
"""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES
from importlib.util import find_spec

# The modules every request's conversion runs through (spans -> request context -> events -> JSON), and no
# others: the rest is start-up, delivery threads that mostly wait on SQLite and HTTP, and request-time helpers
# whose own cost is small beside the instrumentation around them. Compiled all together or none of them.
COMPILED_MODULES = (
    "otel_mixpanel.admission",
    "otel_mixpanel.assembly",
    "otel_mixpanel.context",
    "otel_mixpanel.conversion",
    "otel_mixpanel.enrich.browser_names",
    "otel_mixpanel.enrich.campaign",
    "otel_mixpanel.enrich.client_ip",
    "otel_mixpanel.enrich.first_touch",
    "otel_mixpanel.enrich.identity",
    "otel_mixpanel.enrich.referrer",
    "otel_mixpanel.enrich.url",
    "otel_mixpanel.enrich.user_agent",
    "otel_mixpanel.events",
    "otel_mixpanel.groups",
    "otel_mixpanel.limits",
    "otel_mixpanel.page_views",
    "otel_mixpanel.placeholder_ids",
    "otel_mixpanel.span_reads",
    "otel_mixpanel.spans",
)
# mypyc's library shared by the compiled modules, installed beside the package.
SHARED_LIBRARY = "otel_mixpanel__mypyc"


def is_compiled(module: str) -> bool:
    """Whether the module would be loaded from an extension, found without importing it."""
    spec = find_spec(module)
    origin = spec.origin if spec is not None else None
    return bool(origin and origin.endswith(tuple(EXTENSION_SUFFIXES)))


def conversion_build() -> str:
    """"compiled with mypyc" or "pure Python"."""
    return "compiled with mypyc" if is_compiled(COMPILED_MODULES[0]) else "pure Python"
