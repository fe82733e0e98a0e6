"""User-agent parsing: who sent the request (crawler, script, person), bounded caching, bad input."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from otel_mixpanel.enrich.user_agent import (
    MAX_USER_AGENT_LENGTH,
    MIXPANEL_BLOCKED_AGENTS,
    _CACHED_PARSERS,
    parse_user_agent,
)

CACHE = _CACHED_PARSERS["mixpanel"]

DESKTOP_CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/120.0.0.0 Safari/537.36")
IPHONE_SAFARI = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
                 "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1")
ANDROID_CHROME = ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/120.0.0.0 Mobile Safari/537.36")
MAC_FIREFOX = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:121.0) Gecko/20100101 Firefox/121.0"

PEOPLE = [DESKTOP_CHROME, IPHONE_SAFARI, ANDROID_CHROME, MAC_FIREFOX]

# Crawlers ua-parser knows (device family Spider) and some only mixpanel-js's blocked list names.
CRAWLERS = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/119.0.0.0 Mobile Safari/537.36 Chrome-Lighthouse",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36 Google-Read-Aloud",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko; Google Web Preview) "
    "Chrome/41.0.2272.118 Safari/537.36",
    "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
    "Screaming Frog SEO Spider/19.4",
]

# Health checkers, tools and HTTP libraries, as they really announce themselves.
AUTOMATED = [
    "kube-probe/1.29",
    "ELB-HealthChecker/2.0",
    "GoogleHC/1.0",
    "Go-http-client/1.1",
    "Go-http-client/2.0",
    "curl/8.4.0",
    "Wget/1.21.4",
    "python-requests/2.31.0",
    "python-httpx/0.27.0",
    "Python/3.11 aiohttp/3.9.1",
    "okhttp/4.12.0",
    "Apache-HttpClient/4.5.14 (Java/17.0.9)",
    "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
    "node",
    "axios/1.6.7",
    "PostmanRuntime/7.36.0",
    "HTTPie/3.2.2",
    "Envoy/HC",
    "Consul Health Check",
    "Amazon-Route53-Health-Check-Service (ref 0d2e4b4a-ffff; report http://amzn.to/1vsZADi)",
    "GoogleStackdriverMonitoring-UptimeChecks(https://cloud.google.com/monitoring)",
    "Prometheus/2.48.0",
    "Blackbox-Exporter/0.24.0",
]
# Automated clients that uap-core also lists as crawlers (device family Spider): both, so by
# default nothing of theirs is sent, as before.
AUTOMATED_CRAWLERS = [
    "Python-urllib/3.12",
    "Java/17.0.2",
    "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
]


@pytest.mark.parametrize("user_agent", PEOPLE)
def test_browsers_are_people(user_agent):
    parsed = parse_user_agent(user_agent)
    assert (parsed.is_bot, parsed.is_automated) == (False, False)
    assert parsed.properties["$browser"] and parsed.properties["$os"]


@pytest.mark.parametrize("user_agent", CRAWLERS)
def test_crawlers_are_bots(user_agent):
    assert parse_user_agent(user_agent).is_bot


@pytest.mark.parametrize("agent", MIXPANEL_BLOCKED_AGENTS)
def test_every_agent_mixpanel_js_blocks_is_a_bot(agent):
    # mixpanel-js matches its list anywhere in the string, whatever the case.
    user_agent = f"{DESKTOP_CHROME} {agent.upper()}/1.0"
    assert parse_user_agent(user_agent).is_bot


@pytest.mark.parametrize("user_agent", AUTOMATED)
def test_scripts_and_health_checkers_are_automated_not_bots(user_agent):
    parsed = parse_user_agent(user_agent)
    assert parsed.is_automated
    # Their business events count: a script is not a crawler.
    assert not parsed.is_bot


@pytest.mark.parametrize("user_agent", AUTOMATED_CRAWLERS)
def test_automated_clients_uap_core_calls_crawlers_are_both(user_agent):
    parsed = parse_user_agent(user_agent)
    assert (parsed.is_bot, parsed.is_automated) == (True, True)


@pytest.mark.parametrize("user_agent", [None, "", "   ", "\t"])
def test_no_user_agent_is_automated(user_agent):
    parsed = parse_user_agent(user_agent)
    assert (parsed.is_bot, parsed.is_automated, dict(parsed.properties)) == (False, True, {})


@pytest.mark.parametrize("user_agent", [
    "\x00\x01\x02binary\xff\xfe",
    "Mozilla/5.0 (\ud800 lone surrogate) Chrome/1.0",
    "((((((((((((((((((((",
    "Mozilla/5.0 " + "A" * 100_000,
    "Mozilla/5.0 (Windows NT 10.0) Chrome/" + "9" * 5000,
    "🙂" * 3000,
])
def test_malformed_user_agents_give_safe_properties(user_agent):
    parsed = parse_user_agent(user_agent)
    for value in parsed.properties.values():
        if isinstance(value, str):
            assert len(value.encode("utf-8")) <= 255
            value.encode("utf-8")  # no lone surrogate survives
        else:
            assert isinstance(value, float)


def test_a_long_user_agent_is_judged_by_its_first_characters():
    long = DESKTOP_CHROME + " " + "x" * (2 * MAX_USER_AGENT_LENGTH)
    assert parse_user_agent(long) == parse_user_agent(long[:MAX_USER_AGENT_LENGTH])


def test_huge_user_agents_do_not_pin_memory_in_the_cache():
    """600 requests with distinct 1 MB user agents once kept 600 MB alive in the cache."""
    CACHE.cache_clear()
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for i in range(600):
            huge = f"Mozilla/5.0 {i} " + "A" * 1_000_000
            parse_user_agent(huge)
            del huge
        gc.collect()
        retained, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Each entry keeps at most a MAX_USER_AGENT_LENGTH key and a small result: a few KB, not 1 MB.
    per_entry = (retained - before) / 600
    assert per_entry < 4 * MAX_USER_AGENT_LENGTH, per_entry
    assert CACHE.cache_info().currsize == 600


def test_a_cached_user_agent_is_not_parsed_again():
    CACHE.cache_clear()
    first = parse_user_agent(DESKTOP_CHROME)
    assert parse_user_agent(DESKTOP_CHROME) is first
    assert CACHE.cache_info().hits == 1
