"""What users install: one version everywhere, and the metadata (the wheel's contents: .ci/check_wheel.py)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import metadata, version

import otel_mixpanel
from conftest import record_spans
from otel_mixpanel.compiled import COMPILED_MODULES, conversion_build, is_compiled
from otel_mixpanel.events import LIBRARY_VERSION


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


def modules_loaded_by(code: str) -> set[str]:
    run = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return set(run.stdout.split())


HEAVY = {"requests", "sqlite3", "orjson", "ua_parser", "mixpanel", "opentelemetry.sdk.trace.export"}


def test_importing_the_package_loads_no_conversion_or_delivery_machinery():
    assert modules_loaded_by("import otel_mixpanel; otel_mixpanel.track") & HEAVY == set()


def test_the_helpers_and_the_middleware_use_the_opentelemetry_api_only():
    loaded = modules_loaded_by("import otel_mixpanel, otel_mixpanel.web, otel_mixpanel.web.asgi")
    assert not [name for name in loaded if name.startswith("opentelemetry.sdk")]


def test_delivery_loads_when_a_sending_exporter_is_built_and_the_official_sdk_only_for_a_service_account():
    off = modules_loaded_by("from otel_mixpanel import MixpanelSpanExporter; MixpanelSpanExporter()")
    assert {"requests", "sqlite3", "mixpanel"} & off == set()
    on = modules_loaded_by("from otel_mixpanel import MixpanelSpanExporter; MixpanelSpanExporter(token='t', "
                           "spool='memory').shutdown()")
    assert {"requests", "sqlite3"} <= on and "mixpanel" not in on


def test_the_conversion_modules_are_compiled_all_together_or_not_at_all():
    # Half a set cannot happen by design (setup.py removes every extension when one fails); a stale in-place
    # build beside edited sources is caught by conftest.
    kinds = {module: is_compiled(module) for module in COMPILED_MODULES}
    assert len(set(kinds.values())) == 1, kinds
    assert conversion_build() == ("compiled with mypyc" if kinds["otel_mixpanel.context"] else "pure Python")
