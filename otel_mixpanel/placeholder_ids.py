"""Values that look like an id but mean "nobody": the one list the whole project checks ids against.

Mixpanel's /import refuses these as ``distinct_id`` (and as ``$insert_id``) with a 400
(docs.mixpanel.com, reference/import-events and troubleshooting/errors/400-bad-request:
"anon, anonymous, nil, none, null, n/a, ... 00000000-0000-0000-0000-000000000000";
the complete list as Mixpanel's own mixpanel-import tool checks it). An application that
writes one of them as a user or device id means that there is none, so each is treated
as no id at all: the event falls back to the other id, or to ``distinct_id: ""``.
"""

from __future__ import annotations

from typing import Final

PLACEHOLDER_IDS = frozenset({
    "-1", "0", "00000000-0000-0000-0000-000000000000", "<nil>", "[]", "{}", "anon", "anonymous", "false",
    "lmy47d", "n/a", "na", "nil", "none", "null", "true", "undefined", "unknown",
})


# Every placeholder longer than this is the nil UUID, which starts with a zero; lower() never shortens a
# text nor makes a "0" of anything else. So real ids, mostly longer, are told apart without lowering them.
_LONGEST_WORD: Final = max(len(text) for text in PLACEHOLDER_IDS if not text.startswith("0"))


def is_placeholder_id(text: str) -> bool:
    """True when ``text`` (already stripped) is one of the placeholders, in any letter case."""
    if len(text) > _LONGEST_WORD and not text.startswith("0"):
        return False
    return text.lower() in PLACEHOLDER_IDS
