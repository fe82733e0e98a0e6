"""Super properties: set once in configuration, added to every event, below the event's own properties."""

from __future__ import annotations

import os

import pytest
from opentelemetry import trace

import otel_mixpanel
from conftest import DESKTOP_CHROME
from test_business_events_identity import DEVICE, by_name, serve


def _checkout(tracer, environ):
    trace.get_current_span().set_attribute("enduser.pseudo.id", DEVICE)
    otel_mixpanel.track("Checkout", {"plan": "pro"})


def test_super_properties_from_code_rank_between_automatic_and_own_properties(site_factory, ingest):
    supers = {"app": "shop", "plan": "free", "$browser": "Kiosk", "nested": {"tier": 2},
              "distinct_id": "hijack", "$insert_id": "x", "time": 1, "$device_id": "other", "ip": "203.0.113.9"}
    site = serve(site_factory, _checkout, super_properties=supers)
    site.request("/pricing", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    [view], [checkout] = by_name(ingest, "$mp_web_page_view"), by_name(ingest, "Checkout")
    for event in (view, checkout):
        props = event["properties"]
        assert (props["app"], props["nested"]) == ("shop", {"tier": 2})
        # mixpanel-js's track(): super properties win over the automatic ones...
        assert props["$browser"] == "Kiosk"
        # ...never over what identity and deduplication rest on, nor the client's address.
        assert (props["distinct_id"], props["$device_id"]) == (f"$device:{DEVICE}", DEVICE)
        assert props["$insert_id"] != "x" and props["time"] > 1
        assert props.get("ip") != "203.0.113.9"
    # ...and the event's own properties win over them.
    assert (view["properties"]["plan"], checkout["properties"]["plan"]) == ("free", "pro")


def test_super_properties_from_the_environment_and_the_argument_beating_it(site_factory, ingest):
    os.environ["OTEL_EXPORTER_MIXPANEL_SUPER_PROPERTIES"] = '{"deployment": "eu-1", "build": 42}'
    site = serve(site_factory, _checkout)
    site.request("/", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    assert [(e["properties"]["deployment"], e["properties"]["build"]) for e in ingest.events()] == [("eu-1", 42)] * 2
    assert otel_mixpanel.Settings.load({"super_properties": {"deployment": "us-2"}}).super_properties == {
        "deployment": "us-2"}


@pytest.mark.parametrize("text", ["deployment=eu-1", '["eu-1"]', '{"a": '])
def test_super_properties_that_are_not_a_json_object_stop_start_up(text):
    os.environ["OTEL_EXPORTER_MIXPANEL_TOKEN"] = "t"
    os.environ["OTEL_EXPORTER_MIXPANEL_SUPER_PROPERTIES"] = text
    with pytest.raises(otel_mixpanel.ConfigError, match="OTEL_EXPORTER_MIXPANEL_SUPER_PROPERTIES: expected a JSON"):
        otel_mixpanel.MixpanelSpanExporter()
