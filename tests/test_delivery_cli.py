"""The otel-mixpanel command: status, drain and check against a loopback IngestServer."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from otel_mixpanel import cli
from otel_mixpanel.delivery.spool import open_spool
from otel_mixpanel.testing.ingest_server import IngestServer

from delivery_helpers import API_SECRET, TOKEN, assert_exactly_once, fast_settings, insert_ids, messages


@pytest.fixture
def env(monkeypatch, tmp_path):
    """Points the environment at ``url`` with fast delivery settings, as an operator would."""

    def configure(url: str, **extra: str) -> None:
        values = {"TOKEN": TOKEN, "API_SECRET": API_SECRET, "ENDPOINT": url, "SPOOL_DIR": str(tmp_path),
                  "TIMEOUT": "500", "RETRY_INITIAL_BACKOFF": "20", "RETRY_MAX_BACKOFF": "100",
                  "SCHEDULE_DELAY": "20", **extra}
        for name, value in values.items():
            monkeypatch.setenv(f"OTEL_EXPORTER_MIXPANEL_{name}", value)

    return configure


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli.main(list(argv), out=out)
    return code, out.getvalue()


def spool_some(url: str, tmp_path, count: int) -> list[str]:
    """Leaves ``count`` events in the spool, as a process that could not reach Mixpanel would."""
    # Written to the spool directly: a sender's thread could claim and send them before a shutdown.
    spool = open_spool(fast_settings(url, tmp_path))
    items = messages(count) + [("people", json.dumps({"$token": TOKEN, "$distinct_id": "u1", "$set": {}}))]
    spool.put_many(items)
    spool.close()
    return insert_ids(items[:count])


def test_status_reports_pending_records_per_endpoint(env, tmp_path):
    env("http://127.0.0.1:9")
    code, text = run("status")
    assert code == 0 and "pending: nothing" in text and "(not created yet)" in text
    spool_some("http://127.0.0.1:9", tmp_path, 7)
    code, text = run("status")
    assert code == 0
    assert "spool-" in text and "events: 7 pending" in text and "people: 1 pending" in text
    code, text = run("status", "--json")
    state = json.loads(text)
    assert {e["endpoint"]: e["events"] for e in state["endpoints"]} == {"events": 7, "people": 1}
    assert TOKEN not in text and API_SECRET not in text


def test_drain_delivers_the_spool(env, tmp_path):
    with IngestServer(credentials=(API_SECRET, "")) as server:
        env(server.url)
        expected = spool_some(server.url, tmp_path, 12)
        code, text = run("drain", "--timeout-ms", "5000")
        assert code == 0, text
        assert "0 still in the spool" in text
        assert_exactly_once(server, expected)
        assert len(server.profile_updates()) == 1


def test_drain_fails_within_its_deadline_when_mixpanel_is_unreachable(env, tmp_path):
    env("http://127.0.0.1:9")
    spool_some("http://127.0.0.1:9", tmp_path, 3)
    code, text = run("drain", "--timeout-ms", "300")
    assert code == 1
    assert "4 still in the spool" in text and "within 300 ms" in text


def test_check_accepts_good_credentials(env):
    with IngestServer(credentials=(API_SECRET, "")) as server:
        env(server.url)
        code, text = run("check")
    assert code == 0 and "OK: /import accepted the credentials" in text
    assert server.requests[-1].path == "/import" and server.requests[-1].records == []


def test_check_reports_bad_credentials(env):
    with IngestServer(credentials=(API_SECRET, "")) as server:
        env(server.url, API_SECRET="wrong-secret")
        code, text = run("check")
    assert code == 1 and "bad credentials" in text and "401" in text
    assert "wrong-secret" not in text


def test_check_reports_an_unreachable_endpoint(env):
    env("http://127.0.0.1:9")
    code, text = run("check", "--timeout-ms", "500")
    assert code == 1 and "endpoint unreachable" in text


def test_check_reports_a_configuration_error(env, monkeypatch):
    env("http://127.0.0.1:9")
    monkeypatch.delenv("OTEL_EXPORTER_MIXPANEL_TOKEN")
    monkeypatch.setenv("OTEL_EXPORTER_MIXPANEL_TIMEOUT", "soon")
    code, text = run("check")
    assert code == 2 and "configuration error" in text and "OTEL_EXPORTER_MIXPANEL_TIMEOUT" in text


@pytest.mark.parametrize("command", ["check", "drain"])
def test_sending_commands_say_when_there_is_no_token(env, monkeypatch, command, ingest):
    env(ingest.url, OUTPUT="console")
    monkeypatch.delenv("OTEL_EXPORTER_MIXPANEL_TOKEN")
    monkeypatch.delenv("OTEL_EXPORTER_MIXPANEL_API_SECRET")
    code, text = run(command)
    assert code == 2 and "OTEL_EXPORTER_MIXPANEL_TOKEN is not set" in text
    assert ingest.requests == []


def test_the_command_runs_as_a_module(env):
    env("http://127.0.0.1:9")
    result = subprocess.run([sys.executable, "-m", "otel_mixpanel.cli", "status"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "spool:" in result.stdout


def test_subcommand_table_is_extensible():
    def hello(args, out):
        print(f"hello {args.name}", file=out)
        return 0

    command = cli.Command("hello", "say hello", hello, lambda parser: parser.add_argument("name"))
    args = cli.build_parser([*cli.COMMANDS, command]).parse_args(["hello", "world"])
    out = io.StringIO()
    assert args.run(args, out) == 0 and out.getvalue() == "hello world\n"
