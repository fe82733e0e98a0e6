"""What a visit to a shop sends to Mixpanel, with no Mixpanel account: ``python examples/demo.py``.

Runs the plain WSGI example (``wsgi_app.py``) on loopback with its exporter pointed at a local
Mixpanel look-alike, drives one visit through it as a phone's browser would (an anonymous
landing from a Google ad, a sign-up, a login, pages seen logged in), then prints, as JSON,
the events and profile updates Mixpanel would have received. Nothing leaves this machine.
"""

from __future__ import annotations

import json
import os
import sys
import threading

from otel_mixpanel.testing.ingest_server import IngestServer


def main() -> None:
    with IngestServer() as mixpanel:
        os.environ.update({
            "OTEL_EXPORTER_MIXPANEL_TOKEN": "demo-project-token",
            "OTEL_EXPORTER_MIXPANEL_ENDPOINT": mixpanel.url,
            "OTEL_EXPORTER_MIXPANEL_SPOOL": "memory",
        })
        # Imported once the settings are in place, as an application started with them would be.
        import wsgi_app
        from browser import visit

        server, provider = wsgi_app.start("127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        try:
            visit(f"http://127.0.0.1:{server.server_port}")
        finally:
            server.shutdown()
            server.server_close()
            # Hands over the last spans and delivers everything before the look-alike stops.
            provider.shutdown()
        received = {
            "events": sorted(mixpanel.events(), key=lambda e: e["properties"]["time"]),
            "profile_updates": mixpanel.profile_updates(),
        }
    json.dump(received, sys.stdout, indent=2, ensure_ascii=False)
    print()
    print(f"Mixpanel would have received {len(received['events'])} events and "
          f"{len(received['profile_updates'])} profile update(s), shown above; nothing was sent.", file=sys.stderr)


if __name__ == "__main__":
    main()
