"""Taking over records from another spool file: stranded ones by themselves, any file on request.

A spool file is named after the project identity (endpoint, token, project id, service
account user), so that applications with different projects can share a directory. A
wrong token therefore spools records in a file of its own, which the application no longer
opens once the token is fixed. Such a file is *stranded* when all of these hold:

- it was written by the same application on this host (``spool_meta.application_digest``),
  for the same endpoint, under another project identity;
- Mixpanel refused its credentials (HTTP 401/403) and never accepted any of its records.

A sender takes over a stranded file's records by itself (at most once a minute): they are
moved into its own spool with the configured token written into them, and go out with the
current credentials. Records another live process holds leased are left to it. Any other
file (another application's, a corrupt one moved aside) is taken over only when asked:
``otel-mixpanel drain --spool FILE``.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from typing import TYPE_CHECKING

from otel_mixpanel.delivery.spool_files import CORRUPT_MARK, list_spool_files, salvage
from otel_mixpanel.delivery.spool_meta import (
    APPLICATION,
    CREDENTIALS_REFUSED,
    DELIVERED_AT,
    ENDPOINT,
    PROJECT,
    read_meta,
)
from otel_mixpanel.delivery.endpoints import CONSUMER_ENDPOINTS, EVENT_ENDPOINTS

if TYPE_CHECKING:
    from otel_mixpanel.delivery.spool import Spool

logger = logging.getLogger("otel_mixpanel.delivery")

_BATCH = 2000
_LEASE_S = 300.0


def peek_meta(path: str) -> dict[str, str]:
    """A spool file's meta values, read without changing it (empty when it cannot be read)."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return {}
    try:
        return read_meta(db)
    except sqlite3.Error:
        return {}
    finally:
        db.close()


def stranded_files(spool: Spool) -> list[str]:
    """The spool files beside ``spool`` whose records it may take over by itself (see the module)."""
    identity = spool.identity
    if identity is None or spool.path is None:
        return []
    found = []
    for path in list_spool_files(os.path.dirname(spool.path)):
        if path == spool.path or CORRUPT_MARK in os.path.basename(path) or os.path.islink(path):
            continue
        meta = peek_meta(path)
        if (meta.get(ENDPOINT) == identity.endpoint and meta.get(APPLICATION) == identity.application
                and meta.get(PROJECT) != identity.project and meta.get(CREDENTIALS_REFUSED) == "1"
                and DELIVERED_AT not in meta):
            found.append(path)
    return found


def adopt_stranded(spool: Spool) -> int:
    """Take over every stranded file's records; never raises (delivery goes on without them)."""
    moved = 0
    for path in stranded_files(spool):
        try:
            count = take_over(spool, path)
        except (sqlite3.Error, OSError) as error:
            logger.warning("Mixpanel spool %r: could not take over the records of %r (%s)", spool.path, path, error)
            continue
        if count:
            logger.warning(
                "Mixpanel spool %r: took over %d records from %r, spooled by this application under credentials "
                "Mixpanel refused; they are sent with the current settings",
                spool.path, count, os.path.basename(path),
            )
        moved += count
    return moved


def take_over(spool: Spool, source: str) -> int:
    """Move the records of the spool file ``source`` into ``spool``, with its token; return how many.

    Records leased by a live sender stay where they are. A corrupt file moved aside is only read
    (what can be read of it), never changed.
    """
    token = spool.identity.token if spool.identity is not None else None
    if CORRUPT_MARK in os.path.basename(source):
        rows = salvage(source, frozenset(CONSUMER_ENDPOINTS)).rows
        spool.put_rows([(endpoint, with_token(endpoint, body, token), created) for endpoint, body, created in rows])
        return len(rows)
    from otel_mixpanel.delivery.spool import Spool, make_owner

    other = Spool(source, max_events=spool.max_events, max_bytes=spool.max_bytes)
    owner, moved = make_owner(), 0
    try:
        while True:
            batch = other.claim(owner, _BATCH, _LEASE_S)
            if not batch:
                break
            created = other.created_times(record.id for record in batch)
            spool.put_rows([(record.endpoint, with_token(record.endpoint, record.body, token), created[record.id])
                            for record in batch if record.id in created])
            other.remove(record.id for record in batch)
            moved += len(batch)
        if moved and spool.path is not None:
            other.note_moved(spool.path)
    finally:
        other.release_owner(owner)
        other.close()
    return moved


def with_token(endpoint: str, body: str, token: str | None) -> str:
    """The record with the project token replaced by ``token`` (unchanged when there is none)."""
    if not token:
        return body
    record = json.loads(body)
    if endpoint in EVENT_ENDPOINTS:
        properties = record.get("properties")
        holder, key = (properties if isinstance(properties, dict) else {}), "token"
    else:
        holder, key = record, "$token"
    if key not in holder or holder[key] == token:
        return body
    holder[key] = token
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)
