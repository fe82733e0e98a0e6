"""The README's zero-code route, as a new user takes it, in the fresh virtual environment running this script.

Run by .ci/run after ``pip install '.[instrument]' flask`` and ``opentelemetry-bootstrap -a install`` in an
empty venv: the README's command runs examples/flask_app.py, one browser visit is made, and the page views
must reach a local Mixpanel look-alike. Exits non-zero, with the app's output, when they do not.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

from browser import Browser  # noqa: E402

from otel_mixpanel.testing.ingest_server import IngestServer  # noqa: E402


def main() -> int:
    bin_dir = Path(sys.executable).parent
    with IngestServer() as ingest:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update({"OTEL_TRACES_EXPORTER": "mixpanel", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
                    "OTEL_EXPORTER_MIXPANEL_TOKEN": "ci-token", "OTEL_EXPORTER_MIXPANEL_ENDPOINT": ingest.url,
                    "OTEL_EXPORTER_MIXPANEL_SPOOL": "memory", "PORT": "0", "PYTHONUNBUFFERED": "1",
                    "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"})
        app = subprocess.Popen(["opentelemetry-instrument", "python", str(ROOT / "examples" / "flask_app.py")],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            seen: list[str] = []
            found = None
            while found is None:
                line = app.stdout.readline()
                if not line:
                    print("the app did not start:", "".join(seen))
                    return 1
                seen.append(line)
                found = re.search(r"listening on (http://\S+)", line)
            browser = Browser(found.group(1))
            for path in ("/", "/pricing"):
                assert browser.open(path) == 200, path
            events = ingest.wait_for(2, timeout=20)
        finally:
            app.terminate()
            output = app.communicate(timeout=20)[0]
    views = [e for e in events if e["event"] == "$mp_web_page_view"]
    if len(views) != 2 or views[0]["properties"].get("$device_id") is None:
        print(f"expected 2 page views with a device id, got {events}\n{output}")
        return 1
    print(f"zero-code route: {len(views)} page views reached the look-alike")
    return 0


if __name__ == "__main__":
    sys.exit(main())
