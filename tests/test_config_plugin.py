"""Settings from arguments and OTEL_EXPORTER_MIXPANEL_*, the plugin entry point, and where events are sent."""

from __future__ import annotations

import base64
import dataclasses
import inspect
import os
import re
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import otel_mixpanel
from conftest import quick_delivery
from otel_mixpanel.config import SETTINGS, SETTINGS_BY_NAME, ConfigError, Settings, env_name

DOCS = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_built_with_no_arguments_from_the_environment(ingest):
    os.environ.update({"OTEL_EXPORTER_MIXPANEL_TOKEN": "env-token", "OTEL_EXPORTER_MIXPANEL_ENDPOINT": ingest.url,
                       "OTEL_EXPORTER_MIXPANEL_SPOOL": "memory", "OTEL_EXPORTER_MIXPANEL_ID_MERGE": "original",
                       "OTEL_EXPORTER_MIXPANEL_TRUSTED_PROXIES": "10.0.0.0/8,192.168.1.1"})
    exporter = otel_mixpanel.MixpanelSpanExporter()
    try:
        assert exporter.settings.token == "env-token"
        assert exporter.settings.endpoint == ingest.url
        assert exporter.settings.id_merge == "original"
        assert [str(n) for n in exporter.settings.trusted_proxies.networks] == ["10.0.0.0/8", "192.168.1.1/32"]
    finally:
        exporter.shutdown(1000)


def test_arguments_beat_the_environment_and_defaults_fill_the_rest():
    os.environ["OTEL_EXPORTER_MIXPANEL_TOKEN"] = "env-token"
    os.environ["OTEL_EXPORTER_MIXPANEL_PAGE_VIEW_EVENT"] = "From Env"
    settings = Settings.load({"token": "arg-token", "batch_size": 500})
    assert (settings.token, settings.batch_size, settings.page_view_event) == ("arg-token", 500, "From Env")
    assert settings.endpoint == "https://api.mixpanel.com" and settings.timeout_ms == 10_000


@pytest.mark.parametrize(("variable", "value", "expected"), [
    ("ID_MERGE", "sometimes", "expected one of simplified, original"),
    ("ENDPOINT", "ftp://api.mixpanel.com", "expected a base URL"),
    ("BATCH_SIZE", "5000", "at most 2000"),
    ("TIMEOUT", "ten", "expected a whole number"),
    ("RETRY_MAX_BACKOFF", "1", "at least 10"),
    ("TRUSTED_PROXIES", "10.0.0.0/8,proxy.internal", "'proxy.internal' is neither"),
    ("TRACK_BOTS", "maybe", "expected true or false"),
    ("IP", "hide", "expected one of full, truncate, off"),
])
def test_bad_settings_fail_at_start_naming_the_variable(variable, value, expected):
    os.environ["OTEL_EXPORTER_MIXPANEL_TOKEN"] = "t"
    os.environ["OTEL_EXPORTER_MIXPANEL_" + variable] = value
    with pytest.raises(ConfigError) as error:
        otel_mixpanel.MixpanelSpanExporter()
    assert f"OTEL_EXPORTER_MIXPANEL_{variable}=" in str(error.value)
    assert expected in str(error.value)


def test_missing_credentials_are_explained():
    # No token at all is not an error (the exporter turns itself off, see test_switches_and_dev_output.py),
    # but half a service account is.
    assert "OTEL_EXPORTER_MIXPANEL_TOKEN is not set" in Settings.load().off_reason
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_MIXPANEL_PROJECT_ID is required"):
        otel_mixpanel.MixpanelSpanExporter(service_account_username="sa", service_account_secret="s")


def test_secrets_never_appear_in_reprs_or_errors():
    secrets = {"token": "TOKEN-S3CRET", "api_secret": "API-S3CRET", "service_account_secret": "SA-S3CRET"}
    exporter = otel_mixpanel.MixpanelSpanExporter(**quick_delivery(**secrets, service_account_username="sa",
                                                                    project_id="42"))
    try:
        shown = " ".join([repr(exporter), str(exporter), repr(exporter.settings), repr(exporter.sender)])
        for secret in secrets.values():
            assert secret not in shown
        assert "***" in repr(exporter.settings)
    finally:
        exporter.shutdown(1000)
    with pytest.raises(ConfigError) as error:
        Settings.load({"token": "TOKEN-S3CRET", "events_api": "import", "project_id": "42"})
    assert "TOKEN-S3CRET" not in str(error.value)


# Keyword arguments that cannot come from an environment variable (a callable), each documented in
# docs/configuration.md: the only parameters of the exporter that are not settings.
CODE_ONLY_KEYWORDS = {"before_send"}


def test_the_exporter_takes_every_setting_as_a_keyword_and_nothing_else():
    parameters = inspect.signature(otel_mixpanel.MixpanelSpanExporter.__init__).parameters
    keywords = {name for name, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert all(f"`{name}=`" in DOCS.read_text() for name in CODE_ONLY_KEYWORDS)
    keywords -= CODE_ONLY_KEYWORDS
    missing, extra = set(SETTINGS_BY_NAME) - keywords, keywords - set(SETTINGS_BY_NAME)
    assert not missing, f"add {sorted(missing)} to MixpanelSpanExporter.__init__ as keyword-only parameters"
    assert not extra, f"{sorted(extra)} are parameters of MixpanelSpanExporter but not settings"
    assert all(parameters[name].default is None for name in keywords)
    with pytest.raises(TypeError):
        otel_mixpanel.MixpanelSpanExporter(tokn="typo")


def test_settings_take_their_defaults_from_the_table_and_parse_what_is_given():
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    assert set(fields) == set(SETTINGS_BY_NAME), "Settings and config.SETTINGS must declare the same settings"
    for setting in SETTINGS:
        if setting.name != "spool_dir":
            assert fields[setting.name].default == setting.default, setting.name
    settings = Settings(token="t", batch_size="500", trusted_proxies="10.0.0.0/8", static_extensions=["CSS", ".js"],
                        page_views="off")
    assert settings.batch_size == 500 and not settings.page_views
    assert settings.static_extensions == (".css", ".js")
    assert [str(n) for n in settings.trusted_proxies.networks] == ["10.0.0.0/8"]
    assert settings.spool_dir
    with pytest.raises(ConfigError, match="argument batch_size='5000'.*at most 2000"):
        Settings(token="t", batch_size=5000)
    with pytest.raises(ConfigError, match="argument id_merge"):
        Settings(token="t", id_merge="sometimes")


def test_credentials_in_the_endpoint_url_are_refused_without_being_echoed():
    with pytest.raises(ConfigError) as error:
        Settings.load({"token": "t", "endpoint": "https://proxyuser:Pr0xy-S3CRET@mixpanel-proxy.internal"})
    assert "credentials in the URL" in str(error.value) and "Pr0xy-S3CRET" not in str(error.value)
    os.environ["OTEL_EXPORTER_MIXPANEL_ENDPOINT"] = "https://u:Pr0xy-S3CRET@api.mixpanel.com"
    with pytest.raises(ConfigError) as error:
        Settings.load({"token": "t"})
    assert "OTEL_EXPORTER_MIXPANEL_ENDPOINT" in str(error.value) and "Pr0xy-S3CRET" not in str(error.value)


def test_every_setting_is_documented_with_its_variable_default_and_unit():
    text = DOCS.read_text()
    for setting in SETTINGS:
        rows = [line for line in text.splitlines() if f"`{env_name(setting)}`" in line]
        assert rows, f"{env_name(setting)} is not in docs/configuration.md"
        assert setting.unit in rows[0], f"{env_name(setting)}: unit {setting.unit!r} not stated"


def test_registered_as_an_opentelemetry_traces_exporter():
    [entry] = [e for e in entry_points(group="opentelemetry_traces_exporter") if e.name == "mixpanel"]
    assert entry.load() is otel_mixpanel.MixpanelSpanExporter
    from opentelemetry.sdk._configuration import _import_exporters

    span_exporters, _, _ = _import_exporters(["mixpanel"], [], [])
    assert span_exporters == {"mixpanel": otel_mixpanel.MixpanelSpanExporter}


def test_zero_code_opentelemetry_instrument_sends_events(ingest, tmp_path):
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""
        from opentelemetry import trace
        import otel_mixpanel

        with trace.get_tracer("job").start_as_current_span("import-orders") as span:
            span.set_attribute("enduser.id", "ops-7")
            otel_mixpanel.track("Orders Imported", {"count": 12})
    """))
    instrument = Path(sys.executable).with_name("opentelemetry-instrument")
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "mixpanel", "OTEL_METRICS_EXPORTER": "none",
           "OTEL_LOGS_EXPORTER": "none", "OTEL_EXPORTER_MIXPANEL_TOKEN": "zero-code",
           "OTEL_EXPORTER_MIXPANEL_ENDPOINT": ingest.url, "OTEL_EXPORTER_MIXPANEL_SPOOL_DIR": str(tmp_path)}
    result = subprocess.run([str(instrument), sys.executable, str(script)], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    [event] = ingest.wait_for(1)
    assert event["event"] == "Orders Imported"
    assert event["properties"]["count"] == 12 and event["properties"]["distinct_id"] == "ops-7"


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(("credentials", "auth", "query"), [
    ({}, _basic("test-token", ""), {"strict": ["1"]}),
    ({"api_secret": "api-secret"}, _basic("api-secret", ""), {"strict": ["1"]}),
    ({"service_account_username": "sa.user", "service_account_secret": "sa-secret", "project_id": "1234"},
     _basic("sa.user", "sa-secret"), {"strict": ["1"], "project_id": ["1234"]}),
])
def test_events_go_to_import_in_strict_mode_with_the_best_credentials(ingest, pipeline, credentials, auth, query):
    exporter, tracer = pipeline(**credentials)
    with tracer.start_as_current_span("job") as span:
        span.set_attribute("enduser.id", "u-1")
        otel_mixpanel.track("Happened")
    assert exporter.force_flush(5000)
    [request] = [r for r in ingest.requests if r.path == "/import"]
    assert request.headers["authorization"] == auth
    assert {k: v for k, v in request.query.items() if k in ("strict", "project_id")} == query
    assert request.answered == 200 and ingest.events()[0]["event"] == "Happened"


def test_events_go_to_track_when_asked(ingest, pipeline):
    exporter, tracer = pipeline(events_api="track")
    with tracer.start_as_current_span("job") as span:
        span.set_attribute("enduser.id", "u-1")
        otel_mixpanel.track("Tracked")
    assert exporter.force_flush(5000)
    assert [r.path for r in ingest.requests] == ["/track"]
    assert "authorization" not in ingest.requests[0].headers
    assert ingest.events()[0]["properties"]["token"] == "test-token"


def test_time_is_integer_milliseconds_and_insert_ids_fit_mixpanel(ingest, pipeline):
    exporter, tracer = pipeline()
    with tracer.start_as_current_span("job") as span:
        span.set_attribute("enduser.id", "u-1")
        for n in range(5):
            otel_mixpanel.track("Step", {"n": n})
    assert exporter.force_flush(5000)
    events = ingest.events()
    assert len(events) == 5
    for event in events:
        assert isinstance(event["properties"]["time"], int) and event["properties"]["time"] > 1_600_000_000_000
        assert re.fullmatch(r"[A-Za-z0-9-]{1,36}", event["properties"]["$insert_id"])


def test_arguments_are_checked_like_environment_variables():
    settings = Settings.load({"token": "t", "trusted_proxies": 2, "track_bots": True, "page_view_exclude": ["/a", "/b"],
                              "timeout_ms": 2500})
    assert settings.trusted_proxies.hops == 2 and settings.track_bots is True
    assert settings.page_view_exclude == ("/a", "/b") and settings.timeout_ms == 2500
    with pytest.raises(ConfigError, match="argument batch_size='0'"):
        Settings.load({"token": "t", "batch_size": 0})


def test_the_official_sdk_can_share_the_exporter_sender(ingest, pipeline):
    import mixpanel

    exporter, tracer = pipeline()
    mp = mixpanel.Mixpanel("test-token", consumer=exporter.sender)
    mp.track("user-7", "Plan Upgraded", {"plan": "team"})
    with tracer.start_as_current_span("job") as span:
        span.set_attribute("enduser.id", "user-7")
        otel_mixpanel.track("Invoice Paid")
    assert exporter.force_flush(5000)
    assert sorted(e["event"] for e in ingest.events()) == ["Invoice Paid", "Plan Upgraded"]
    assert {e["properties"]["distinct_id"] for e in ingest.events()} == {"user-7"}
