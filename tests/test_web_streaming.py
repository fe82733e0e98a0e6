"""Streaming WSGI responses: the device id and the user stay known while the body is produced.

opentelemetry-instrumentation-wsgi keeps its span current while the server iterates the
response; the middleware keeps the device id current too, in either order of the two.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest
from werkzeug.wsgi import FileWrapper

import otel_mixpanel
from conftest import IPHONE
from otel_mixpanel.web import MixpanelMiddleware, current_device_id

DEVICE = "3f2c4b1e-8d7a-4c2e-9b1f-0a1b2c3d4e5f"
COOKIE = {"Cookie": f"otel_mp_device_id={DEVICE}", "User-Agent": IPHONE}


class ClosingBody:
    """A streamed body that records when the server closes it, as PEP 3333 requires."""

    def __init__(self, chunks: Iterator[bytes], closed: list[str | None]) -> None:
        self._chunks = chunks
        self._closed = closed

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def close(self) -> None:
        self._closed.append(current_device_id())


def streaming_app(closed: list[str | None]) -> Callable[..., Any]:
    def app(environ: dict, start_response: Callable[..., Any]) -> ClosingBody:
        otel_mixpanel.identify("user-3")

        def chunks() -> Iterator[bytes]:
            for index in range(20):
                yield f"{index}:{current_device_id()}\n".encode()
            otel_mixpanel.track("Export Streamed", {"rows": 20})

        start_response("200 OK", [("Content-Type", "text/csv")])
        return ClosingBody(chunks(), closed)

    return app


@pytest.mark.parametrize("order", ["inside", "outside"])
def test_streamed_body_sees_the_device_and_user(site_factory, ingest, order):
    closed: list[str | None] = []
    app = MixpanelMiddleware(streaming_app(closed))
    site = site_factory(app) if order == "inside" else site_factory(streaming_app(closed))
    if order == "outside":
        # The OpenTelemetry middleware inside ours: wrap the app werkzeug's server serves.
        site._server.app = MixpanelMiddleware(site._server.app)
    status, _, body = site.request("/export.csv", headers=COOKIE)
    site.flush()
    assert status == 200
    assert body.decode().splitlines() == [f"{index}:{DEVICE}" for index in range(20)]
    assert closed == [DEVICE]
    [event] = [e for e in ingest.events() if e["event"] == "Export Streamed"]
    assert (event["properties"]["$device_id"], event["properties"]["$user_id"]) == (DEVICE, "user-3")


def test_lists_and_file_wrappers_are_returned_as_they_are():
    def list_app(environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [])
        return [b"done"]

    def file_app(environ: dict, start_response: Callable[..., Any]) -> Any:
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](open(__file__, "rb"))

    environ = {"wsgi.file_wrapper": FileWrapper, "PATH_INFO": "/"}
    assert MixpanelMiddleware(list_app)(dict(environ), lambda *a: None) == [b"done"]
    body = MixpanelMiddleware(file_app)(dict(environ), lambda *a: None)
    assert isinstance(body, FileWrapper)
    body.close()
