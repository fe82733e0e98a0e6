"""Identity as Mixpanel's web SDK has it: placeholder ids, both ID Merge modes, profiles of known users."""

from __future__ import annotations

import pytest
from opentelemetry import trace

from conftest import DESKTOP_CHROME
from otel_mixpanel.placeholder_ids import PLACEHOLDER_IDS, is_placeholder_id
from otel_mixpanel.spans import identity_text
from otel_mixpanel.web.device_id import valid_device_id
from test_business_events_identity import by_name, serve

DEVICE = "5b9a1f4e-3c2d-4a8b-9f1e-2d3c4b5a6f70"


@pytest.mark.parametrize("placeholder", ["n/a", "NA", "N/A", " null ", "Undefined", "00000000-0000-0000-0000-000000000000"])
def test_placeholder_user_ids_are_no_user(site_factory, ingest, placeholder):
    def handler(tracer, environ):
        span = trace.get_current_span()
        span.set_attribute("enduser.pseudo.id", DEVICE)
        span.set_attribute("enduser.id", placeholder)

    site = serve(site_factory, handler)
    site.request("/", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    [view] = by_name(ingest, "$mp_web_page_view")
    assert view["properties"]["distinct_id"] == f"$device:{DEVICE}"
    assert "$user_id" not in view["properties"]
    assert ingest.rejected == []


def test_one_placeholder_list_for_user_ids_device_ids_and_the_ingest_server():
    for placeholder in PLACEHOLDER_IDS:
        assert identity_text(placeholder) is None
        assert identity_text(placeholder.upper()) is None
        assert valid_device_id(placeholder) is None
    assert is_placeholder_id("n/a") and is_placeholder_id("NA") and not is_placeholder_id("nathalie")
    assert identity_text("nathalie") == "nathalie"
