"""What users install: one version everywhere, the licence, the typing marker and the metadata in the wheel."""

from __future__ import annotations

import email
import os
import subprocess
import sys
import zipfile
from importlib.metadata import metadata, version
from pathlib import Path

import otel_mixpanel
from conftest import record_spans
from otel_mixpanel.events import LIBRARY_VERSION

ROOT = Path(__file__).resolve().parent.parent


def test_one_version_in_the_code_the_metadata_and_every_event(capsys):
    assert otel_mixpanel.__version__ == version("otel-mixpanel") == LIBRARY_VERSION

    def visit(tracer):
        with tracer.start_as_current_span("job") as span:
            span.set_attribute("enduser.id", "u-1")
            otel_mixpanel.track("Happened")

    exporter = otel_mixpanel.MixpanelSpanExporter(output="console")
    exporter.export(record_spans(visit))
    assert f'"$lib_version": "{otel_mixpanel.__version__}"' in capsys.readouterr().err


def test_installed_metadata_declares_licence_python_versions_and_typing():
    meta = metadata("otel-mixpanel")
    assert meta["License-Expression"] == "Apache-2.0"
    classifiers = meta.get_all("Classifier")
    assert "Framework :: OpenTelemetry :: Exporters" in classifiers and "Typing :: Typed" in classifiers
    supported = sorted(c.rsplit(" ", 1)[1] for c in classifiers if c.startswith("Programming Language :: Python :: 3."))
    assert supported == ["3.10", "3.11", "3.12", "3.13"]
    assert meta["Requires-Python"] == ">=3.10"


def test_the_wheel_carries_the_licence_and_the_typing_marker(tmp_path):
    # Built as users' installers build it: in an isolated environment with the declared build requirements.
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                           capture_output=True, text=True, timeout=300, env={**os.environ, "PIP_NO_INPUT": "1"})
    assert build.returncode == 0, build.stderr
    [wheel] = tmp_path.glob("otel_mixpanel-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [meta_name] = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = email.message_from_bytes(archive.read(meta_name))
        [licence] = [n for n in names if n.endswith("/LICENSE") and ".dist-info/" in n]
        licence_text = archive.read(licence).decode()
    assert "otel_mixpanel/py.typed" in names
    assert licence_text == (ROOT / "LICENSE").read_text() and "Apache License" in licence_text
    assert meta["Version"] == otel_mixpanel.__version__ and meta["License-Expression"] == "Apache-2.0"
    assert not [n for n in names if n.startswith(("tests/", "examples/", "benchmarks/"))]
