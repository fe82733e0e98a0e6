"""Hybrid set-ups with Mixpanel's real JavaScript SDK in a real browser.

Headless Chromium visits a Flask site (real OpenTelemetry WSGI instrumentation, the web
middleware with ``write_js_cookie=True``) from a "search" page on another host, with UTM
tags; the page runs mixpanel-browser 2.83.0, whose api_host is the local Mixpanel look-alike.
Everything is on loopback. Checked: the SDK starts on the server's device id and keeps the
server's first touch, the first page's server and SDK events are one user, and each page
view is counted once; at login (the server's identify() and the page's mixpanel.identify()),
in both ID Merge modes, both sides' events name the user and the same device, and each side's
``$identify`` merges the same ``$device:`` id. Without ``write_js_cookie`` the SDK starts on an id of its own, which
is what the option exists to prevent. And Chromium's own request headers make its page load one
page view, its ``fetch()`` and its iframe none.

Not in the default run (CI has neither Chromium nor node). Run it with::

    OTEL_MIXPANEL_BROWSER_TESTS=1 .venv/bin/python -m pytest tests/test_hybrid_browser.py

It needs Chromium (``CHROMIUM``, default: ``chromium`` on the PATH; Debian: ``apt-get install
chromium``) and mixpanel-browser: ``MIXPANEL_JS`` naming its ``dist/mixpanel.umd.js``, else
``npm pack mixpanel-browser@2.83.0`` is run into a temporary directory.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import flask
import pytest

from otel_mixpanel.web import current_device_id, identify, track
from otel_mixpanel.web.flask import MixpanelFlask

from conftest import Site

MIXPANEL_JS_VERSION = "2.83.0"
TOKEN = "browser-test-token"
PAGE_VIEW = "$mp_web_page_view"

pytestmark = pytest.mark.skipif(not os.environ.get("OTEL_MIXPANEL_BROWSER_TESTS"),
                                reason="set OTEL_MIXPANEL_BROWSER_TESTS=1 (needs Chromium and mixpanel-browser)")


@pytest.fixture(scope="module")
def mixpanel_js(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    given = os.environ.get("MIXPANEL_JS")
    if given:
        return Path(given).read_bytes()
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("neither MIXPANEL_JS nor npm")
    where = tmp_path_factory.mktemp("mixpanel-browser")
    packed = subprocess.run([npm, "pack", f"mixpanel-browser@{MIXPANEL_JS_VERSION}", "--silent"], cwd=where,
                            capture_output=True, text=True, timeout=300, check=True).stdout.strip().splitlines()[-1]
    with tarfile.open(where / packed) as archive:
        member = archive.extractfile("package/dist/mixpanel.umd.js")
        assert member is not None
        return member.read()


@pytest.fixture(scope="module")
def chromium() -> str:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("no Chromium: set CHROMIUM")
    return found


def shop(mixpanel_js: bytes, ingest_url: str, **options: Any) -> flask.Flask:
    """Pages that load the SDK, report its state into the DOM and track one event of its own."""
    app = flask.Flask(__name__)
    config = {"api_host": ingest_url, "api_routes": {"track": "track", "engage": "engage", "groups": "groups"},
              "api_payload_format": "json", "batch_requests": False}

    @app.get("/static/mixpanel.js")
    def sdk() -> flask.Response:
        return flask.Response(mixpanel_js, mimetype="text/javascript")

    @app.get("/")
    @app.get("/pricing")
    @app.get("/login")
    def page() -> str:
        user = flask.request.args.get("user") if flask.request.path == "/login" else None
        if user:
            identify(user)
        server_id = html.escape(current_device_id() or "")
        # A logged-in user's page tells the SDK too, as docs/web.md asks.
        sdk_identify = f"mp.identify({json.dumps(user)});" if user else ""
        return f"""<!doctype html><html><head><script src="/static/mixpanel.js"></script></head><body>
<pre id="server">{server_id}</pre><pre id="sdk">pending</pre>
<script>
mixpanel.init({json.dumps(TOKEN)}, Object.assign({json.dumps(config)}, {{loaded: function (mp) {{
  {sdk_identify}
  mp.track("Viewed Pricing Table", {{}}, function () {{
    document.getElementById("sdk").textContent = JSON.stringify({{
      distinct_id: mp.get_distinct_id(), device_id: mp.get_property("$device_id"),
      initial_referrer: mp.get_property("$initial_referrer"),
      initial_referring_domain: mp.get_property("$initial_referring_domain"), cookie: document.cookie}});
  }});
}}}}));
</script></body></html>"""

    MixpanelFlask(app, mixpanel_token=TOKEN, **options)
    return app


class SearchPage:
    """A page on another host name that sends the browser on to the site, as a search result does."""

    def __init__(self) -> None:
        target: dict[str, str] = {}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                body = f"<script>location.href = {json.dumps(target['url'])};</script>".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.target = target
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url_to(self, url: str) -> str:
        self.target["url"] = url
        # "localhost" is another host than the site's 127.0.0.1: the browser sends a cross-site Referer.
        return f"http://localhost:{self.server.server_port}/search?q=shoes"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def search() -> Iterator[SearchPage]:
    page = SearchPage()
    yield page
    page.close()


def visit(chromium: str, profile: Path, url: str) -> dict[str, Any]:
    """Load ``url`` in headless Chromium with ``profile``; the SDK's state as the page reported it."""
    run = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
         f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120)
    dom = run.stdout
    start = dom.find('<pre id="sdk">')
    assert start >= 0, f"no page in Chromium's output: {dom[:500]!r} {run.stderr[-2000:]!r}"
    state = html.unescape(dom[start + len('<pre id="sdk">'):dom.index("</pre>", start)])
    assert state != "pending", f"the SDK did not report: {run.stderr[-2000:]}"
    return dict(json.loads(state), server=html.unescape(dom.split('<pre id="server">')[1].split("</pre>")[0]))


def events_by_library(site: Site, ingest: Any, count: int) -> list[dict[str, Any]]:
    site.flush()
    events = ingest.wait_for(count, timeout=20)
    assert len(events) == count, [(e["event"], e["properties"].get("mp_lib")) for e in events]
    return events


@pytest.mark.parametrize("id_merge", ["simplified", "original"])
def test_the_sdk_starts_on_the_server_device_id_and_the_first_page_is_one_user(
        site_factory: Callable[..., Site], ingest: Any, search: SearchPage, chromium: str, mixpanel_js: bytes,
        tmp_path: Path, id_merge: str) -> None:
    app = shop(mixpanel_js, ingest.url, write_js_cookie=True, js_tracks_page_views=False)
    site = site_factory(app, token=TOKEN, events_api="track", id_merge=id_merge)
    prefix = "$device:"  # mixpanel-js's anonymous distinct_id in both ID Merge modes, and the server's
    base = f"http://127.0.0.1:{site.port}"
    first = visit(chromium, tmp_path / "profile", search.url_to(base + "/?utm_source=google&utm_campaign=spring"))
    device = first["server"]
    referrer = f"http://localhost:{search.server.server_port}/"
    assert (first["distinct_id"], first["device_id"]) == (prefix + device, device), first
    assert (first["initial_referrer"], first["initial_referring_domain"]) == (referrer, f"localhost:{search.server.server_port}")

    second = visit(chromium, tmp_path / "profile", base + "/pricing")
    assert second["server"] == device and second["device_id"] == device, second

    # Per page: the server's page view (the SDK tracks none by default) and the SDK's own event.
    events = events_by_library(site, ingest, 4)
    assert sorted((e["event"], e["properties"]["mp_lib"]) for e in events) == sorted(
        [(PAGE_VIEW, "otel-mixpanel"), ("Viewed Pricing Table", "web")] * 2)
    assert {e["properties"]["distinct_id"] for e in events} == {prefix + device}
    assert {e["properties"]["$device_id"] for e in events} == {device}
    assert {e["properties"]["$initial_referrer"] for e in events} == {referrer}
    landing = next(e for e in events if e["event"] == PAGE_VIEW and e["properties"].get("utm_source"))
    assert landing["properties"]["utm_campaign"] == "spring" and landing["properties"]["$referrer"] == referrer
    assert landing["properties"]["$referring_domain"] == f"localhost:{search.server.server_port}"
    # Both sides' events of the later page carry the landing's campaign too: the SDK's utm_* super
    # properties, which the server reads from the SDK's cookie.
    assert {(e["properties"].get("utm_source"), e["properties"].get("utm_campaign")) for e in events} == {
        ("google", "spring")}

    # The login: the server's identify() and, in the page, mixpanel.identify(). Both sides' events
    # name the user and the same device; each side's $identify merges the same $device: id into the
    # user (the server sends one under Original ID Merge only, the SDK in both modes).
    visit(chromium, tmp_path / "profile", base + "/login?user=u-1")
    later = events_by_library(site, ingest, 4 + 3 + (id_merge == "original"))[4:]
    assert sorted((e["event"], e["properties"]["mp_lib"]) for e in later) == sorted(
        [(PAGE_VIEW, "otel-mixpanel"), ("$identify", "web"), ("Viewed Pricing Table", "web")]
        + [("$identify", "otel-mixpanel")] * (id_merge == "original"))
    for event in later:
        properties = event["properties"]
        assert (properties["distinct_id"], properties["$device_id"], properties["$user_id"]) == ("u-1", device, "u-1")
        assert properties["$initial_referrer"] == referrer, event
        assert (properties.get("utm_source"), properties.get("utm_campaign")) == ("google", "spring"), event
        if event["event"] == "$identify":
            assert properties["$anon_distinct_id"] == prefix + device, event

    # The server's login also gives the profile the first touch, with the initial UTM tags the SDK
    # queued in its cookie (its pending people.set_once) on the first page; the SDK's own flush of
    # that queue at identify() carries $device_id, the server's does not.
    profiles = ingest.wait_for(2, what="profiles")
    (update,) = [p for p in profiles if "$set_once" in p and "$device_id" not in p]
    assert update["$distinct_id"] == "u-1"
    assert update["$set_once"]["$initial_referrer"] == referrer
    assert update["$set_once"]["initial_utm_source"] == "google"
    assert update["$set_once"]["initial_utm_campaign"] == "spring" and update["$set_once"]["initial_utm_term"] is None


def test_without_write_js_cookie_the_first_page_splits_into_two_users(
        site_factory: Callable[..., Site], ingest: Any, search: SearchPage, chromium: str, mixpanel_js: bytes,
        tmp_path: Path) -> None:
    site = site_factory(shop(mixpanel_js, ingest.url), token=TOKEN, events_api="track")
    base = f"http://127.0.0.1:{site.port}"
    first = visit(chromium, tmp_path / "profile", search.url_to(base + "/?utm_source=google"))
    assert first["device_id"] != first["server"]
    events = events_by_library(site, ingest, 2)
    assert len({e["properties"]["distinct_id"] for e in events}) == 2


def test_a_real_browser_load_is_one_page_view_and_its_fetch_and_frame_none(
        site_factory: Callable[..., Site], ingest: Any, chromium: str, tmp_path: Path) -> None:
    """Chromium's own Sec-Fetch-* and Accept headers, as the web middleware alone records them."""
    app = flask.Flask(__name__)

    @app.get("/")
    def page() -> str:
        return """<!doctype html><html><body><pre id="server"></pre><pre id="sdk">pending</pre>
<iframe src="/widget"></iframe>
<script>
fetch("/api/cart").then((r) => r.json()).then((cart) => {
  document.getElementById("sdk").textContent = JSON.stringify({items: cart.items.length});
});
</script></body></html>"""

    @app.get("/widget")
    def widget() -> str:
        return "<!doctype html><p>A widget</p>"

    @app.get("/api/cart")
    def cart() -> dict[str, Any]:
        track("Cart Viewed")
        return {"items": []}

    MixpanelFlask(app)
    site = site_factory(app, token=TOKEN, events_api="track", capture_navigation=False)
    assert visit(chromium, tmp_path / "profile", f"http://127.0.0.1:{site.port}/")["items"] == 0
    site.flush()
    events = ingest.wait_for(2, timeout=20)
    assert sorted(e["event"] for e in events) == [PAGE_VIEW, "Cart Viewed"], events
    view = next(e["properties"] for e in events if e["event"] == PAGE_VIEW)
    assert view["current_url_path"] == "/"
    assert {e["properties"]["$device_id"] for e in events} == {view["$device_id"]}
