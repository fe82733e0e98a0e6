"""Where each kind of record goes: the Mixpanel API, its query parameters and body format.

Kept apart from ``transport`` so that code which only needs to name the path (the development
printer) does not import an HTTP client.
"""

from __future__ import annotations

from dataclasses import dataclass

from otel_mixpanel.config import Settings
from otel_mixpanel.delivery.endpoints import Endpoint


@dataclass(frozen=True)
class Route:
    """Where the records of one consumer endpoint go and how they are wrapped."""

    url: str
    params: dict[str, str]
    form: bool
    authenticated: bool

    @property
    def path(self) -> str:
        return "/" + self.url.rsplit("/", 1)[-1]


def route_for(settings: Settings, endpoint: Endpoint | str) -> Route:
    endpoint = Endpoint.named(endpoint)
    base = settings.endpoint.rstrip("/")
    if endpoint is Endpoint.IMPORTS or (endpoint is Endpoint.EVENTS and settings.uses_import):
        params = {"strict": "1"}
        if settings.service_account_username and settings.project_id:
            params["project_id"] = settings.project_id
        return Route(f"{base}/import", params, form=False, authenticated=True)
    # ip=0: without it Mixpanel would geolocate every event to this server's address.
    form_params = {"verbose": "1", "ip": "0"}
    path = {Endpoint.EVENTS: "track", Endpoint.PEOPLE: "engage", Endpoint.GROUPS: "groups"}[endpoint]
    return Route(f"{base}/{path}", form_params, form=True, authenticated=False)
