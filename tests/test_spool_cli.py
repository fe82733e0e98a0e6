"""The otel-mixpanel command on spool files: --version, status of every file, drain --spool, progress."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from importlib.metadata import version

import pytest

import otel_mixpanel

from otel_mixpanel.compiled import conversion_build
from otel_mixpanel.delivery.spool import Spool, spool_path
from otel_mixpanel.testing.ingest_server import IngestServer

from delivery_helpers import assert_exactly_once, insert_ids, messages
from test_spool_recovery import GOOD_TOKEN, WRONG_TOKEN, run_until_refused, settings_with, token_messages


def environment(url: str, spool_dir, token: str = GOOD_TOKEN, service: str = "cli", **extra: str) -> dict[str, str]:
    values = {"TOKEN": token, "ENDPOINT": url, "SPOOL_DIR": str(spool_dir), "TIMEOUT": "2000",
              "RETRY_INITIAL_BACKOFF": "20", "RETRY_MAX_BACKOFF": "100", "SCHEDULE_DELAY": "20", **extra}
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    env.update({f"OTEL_EXPORTER_MIXPANEL_{name}": value for name, value in values.items()})
    env["OTEL_SERVICE_NAME"] = service
    return env


def cli(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "otel_mixpanel.cli", *argv], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def service(monkeypatch):
    return lambda name: monkeypatch.setenv("OTEL_SERVICE_NAME", name)


def test_version_is_the_packages(tmp_path):
    result = cli("--version", env=environment("http://127.0.0.1:9", tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"otel-mixpanel {otel_mixpanel.__version__} ({conversion_build()})"
    assert otel_mixpanel.__version__ == version("otel-mixpanel")


def test_status_lists_every_spool_file_with_its_last_error(tmp_path, service):
    service("billing")
    with IngestServer(credentials=(GOOD_TOKEN, "")) as server:
        refused = run_until_refused(server.url, tmp_path, WRONG_TOKEN, 4)
        current = Spool(spool_path(settings_with(server.url, tmp_path, GOOD_TOKEN)), max_events=100, max_bytes=10**6)
        current.put_many(token_messages(GOOD_TOKEN, 3))
        current.close()
        # A corrupt file, moved aside by the spool that found it.
        broken_settings = settings_with(server.url, tmp_path, "third-token")
        with open(spool_path(broken_settings), "wb") as garbage:
            garbage.write(b"garbage" * 1000)
        broken = Spool(spool_path(broken_settings), max_events=100, max_bytes=10**6)
        broken.put_many(messages(1))
        broken.close()

        result = cli("status", env=environment(server.url, tmp_path))
        assert result.returncode == 0, result.stderr
        text = result.stdout
        old_name = os.path.basename(spool_path(settings_with(server.url, tmp_path, WRONG_TOKEN)))
        assert f"spool: {spool_path(settings_with(server.url, tmp_path, GOOD_TOKEN))} (current settings)" in text
        assert "events: 3 pending" in text
        assert f"spool: {old_name}\n  events: {len(refused)} pending" in text
        assert "last delivery error" in text and "HTTP 401" in text
        assert f"otel-mixpanel drain --spool {old_name}" in text
        assert "(corrupt, moved aside)" in text
        for secret in (GOOD_TOKEN, WRONG_TOKEN):
            assert secret not in text

        result = cli("status", "--json", env=environment(server.url, tmp_path))
        state = json.loads(result.stdout)
        files = {os.path.basename(item["path"]): item for item in state["files"]}
        assert len(files) == 4  # current, refused, the corrupt one moved aside, its replacement
        assert files[old_name]["events"] == 4 and files[old_name]["credentials_refused"] is True
        assert files[old_name]["oldest_age_s"] >= 0
        assert sum(item["corrupt"] for item in files.values()) == 1
        assert {e["endpoint"]: e["events"] for e in state["endpoints"]} == {"events": 3}


def test_drain_takes_over_a_named_spool_file_with_the_current_credentials(tmp_path, service):
    service("another-application")  # so that no sender takes it over by itself
    with IngestServer(credentials=(GOOD_TOKEN, "")) as server:
        kept = run_until_refused(server.url, tmp_path, WRONG_TOKEN, 5)
        name = os.path.basename(spool_path(settings_with(server.url, tmp_path, WRONG_TOKEN)))
        result = cli("drain", "--spool", name, "--timeout-ms", "5000", env=environment(server.url, tmp_path))
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"took 5 records from {name}" in result.stdout
        assert_exactly_once(server, kept)
        assert {e["properties"]["token"] for e in server.events()} == {GOOD_TOKEN}
        again = cli("status", env=environment(server.url, tmp_path))
        assert f"spool: {name}\n  pending: nothing" in again.stdout
        assert "records moved to spool-" in again.stdout


def test_drain_shows_progress_on_a_terminal(tmp_path):
    with IngestServer(credentials=(GOOD_TOKEN, "")) as server:
        spool = Spool(spool_path(settings_with(server.url, tmp_path, GOOD_TOKEN)), max_events=10**4, max_bytes=10**8)
        items = token_messages(GOOD_TOKEN, 300)
        spool.put_many(items)
        spool.close()
        server.latency = 0.25  # a slow Mixpanel, small batches: the drain lasts several progress intervals
        leader, follower = pty.openpty()
        child = subprocess.Popen([sys.executable, "-m", "otel_mixpanel.cli", "drain", "--timeout-ms", "20000"],
                                 env=environment(server.url, tmp_path, BATCH_SIZE="50"),
                                 stdout=follower, stderr=follower)
        os.close(follower)
        output = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed with the child
                break
            if not chunk:
                break
            output += chunk
        assert child.wait(timeout=30) == 0, output
        os.close(leader)
        assert_exactly_once(server, insert_ids(items))
    text = output.decode()
    assert text.count("\rdelivering: ") >= 2
    assert "delivering: 300 sent, 0 rejected, 0 left" in text
    assert "sent 300, rejected 0" in text
