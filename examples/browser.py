"""A phone's browser, as far as a server can tell, and the visit the examples are driven through.

Used by ``examples/demo.py`` and by the tests of every example.
"""

from __future__ import annotations

import http.cookiejar
import urllib.error
import urllib.parse
import urllib.request

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1")
DEVICE_COOKIE = "otel_mp_device_id"
# What Safari sends beside its User-Agent when it loads a page: the server tells page loads
# from API calls by these.
NAVIGATION = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Sec-Fetch-Dest": "document",
    "Sec-Fetch-Mode": "navigate",
}


class Browser:
    """An iPhone's Safari: its User-Agent and page-load headers, and the cookies it is given kept
    for the next request."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def open(self, path: str, form: dict[str, str] | None = None, referer: str | None = None) -> int:
        headers = {"User-Agent": IPHONE, **NAVIGATION}
        if referer:
            headers["Referer"] = referer
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(self.base + path, data=data, headers=headers)
        try:
            with self.opener.open(request, timeout=10) as response:
                response.read()
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    def cookie(self, name: str = DEVICE_COOKIE) -> str | None:
        return next((c.value for c in self.jar if c.name == name), None)


def visit(base: str) -> str:
    """An anonymous phone visit from a Google ad, a sign-up, a login, identified visits; returns the device id."""
    browser = Browser(base)
    steps = [
        ("/?utm_source=google&utm_medium=cpc&utm_campaign=spring", None, "https://www.google.com/"),
        ("/pricing", None, base + "/"),
        ("/signup", {"email": "ada@example.com", "plan": "pro"}, None),
        ("/login", {"email": "ada@example.com"}, None),
        ("/account", None, base + "/pricing"),
        ("/checkout", {"amount": "49.5"}, None),
    ]
    for path, form, referer in steps:
        status = browser.open(path, form, referer)
        if status != 200:
            raise RuntimeError(f"{path} answered {status}")
    device = browser.cookie()
    if not device:
        raise RuntimeError("the site gave the browser no device-id cookie")
    return device
