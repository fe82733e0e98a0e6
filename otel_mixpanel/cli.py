"""The ``otel-mixpanel`` command: look at the spool, deliver it, check the configuration.

Settings come from the environment (``OTEL_EXPORTER_MIXPANEL_*``), as in the application.
Each subcommand is one ``Command`` in ``COMMANDS``; a new one is a function and a row.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass
from typing import Callable, Sequence, TextIO

from otel_mixpanel.config import ConfigError, Settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


def load_settings(out: TextIO) -> Settings | None:
    """Settings from the environment, or None after printing what is wrong with them."""
    try:
        return Settings.load()
    except ConfigError as error:
        print(f"configuration error: {error}", file=out)
        return None


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    run: Callable[[argparse.Namespace, TextIO], int]
    arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None


def _status(args: argparse.Namespace, out: TextIO) -> int:
    settings = load_settings(out)
    if settings is None:
        return EXIT_CONFIG
    from otel_mixpanel.delivery.spool import open_spool, spool_path

    path = spool_path(settings)
    if path is None:
        print("spool: in memory (OTEL_EXPORTER_MIXPANEL_SPOOL=memory): nothing outlives the process", file=out)
        return EXIT_OK
    if not os.path.exists(path):
        state: list = []
    else:
        spool = open_spool(settings)
        try:
            state = spool.state()
        finally:
            spool.close()
    if args.json:
        json.dump({"path": path, "endpoints": [asdict(item) for item in state]}, out, indent=2)
        print(file=out)
        return EXIT_OK
    print(f"spool: {path}{'' if os.path.exists(path) else ' (not created yet)'}", file=out)
    if not state:
        print("pending: nothing", file=out)
    for item in state:
        print(
            f"{item.endpoint}: {item.events} pending ({item.bytes} bytes), {item.leased} being sent now, "
            f"oldest {_age(item.oldest_age_s)} old",
            file=out,
        )
    return EXIT_OK


def _drain(args: argparse.Namespace, out: TextIO) -> int:
    settings = load_settings(out)
    if settings is None:
        return EXIT_CONFIG
    from otel_mixpanel.delivery import create_sender

    sender = create_sender(settings)
    delivered = sender.flush(timeout_millis=args.timeout_ms)
    stats = sender.stats
    pending, _ = sender.spool.pending()
    sender.shutdown(timeout_millis=1000)
    print(
        f"sent {stats.sent}, rejected {stats.rejected}, retried {stats.retried}; "
        f"{pending} still in the spool",
        file=out,
    )
    if not delivered:
        print(f"not everything could be delivered within {args.timeout_ms} ms; "
              "see the log lines above for why", file=out)
        return EXIT_FAILED
    return EXIT_OK


def _check(args: argparse.Namespace, out: TextIO) -> int:
    settings = load_settings(out)
    if settings is None:
        return EXIT_CONFIG
    from otel_mixpanel.delivery.transport import Transport, Verdict, route_for

    route = route_for(settings, "events")
    print(f"endpoint: {settings.endpoint}; events go to {route.path}", file=out)
    transport = Transport(settings)
    try:
        # An empty batch is accepted, or refused for being empty, only after the credentials pass.
        outcome = transport.post(route, [], timeout_s=args.timeout_ms / 1000)
    finally:
        transport.close()
    verdict = outcome.verdict
    if verdict is Verdict.DELIVERED or verdict is Verdict.REJECTED:
        if route.authenticated:
            print(f"OK: {route.path} accepted the credentials (HTTP {outcome.status})", file=out)
        else:
            print(f"OK: {route.path} is reachable (HTTP {outcome.status}); it checks the project token "
                  "in each event, so a wrong token shows only when events arrive", file=out)
        return EXIT_OK
    if verdict is Verdict.CREDENTIALS:
        print(f"FAILED: bad credentials: {route.path} answered HTTP {outcome.status} ({outcome.detail}). "
              "Check OTEL_EXPORTER_MIXPANEL_SERVICE_ACCOUNT_USERNAME/_SECRET and _PROJECT_ID, "
              "_API_SECRET or _TOKEN.", file=out)
    elif verdict is Verdict.RETRY and outcome.status is None:
        print(f"FAILED: endpoint unreachable: {outcome.detail}. Check OTEL_EXPORTER_MIXPANEL_ENDPOINT "
              "and the network.", file=out)
    elif verdict is Verdict.RETRY:
        print(f"FAILED: {route.path} is reachable but not taking data now "
              f"(HTTP {outcome.status}: {outcome.detail}); try again later", file=out)
    else:
        print(f"FAILED: {route.path} answered HTTP {outcome.status} ({outcome.detail}): "
              "is OTEL_EXPORTER_MIXPANEL_ENDPOINT a Mixpanel ingestion API?", file=out)
    return EXIT_FAILED


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _timeout_argument(default_ms: int) -> Callable[[argparse.ArgumentParser], None]:
    def add(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--timeout-ms", type=int, default=default_ms,
                            help=f"give up after this many milliseconds (default {default_ms})")

    return add


def _status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the state as JSON")


COMMANDS: list[Command] = [
    Command("status", "show the spool: path, records and bytes pending per endpoint, oldest age",
            _status, _status_arguments),
    Command("drain", "deliver everything in the spool now, within a deadline", _drain, _timeout_argument(60_000)),
    Command("check", "check the configuration and make one authenticated request to the endpoint",
            _check, _timeout_argument(10_000)),
]


def build_parser(commands: Sequence[Command] = COMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otel-mixpanel",
        description="Tools for otel-mixpanel. Settings are read from OTEL_EXPORTER_MIXPANEL_* variables.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in commands:
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        command.arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    # Delivery explains its trouble (bad credentials, unreachable host) through logging.
    logging.basicConfig(level=logging.WARNING, format="otel-mixpanel: %(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.run(args, out)


if __name__ == "__main__":
    sys.exit(main())
