"""The baseline: Mixpanel's server-side guidance followed to the letter.

``track_to_mp`` joins the snippets of the seeds' "Server-Side Best Practices" page
(``shared/seeds/001_*``) into the one helper an application would write: ua-parser's
legacy ``user_agent_parser.Parse`` on every call, referrer and UTM properties built by
hand, the client IP, ``$device_id`` from a cookie and ``$user_id`` when logged in, then
``mixpanel.Mixpanel.track`` through a ``BufferedConsumer`` (batches of 50, posted on
the calling thread when a batch fills up).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlparse

from mixpanel import BufferedConsumer, Mixpanel
from ua_parser import user_agent_parser

UTM_KEYS = ["utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term"]


@dataclass
class User:
    username: str | None = None

    def is_authenticated(self) -> bool:
        return self.username is not None


@dataclass
class Request:
    """What the seeds' helper reads from a framework request (Flask/Django-like)."""

    headers: dict[str, str]
    args: dict[str, str]
    remote_addr: str
    cookies: dict[str, str]
    user: User = field(default_factory=User)


def make_mixpanel(token: str, server_url: str) -> tuple[Mixpanel, BufferedConsumer]:
    consumer = BufferedConsumer(max_size=50, events_url=server_url + "/track", request_timeout=10)
    return Mixpanel(token, consumer=consumer), consumer


def track_to_mp(mp: Mixpanel, request: Request, event_name: str, properties: dict) -> None:
    parsed = user_agent_parser.Parse(request.headers["User-Agent"])
    properties.update({
        "$browser": parsed["user_agent"]["family"],
        "$device": parsed["device"]["family"],
        "$os": parsed["os"]["family"],
    })

    if "Referer" in request.headers:
        properties.update({
            "$referrer": request.headers["Referer"],
            "$referring_domain": urlparse(request.headers["Referer"]).hostname,
        })

    utm_values = {key: request.args[key] for key in UTM_KEYS if request.args.get(key)}
    properties.update(utm_values)

    properties["ip"] = request.remote_addr
    properties["$device_id"] = request.cookies.get("SESSION_ID")
    if request.user.is_authenticated():
        properties["$user_id"] = request.user.username

    mp.track("", event_name, properties)
