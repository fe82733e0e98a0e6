"""Start-up never fails for want of a token; the off switches; the development output; what start-up says."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

import otel_mixpanel
from conftest import DESKTOP_CHROME, quick_delivery, record_spans, text_app
from otel_mixpanel.compiled import conversion_build
from otel_mixpanel.config import ConfigError
from otel_mixpanel.enrich import client_ip

INSTRUMENT = Path(sys.executable).with_name("opentelemetry-instrument")


def one_visit(tracer) -> None:
    """A login request with a business event and a profile update, as a web app would record it."""
    with tracer.start_as_current_span("POST /login") as span:
        span.set_attribute("enduser.pseudo.id", "device-1")
        otel_mixpanel.identify("user-7")
        otel_mixpanel.track("Logged In", {"method": "password"})
        otel_mixpanel.set_profile({"plan": "pro"})


def delivery_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("otel-mixpanel")}


def off_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "Mixpanel export is off" in r.getMessage()]


def test_without_a_token_the_exporter_turns_itself_off_with_one_warning(caplog, tmp_path):
    os.environ["OTEL_EXPORTER_MIXPANEL_SPOOL_DIR"] = str(tmp_path)
    threads_before = delivery_threads()
    with caplog.at_level(logging.WARNING, logger="otel_mixpanel"):
        exporter = otel_mixpanel.MixpanelSpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        one_visit(provider.get_tracer("tests"))
        spans = record_spans(one_visit)
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        assert exporter.force_flush(1000)
        provider.shutdown()
    [warning] = off_warnings(caplog)
    assert "OTEL_EXPORTER_MIXPANEL_TOKEN is not set" in warning and "OUTPUT=console" in warning
    assert list(tmp_path.iterdir()) == [], "a spool was opened"
    # Other tests' senders may still be winding their threads down: only new threads count.
    assert delivery_threads() - threads_before == set()


@pytest.mark.parametrize("switch", [{"OTEL_EXPORTER_MIXPANEL_ENABLED": "false"}, {"OTEL_SDK_DISABLED": "true"}],
                         ids=["exporter-switch", "sdk-switch"])
def test_an_off_switch_drops_everything_even_with_a_token(ingest, caplog, tmp_path, switch):
    os.environ.update({"OTEL_EXPORTER_MIXPANEL_TOKEN": "t", "OTEL_EXPORTER_MIXPANEL_ENDPOINT": ingest.url,
                       "OTEL_EXPORTER_MIXPANEL_SPOOL_DIR": str(tmp_path), **switch})
    with caplog.at_level(logging.WARNING, logger="otel_mixpanel"):
        exporter = otel_mixpanel.MixpanelSpanExporter()
        assert exporter.export(record_spans(one_visit)) is SpanExportResult.SUCCESS
        exporter.shutdown()
    [warning] = off_warnings(caplog)
    assert "ENABLED=false or OTEL_SDK_DISABLED=true" in warning
    assert ingest.requests == [] and list(tmp_path.iterdir()) == []


def test_sdk_switch_left_unset_or_false_keeps_the_exporter_on(pipeline):
    os.environ["OTEL_SDK_DISABLED"] = "false"
    exporter, _ = pipeline()
    assert exporter.settings.enabled and exporter.settings.off_reason is None


@pytest.mark.parametrize(("variable", "value", "expected"), [
    ("ENABLED", "maybe", "expected true or false"),
    ("OUTPUT", "printer", "expected mixpanel (send), console"),
    ("OUTPUT", "file:", "or file:<path>"),
    ("TIMEOUT", "soon", "expected a whole number"),
])
def test_a_bad_value_still_fails_at_start_without_a_token(variable, value, expected):
    os.environ["OTEL_EXPORTER_MIXPANEL_" + variable] = value
    with pytest.raises(ConfigError) as error:
        otel_mixpanel.MixpanelSpanExporter()
    assert f"OTEL_EXPORTER_MIXPANEL_{variable}=" in str(error.value) and expected in str(error.value)


def test_an_unwritable_output_file_fails_at_start_naming_the_variable(tmp_path):
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_MIXPANEL_OUTPUT=.*cannot open the file"):
        otel_mixpanel.MixpanelSpanExporter(output=f"file:{tmp_path}/missing-dir/events.jsonl")


def test_zero_code_app_starts_without_a_token_and_says_why_nothing_is_sent(tmp_path):
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent("""
        from opentelemetry import trace
        import otel_mixpanel

        with trace.get_tracer("job").start_as_current_span("work") as span:
            span.set_attribute("enduser.id", "ops-7")
            otel_mixpanel.track("Work Done")
        print("app ran")
    """))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update({"OTEL_TRACES_EXPORTER": "mixpanel", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
                "OTEL_EXPORTER_MIXPANEL_SPOOL_DIR": str(tmp_path / "spool")})
    result = subprocess.run([str(INSTRUMENT), sys.executable, str(script)], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == "app ran\n", result.stderr
    assert result.stderr.count("Mixpanel export is off") == 1, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "spool").exists()


def printed(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_console_output_prints_what_would_be_sent_with_the_same_conversion(ingest, capsys):
    spans = record_spans(one_visit)
    sending = otel_mixpanel.MixpanelSpanExporter(**quick_delivery(endpoint=ingest.url, events_api="track"))
    printing = otel_mixpanel.MixpanelSpanExporter(output="console", token="test-token", events_api="track")
    try:
        assert sending.export(spans) is SpanExportResult.SUCCESS
        assert sending.force_flush(5000)
        capsys.readouterr()
        assert printing.export(spans) is SpanExportResult.SUCCESS
        lines = printed(capsys.readouterr().err)
    finally:
        sending.shutdown(1000)
        printing.shutdown(1000)
    events = [line["record"] for line in lines if line["path"] == "/track"]
    profiles = [line["record"] for line in lines if line["path"] == "/engage"]
    # The same records, but for the token, which is masked wherever it is printed.
    assert [e["properties"].pop("token") for e in events] == ["***"] * len(events)
    assert [p.pop("$token") for p in profiles] == ["***"] * len(profiles)
    for record in ingest.events():
        del record["properties"]["token"]
    for record in ingest.profile_updates():
        del record["$token"]
    assert events == ingest.events() and len(events) == 1
    assert profiles == ingest.profile_updates() and profiles[0]["$set"] == {"plan": "pro"}
    assert "test-token" not in json.dumps(lines)


def test_file_output_appends_json_lines_without_a_token_or_threads(tmp_path):
    target = tmp_path / "events.jsonl"
    threads_before = delivery_threads()
    for _ in range(2):
        exporter = otel_mixpanel.MixpanelSpanExporter(output=f"file:{target}")
        exporter.export(record_spans(one_visit))
        exporter.shutdown()
    lines = printed(target.read_text())
    assert [(line["path"], line["record"].get("event")) for line in lines] == [
        ("/track", "Logged In"), ("/engage", None)] * 2
    assert lines[0]["record"]["properties"]["distinct_id"] == "user-7"
    assert "token" not in lines[0]["record"]["properties"]
    # Other tests' senders may still be winding their threads down: only new threads count.
    assert delivery_threads() - threads_before == set()


def test_the_official_sdk_prints_through_the_console_sender_too(capsys):
    import mixpanel

    exporter = otel_mixpanel.MixpanelSpanExporter(output="console", token="test-token")
    mixpanel.Mixpanel("test-token", consumer=exporter.sender).track("user-7", "Plan Upgraded", {"plan": "team"})
    [line] = printed(capsys.readouterr().err)
    assert line["path"] == "/import" and line["record"]["event"] == "Plan Upgraded"
    assert line["record"]["properties"]["token"] == "***"


def test_start_up_says_where_events_go_once_without_secrets(caplog, tmp_path):
    with caplog.at_level(logging.INFO, logger="otel_mixpanel"):
        exporter = otel_mixpanel.MixpanelSpanExporter(
            token="S3CRET-TOKEN", api_secret="S3CRET-API", endpoint="https://api-eu.mixpanel.com",
            id_merge="original", spool_dir=str(tmp_path))
        exporter.shutdown(100)
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "Mixpanel export" in
              r.getMessage()]
    assert "https://api-eu.mixpanel.com/import" in line and "ID Merge: original" in line
    assert f"spool: {tmp_path}" in line and f"conversion: {conversion_build()}" in line
    assert "S3CRET" not in caplog.text


def test_development_output_says_so_at_start_up_and_which_build_converts(caplog):
    with caplog.at_level(logging.INFO, logger="otel_mixpanel"):
        otel_mixpanel.MixpanelSpanExporter(output="console").shutdown(100)
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "Mixpanel export" in
              r.getMessage()]
    assert "nothing is sent" in line and f"conversion: {conversion_build()}" in line


def test_forwarding_headers_without_a_trusted_proxy_are_warned_about_once(site_factory, caplog, monkeypatch):
    monkeypatch.setattr(client_ip, "_warned_untrusted_forwarding", False)
    trusting = site_factory(text_app, trusted_proxies="1", capture_headers="x-forwarded-for,forwarded")
    trusting.request("/", headers={"User-Agent": DESKTOP_CHROME, "X-Forwarded-For": "203.0.113.9"})
    with caplog.at_level(logging.WARNING, logger="otel_mixpanel"):
        trusting.flush()
        assert "no proxy is trusted" not in caplog.text
        site = site_factory(text_app, capture_headers="x-forwarded-for,forwarded")
        site.request("/", headers={"User-Agent": DESKTOP_CHROME, "X-Forwarded-For": "203.0.113.9"})
        site.request("/a", headers={"User-Agent": DESKTOP_CHROME, "Forwarded": "for=198.51.100.1"})
        site.flush()
    warnings = [r.getMessage() for r in caplog.records if "no proxy is trusted" in r.getMessage()]
    assert len(warnings) == 1 and "OTEL_EXPORTER_MIXPANEL_TRUSTED_PROXIES" in warnings[0]
