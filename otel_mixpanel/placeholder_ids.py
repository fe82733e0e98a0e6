"""Values that look like an id but mean "nobody": the one list the whole project checks ids against.

Mixpanel's /import refuses these as ``distinct_id`` (and as ``$insert_id``) with a 400
(docs.mixpanel.com, reference/import-events and troubleshooting/errors/400-bad-request:
"anon, anonymous, nil, none, null, n/a, ... 00000000-0000-0000-0000-000000000000";
the complete list as Mixpanel's own mixpanel-import tool checks it). An application that
writes one of them as a user or device id means that there is none, so each is treated
as no id at all: the event falls back to the other id, or to ``distinct_id: ""``.
"""

from __future__ import annotations

PLACEHOLDER_IDS = frozenset({
    "-1", "0", "00000000-0000-0000-0000-000000000000", "<nil>", "[]", "{}", "anon", "anonymous", "false",
    "lmy47d", "n/a", "na", "nil", "none", "null", "true", "undefined", "unknown",
})


def is_placeholder_id(text: str) -> bool:
    """True when ``text`` (already stripped) is one of the placeholders, in any letter case."""
    return text.lower() in PLACEHOLDER_IDS
