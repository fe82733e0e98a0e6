"""A production-like request stream, with the cardinality of real traffic.

``benchmarks/workload.py``'s shop has ten user agents, a hundred pages and three campaign
links, so every cache of the exporter holds its whole world after a few hundred requests.
Real traffic does not repeat that much:

- every visitor has its own address (a quarter of them IPv6, as mobile carriers hand out);
- a dozen browsers, each in many builds and on many devices (Android models, in-app
  browsers with their own version strings), so a few thousand distinct user agents;
- thousands of product pages, search queries, and internal referrers (the previous page,
  query string included);
- landing pages tagged with UTM parameters and a click id unique to each click (``gclid``,
  ``fbclid``, a newsletter's per-recipient ``mc_eid``);
- browsers send the headers real ones do (``Accept``, ``Sec-Fetch-Dest``/``-Mode``/``-Site``,
  ``Accept-Language``), page loads as navigations, and the page's own API calls as
  ``fetch()`` requests answered with JSON;
- a visitor's first request has no device cookie; 30% of visitors are logged in.

``Cardinality`` sets how many distinct values of each kind the stream draws from, so that
``benchmarks/steady.py`` can sweep them one at a time.
"""

from __future__ import annotations

import ipaddress
import random
import uuid
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

from benchmarks.workload import HOST, Visit
from otel_mixpanel.web.device_id import DeviceIdOptions
from otel_mixpanel.web.first_touch import encode_first_touch, resolve_first_touch

# The middleware's defaults: its first-touch cookie is what the browser sends back after its first visit.
MIDDLEWARE_OPTIONS = DeviceIdOptions.build()

Choice = Callable[[random.Random], str]


@dataclass(frozen=True)
class Cardinality:
    """How many distinct values the stream draws from (a production-like site by default)."""

    # Visitors at once; each new visitor replaces one at random, one request in ``new_visitor_every``.
    active_visitors: int = 2_000
    new_visitor_every: int = 6
    user_agents: int = 3_000
    products: int = 5_000
    search_terms: int = 2_000
    # Landing pages with a click id unique to the click (gclid, fbclid, mc_eid).
    click_ids: bool = True
    # Share of visitors on IPv6.
    ipv6: float = 0.25
    # Browsers send Accept and Sec-Fetch-* headers (all current ones do).
    fetch_metadata: bool = True

    def label(self) -> str:
        return (f"UAs {self.user_agents:,}, products {self.products:,}, searches {self.search_terms:,}, "
                f"click ids {'yes' if self.click_ids else 'no'}, IPv6 {self.ipv6:.0%}, "
                f"visitors {self.active_visitors:,} (1 new per {self.new_visitor_every})")


PRODUCTION = Cardinality()
# The benchmark shop's world, in this stream's shape: what every cache holds after a few hundred requests.
SMALL = Cardinality(active_visitors=2_000, user_agents=10, products=100, search_terms=10, click_ids=False, ipv6=0.0)

# --- Browsers: (weight, family, builds the user agent from a random generator) -------------------------

ANDROID_MODELS = ("SM-S918B", "SM-A536B", "SM-G991B", "SM-A546B", "Pixel 7", "Pixel 8", "Pixel 6a", "M2101K6G",
                  "2201117TY", "CPH2305", "moto g(30)", "RMX3630", "V2204", "SM-A145R", "SM-T220", "K")
CHROME_DESKTOP = ("Mozilla/5.0 ({os}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.0.0 "
                  "Safari/537.36")
WINDOWS = "Windows NT 10.0; Win64; x64"
MAC = "Macintosh; Intel Mac OS X 10_15_7"


def _chrome_windows(rng: random.Random) -> str:
    return CHROME_DESKTOP.format(os=WINDOWS, major=rng.randint(109, 125))


def _chrome_mac(rng: random.Random) -> str:
    return CHROME_DESKTOP.format(os=MAC, major=rng.randint(109, 125))


def _edge(rng: random.Random) -> str:
    major = rng.randint(110, 125)
    return (CHROME_DESKTOP.format(os=WINDOWS, major=major)
            + f" Edg/{major}.0.{rng.randint(1500, 2600)}.{rng.randint(10, 130)}")


def _firefox(rng: random.Random) -> str:
    os = rng.choice((WINDOWS, "X11; Linux x86_64", "X11; Ubuntu; Linux x86_64", "Macintosh; Intel Mac OS X 10.15"))
    major = rng.randint(110, 126)
    return f"Mozilla/5.0 ({os}; rv:{major}.0) Gecko/20100101 Firefox/{major}.0"


def _safari_mac(rng: random.Random) -> str:
    version = f"{rng.randint(15, 17)}.{rng.randint(0, 6)}"
    return f"Mozilla/5.0 ({MAC}) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{version} Safari/605.1.15"


def _ios(rng: random.Random) -> tuple[str, str]:
    major, minor, patch = rng.randint(15, 17), rng.randint(0, 7), rng.randint(0, 3)
    return f"{major}_{minor}" + (f"_{patch}" if patch else ""), f"{major}.{minor}"


def _mobile_safari(rng: random.Random) -> str:
    os_version, version = _ios(rng)
    device = "iPhone; CPU iPhone OS" if rng.random() < 0.85 else "iPad; CPU OS"
    return (f"Mozilla/5.0 ({device} {os_version} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            f"Version/{version} Mobile/15E148 Safari/604.1")


def _chrome_ios(rng: random.Random) -> str:
    os_version, _ = _ios(rng)
    return (f"Mozilla/5.0 (iPhone; CPU iPhone OS {os_version} like Mac OS X) AppleWebKit/605.1.15 "
            f"(KHTML, like Gecko) CriOS/{rng.randint(115, 125)}.0.{rng.randint(5000, 6400)}.{rng.randint(50, 200)} "
            "Mobile/15E148 Safari/604.1")


def _chrome_android(rng: random.Random) -> str:
    return (f"Mozilla/5.0 (Linux; Android {rng.randint(10, 14)}; {rng.choice(ANDROID_MODELS)}) AppleWebKit/537.36 "
            f"(KHTML, like Gecko) Chrome/{rng.randint(112, 125)}.0.0.0 Mobile Safari/537.36")


def _samsung(rng: random.Random) -> str:
    return (f"Mozilla/5.0 (Linux; Android {rng.randint(11, 14)}; {rng.choice(ANDROID_MODELS[:4])}) "
            f"AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/{rng.randint(20, 25)}.0 "
            f"Chrome/{rng.randint(108, 121)}.0.0.0 Mobile Safari/537.36")


def _facebook_ios(rng: random.Random) -> str:
    os_version, _ = _ios(rng)
    return (f"Mozilla/5.0 (iPhone; CPU iPhone OS {os_version} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            f"Mobile/21A360 [FBAN/FBIOS;FBAV/{rng.randint(430, 460)}.0.0.{rng.randint(20, 60)}.{rng.randint(100, 120)};"
            f"FBBV/{rng.randint(500000000, 600000000)};FBDV/iPhone{rng.randint(12, 16)},{rng.randint(1, 5)};"
            f"FBMD/iPhone;FBSN/iOS;FBSV/{os_version.replace('_', '.')};FBSS/3;FBID/phone;FBLC/en_US;FBOP/5]")


def _instagram_android(rng: random.Random) -> str:
    return (f"Mozilla/5.0 (Linux; Android {rng.randint(11, 14)}; {rng.choice(ANDROID_MODELS)}; wv) AppleWebKit/537.36 "
            f"(KHTML, like Gecko) Version/4.0 Chrome/{rng.randint(115, 125)}.0.{rng.randint(5000, 6400)}.{rng.randint(50, 200)} "
            f"Mobile Safari/537.36 Instagram {rng.randint(300, 330)}.0.0.{rng.randint(10, 40)}.{rng.randint(100, 120)} "
            f"Android ({rng.randint(30, 34)}/{rng.randint(11, 14)}; {rng.choice((420, 440, 480))}dpi; 1080x2340; "
            f"samsung; {rng.choice(ANDROID_MODELS[:4])}; qcom; en_US; {rng.randint(500000000, 600000000)})")


def _opera(rng: random.Random) -> str:
    return (CHROME_DESKTOP.format(os=WINDOWS, major=rng.randint(110, 124))
            + f" OPR/{rng.randint(95, 110)}.0.{rng.randint(4000, 5000)}.{rng.randint(10, 99)}")


BROWSERS: tuple[tuple[int, Choice], ...] = (
    (22, _chrome_windows), (7, _chrome_mac), (5, _edge), (4, _firefox), (5, _safari_mac),
    (22, _mobile_safari), (3, _chrome_ios), (16, _chrome_android), (4, _samsung), (3, _facebook_ios),
    (3, _instagram_android), (1, _opera),
)
CRAWLERS = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/121.0.6167.184 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
)


def user_agent_pool(count: int, rng: random.Random) -> list[tuple[float, str]]:
    """``count`` distinct browser user agents with popularity weights: each browser's share split
    over its builds, the first ones the most common (Zipf-like), as in real traffic."""
    total = sum(weight for weight, _ in BROWSERS)
    pool: list[tuple[float, str]] = []
    for weight, make in BROWSERS:
        wanted = max(1, round(count * weight / total))
        seen: set[str] = set()
        for _ in range(wanted * 50):
            if len(seen) >= wanted:
                break
            seen.add(make(rng))
        for rank, agent in enumerate(sorted(seen, key=lambda _: rng.random())):
            pool.append((weight / (rank + 1) / sum(1 / (r + 1) for r in range(len(seen))), agent))
    return pool


# --- Visitors and their requests ---------------------------------------------------------------------

SEARCH_REFERRERS = ("https://www.google.com/", "https://www.google.de/", "https://www.google.co.uk/",
                    "https://www.bing.com/", "https://duckduckgo.com/", "android-app://com.google.android.gm/")
SOCIAL_REFERRERS = ("https://l.facebook.com/", "https://lm.facebook.com/", "https://www.instagram.com/",
                    "https://www.reddit.com/", "https://news.ycombinator.com/")
CATEGORIES = ("shoes", "running", "trail", "apparel", "accessories", "sale", "new", "kids", "women", "men")
LANGUAGES = ("en-US,en;q=0.9", "de-DE,de;q=0.9,en;q=0.8", "fr-FR,fr;q=0.9", "en-GB,en;q=0.9", "es-ES,es;q=0.9")
NAVIGATION_ACCEPT = {
    "chrome": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,"
              "application/signed-exchange;v=b3;q=0.7",
    "firefox": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    "safari": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
}


@dataclass
class Visitor:
    user_agent: str
    ip: str
    device_id: str
    user_id: str | None
    language: str
    # The page the visitor is on (None before the first request).
    page: str | None = None
    requests: int = 0
    cart: list[int] = field(default_factory=list)
    # The first-touch cookie the middleware set on the visitor's first response.
    first_touch_cookie: str = ""


def _ip(rng: random.Random, ipv6: float) -> str:
    if rng.random() < ipv6:
        return str(ipaddress.IPv6Address((0x2A00 << 112) | rng.getrandbits(112)))
    return f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def _accept_family(user_agent: str) -> str:
    if "Firefox/" in user_agent:
        return "firefox"
    if "Chrome/" in user_agent or "CriOS/" in user_agent:
        return "chrome"
    return "safari"


class RealisticStream:
    """An endless request stream; ``take(n)`` gives the next ``n`` requests as ``Visit``s."""

    def __init__(self, cardinality: Cardinality = PRODUCTION, seed: int = 1) -> None:
        self.cardinality = cardinality
        self._rng = random.Random(seed)
        pool = user_agent_pool(cardinality.user_agents, self._rng)
        self._agents = [agent for _, agent in pool]
        self._agent_weights = [weight for weight, _ in pool]
        self._serial = 0
        self._visitors = [self._new_visitor() for _ in range(cardinality.active_visitors)]

    def take(self, count: int) -> list[Visit]:
        return [self._next() for _ in range(count)]

    def __iter__(self) -> Iterator[Visit]:
        while True:
            yield self._next()

    def _new_visitor(self) -> Visitor:
        rng = self._rng
        self._serial += 1
        agent = rng.choices(self._agents, self._agent_weights)[0]
        device = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        user = f"user-{self._serial}" if rng.random() < 0.3 else None
        return Visitor(agent, _ip(rng, self.cardinality.ipv6), device, user, rng.choice(LANGUAGES))

    def _next(self) -> Visit:
        rng = self._rng
        if rng.random() < 0.04:
            return self._crawler()
        index = rng.randrange(len(self._visitors))
        if rng.random() < 1 / self.cardinality.new_visitor_every:
            self._visitors[index] = self._new_visitor()
        visitor = self._visitors[index]
        visit = self._landing(visitor) if visitor.page is None else self._following(visitor)
        visitor.requests += 1
        return visit

    def _crawler(self) -> Visit:
        rng = self._rng
        path, query = self._product_page()
        return Visit("GET", path, query, rng.choice(CRAWLERS), None, _ip(rng, 0.1), None, None,
                     headers={"HTTP_ACCEPT": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"})

    def _product_page(self) -> tuple[str, str]:
        return f"/products/{self._zipf(self.cardinality.products) + 1000}", ""

    def _zipf(self, count: int) -> int:
        """An index below ``count``, the first ones far more likely (popular pages, popular searches)."""
        return min(count - 1, int(count ** self._rng.random()) - 1)

    def _some_page(self) -> tuple[str, str]:
        rng = self._rng
        roll = rng.random()
        if roll < 0.45:
            return self._product_page()
        if roll < 0.65:
            category = rng.choice(CATEGORIES)
            return f"/c/{category}", rng.choice(("", "", "page=2", "sort=price_asc", f"page={rng.randint(2, 9)}"))
        if roll < 0.80:
            return "/search", f"q=term{self._zipf(self.cardinality.search_terms)}"
        return rng.choice(("/", "/", "/cart", "/account", "/about", "/help/shipping")), ""

    def _landing(self, visitor: Visitor) -> Visit:
        """A visitor's first request: no device cookie yet, often from a search engine or a campaign."""
        rng = self._rng
        path, query = self._some_page()
        roll = rng.random()
        referrer: str | None
        if roll < 0.25:
            referrer = None
        elif roll < 0.60:
            referrer = rng.choice(SEARCH_REFERRERS)
        elif roll < 0.75:
            referrer = rng.choice(SOCIAL_REFERRERS)
            query = self._campaign("facebook", "social", "fbclid")
        elif roll < 0.90:
            referrer = rng.choice(SEARCH_REFERRERS[:3])
            query = self._campaign("google", "cpc", "gclid")
        else:
            referrer = None
            query = self._campaign("newsletter", "email", "mc_eid")
        visitor.page = path + ("?" + query if query else "")
        state = resolve_first_touch(None, referrer, query, MIDDLEWARE_OPTIONS)
        if state is not None:
            cookie = encode_first_touch(state.touch)
            visitor.first_touch_cookie = f"{MIDDLEWARE_OPTIONS.first_touch_cookie_name}={cookie}"
        return self._navigation(visitor, path, query, referrer, "cross-site" if referrer else "none",
                                with_cookie=False)

    def _campaign(self, source: str, medium: str, click_id: str) -> str:
        rng = self._rng
        query = (f"utm_source={source}&utm_medium={medium}&utm_campaign={rng.choice(('winter_sale', 'launch', 'brand'))}"
                 f"&utm_content={rng.choice(('hero', 'carousel', 'text'))}")
        if self.cardinality.click_ids:
            query += f"&{click_id}=" + "".join(rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", k=32))
        return query

    def _following(self, visitor: Visitor) -> Visit:
        """A later request: a page, the page's API calls, adding to the cart, an asset or a dead link."""
        rng = self._rng
        roll = rng.random()
        referrer = f"https://{HOST}{visitor.page}"
        if roll < 0.55:
            path, query = self._some_page()
            visit = self._navigation(visitor, path, query, referrer, "same-origin", with_cookie=True)
            visitor.page = path + ("?" + query if query else "")
            return visit
        if roll < 0.80:
            path, query = rng.choice((("/api/cart", ""), ("/api/recommendations", f"product={self._zipf(self.cardinality.products) + 1000}"),
                                      ("/api/session", ""), ("/api/stock", f"sku={rng.randint(10000, 99999)}")))
            return self._fetch(visitor, "GET", path, query, referrer, [])
        if roll < 0.90:
            product = self._zipf(self.cardinality.products) + 1000
            visitor.cart.append(product)
            event = ("Added To Cart", {"product_id": product, "price": round(rng.uniform(9, 240), 2), "currency": "EUR",
                                       "quantity": rng.randint(1, 3), "cart_size": len(visitor.cart)})
            return self._fetch(visitor, "POST", "/api/cart/add", "", referrer, [event])
        if roll < 0.91 and visitor.user_id is None:
            visitor.user_id = f"user-{self._serial}-{visitor.requests}"
            event = ("Signed Up", {"Signup Type": rng.choice(("email", "google", "apple"))})
            return self._fetch(visitor, "POST", "/api/signup", "", referrer, [event])
        if roll < 0.98:
            asset = rng.choice((("script", "/static/app.{}.js", "application/javascript"),
                                ("image", "/static/img/{}.webp", "image/webp"), ("style", "/static/app.{}.css", "text/css")))
            destination, path, content_type = asset
            visit = self._request(visitor, "GET", path.format(rng.randint(1, 40)), "", referrer, True)
            visit.headers.update({"HTTP_ACCEPT": "*/*", "HTTP_SEC_FETCH_DEST": destination,
                                  "HTTP_SEC_FETCH_MODE": "no-cors", "HTTP_SEC_FETCH_SITE": "same-origin"})
            visit.content_type = content_type
            return visit
        return self._request(visitor, "GET", "/missing-page", "", referrer, True)

    def _request(self, visitor: Visitor, method: str, path: str, query: str, referrer: str | None,
                 with_cookie: bool) -> Visit:
        headers = {"HTTP_ACCEPT_LANGUAGE": visitor.language, "HTTP_ACCEPT_ENCODING": "gzip, deflate, br"}
        return Visit(method, path, query, visitor.user_agent, referrer, visitor.ip,
                     visitor.device_id if with_cookie else None, visitor.user_id if with_cookie else None,
                     headers=headers, cookies=visitor.first_touch_cookie if with_cookie else "")

    def _navigation(self, visitor: Visitor, path: str, query: str, referrer: str | None, site: str,
                    with_cookie: bool) -> Visit:
        visit = self._request(visitor, "GET", path, query, referrer, with_cookie)
        if self.cardinality.fetch_metadata:
            visit.headers.update({
                "HTTP_ACCEPT": NAVIGATION_ACCEPT[_accept_family(visitor.user_agent)],
                "HTTP_SEC_FETCH_DEST": "document", "HTTP_SEC_FETCH_MODE": "navigate",
                "HTTP_SEC_FETCH_SITE": site, "HTTP_SEC_FETCH_USER": "?1", "HTTP_UPGRADE_INSECURE_REQUESTS": "1",
            })
        return visit

    def _fetch(self, visitor: Visitor, method: str, path: str, query: str, referrer: str,
               events: list) -> Visit:
        visit = self._request(visitor, method, path, query, referrer, True)
        visit.events = events
        visit.content_type = "application/json"
        visit.headers["HTTP_ACCEPT"] = "application/json"
        if self.cardinality.fetch_metadata:
            visit.headers.update({"HTTP_SEC_FETCH_DEST": "empty", "HTTP_SEC_FETCH_MODE": "cors",
                                  "HTTP_SEC_FETCH_SITE": "same-origin"})
        if method == "POST":
            visit.headers["CONTENT_TYPE"] = "application/json"
        return visit


def with_cardinality(base: Cardinality, **changes: object) -> Cardinality:
    return replace(base, **changes)  # type: ignore[arg-type]
