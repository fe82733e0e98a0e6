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
import threading
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable, Sequence, TextIO

from otel_mixpanel.compiled import conversion_build
from otel_mixpanel.config import ENV_PREFIX, ConfigError, Settings
from otel_mixpanel.version import __version__

if TYPE_CHECKING:
    from otel_mixpanel.delivery import MixpanelSender
    from otel_mixpanel.delivery.spool import Spool
    from otel_mixpanel.delivery.spool_report import SpoolReport

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


def load_sending_settings(out: TextIO) -> Settings | None:
    """Settings that can send to Mixpanel, or None after printing why not: drain and check send,
    whatever OUTPUT or ENABLED say for the application, so they need credentials."""
    settings = load_settings(out)
    if settings is not None and not settings.token and not settings.service_account_username:
        print(f"configuration error: {ENV_PREFIX}TOKEN is not set (nor a service account): "
              "nothing can be sent to Mixpanel", file=out)
        return None
    return settings


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
    from otel_mixpanel.delivery.spool import spool_path
    from otel_mixpanel.delivery.spool_report import describe_directory

    path = spool_path(settings)
    if path is None:
        print(f"spool: in memory ({ENV_PREFIX}SPOOL=memory): nothing outlives the process", file=out)
        return EXIT_OK
    directory = os.path.dirname(path)
    reports = describe_directory(directory, path)
    if args.json:
        current = next((report for report in reports if report.current), None)
        json.dump({"directory": directory, "path": path,
                   "endpoints": [asdict(item) for item in current.endpoints] if current else [],
                   "files": [report.as_json() for report in reports]}, out, indent=2)
        print(file=out)
        return EXIT_OK
    print(f"spool directory: {directory}", file=out)
    if not any(report.current for report in reports):
        print(f"spool: {path} (not created yet)", file=out)
        print("pending: nothing", file=out)
    for report in reports:
        _print_report(report, out)
    return EXIT_OK


def _print_report(report: SpoolReport, out: TextIO) -> None:
    name = os.path.basename(report.path)
    tags = [tag for tag, on in (("current settings", report.current), ("corrupt, moved aside", report.corrupt)) if on]
    print(f"spool: {report.path if report.current else name}" + (f" ({', '.join(tags)})" if tags else ""), file=out)
    if report.unreadable:
        print(f"  cannot be read: {report.unreadable}", file=out)
        return
    if not report.endpoints:
        print("  pending: nothing", file=out)
    for item in report.endpoints:
        print(f"  {item.endpoint}: {item.events} pending ({item.bytes} bytes), {item.leased} being sent now, "
              f"oldest {_age(item.oldest_age_s)} old", file=out)
    if report.last_delivery_age_s is not None:
        print(f"  last delivery: {_age(report.last_delivery_age_s)} ago", file=out)
    if report.last_error is not None:
        when = f" {_age(report.last_error_age_s)} ago" if report.last_error_age_s is not None else ""
        print(f"  last delivery error{when}: {report.last_error}", file=out)
    if report.moved_to is not None:
        print(f"  records moved to {report.moved_to}", file=out)
    if report.events and not report.current and (report.credentials_refused or report.corrupt):
        why = "were kept after Mixpanel refused their credentials" if report.credentials_refused else "were salvaged"
        print(f"  these records {why}; to send them with the current settings: "
              f"otel-mixpanel drain --spool {name}", file=out)


def _drain(args: argparse.Namespace, out: TextIO) -> int:
    settings = load_sending_settings(out)
    if settings is None:
        return EXIT_CONFIG
    from otel_mixpanel.delivery import MixpanelSender

    # Always the delivering sender: draining is sending the spool, whatever OUTPUT says.
    sender = MixpanelSender(settings)
    if args.spool and not _take_over(sender.spool, args.spool, settings, out):
        sender.shutdown(timeout_millis=1000)
        return EXIT_FAILED
    with _Progress(sender, out):
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


def _take_over(spool: Spool, name: str, settings: Settings, out: TextIO) -> bool:
    """Move the records of the spool file ``name`` (in the spool directory, or a path) into ``spool``."""
    from otel_mixpanel.delivery.adoption import take_over

    path = name if os.path.sep in name else os.path.join(settings.spool_dir or ".", name)
    if not os.path.isfile(path) or os.path.islink(path):
        print(f"no spool file {path}", file=out)
        return False
    if spool.path is not None and os.path.realpath(path) == os.path.realpath(spool.path):
        print(f"{name} is the current settings' spool: run drain without --spool", file=out)
        return False
    moved = take_over(spool, path)
    print(f"took {moved} records from {os.path.basename(path)} into the current spool", file=out)
    return True


class _Progress:
    """A progress line, rewritten in place while the drain runs, on a terminal only."""

    INTERVAL_S = 0.2

    def __init__(self, sender: MixpanelSender, out: TextIO) -> None:
        self._sender, self._out = sender, out
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _Progress:
        if self._out.isatty():
            self._thread = threading.Thread(target=self._run, name="otel-mixpanel-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
            self._show()
            print(file=self._out)

    def _run(self) -> None:
        while not self._done.wait(self.INTERVAL_S):
            self._show()

    def _show(self) -> None:
        stats = self._sender.stats
        try:
            left = self._sender.spool.pending()[0]
        except Exception:  # the line is a nicety: never let it break the drain
            return
        self._out.write(f"\rdelivering: {stats.sent} sent, {stats.rejected} rejected, {left} left ")
        self._out.flush()


def _check(args: argparse.Namespace, out: TextIO) -> int:
    settings = load_sending_settings(out)
    if settings is None:
        return EXIT_CONFIG
    from otel_mixpanel.delivery.routes import route_for
    from otel_mixpanel.delivery.transport import Transport, Verdict

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
              f"Check {ENV_PREFIX}SERVICE_ACCOUNT_USERNAME/_SECRET and _PROJECT_ID, "
              "_API_SECRET or _TOKEN.", file=out)
    elif verdict is Verdict.RETRY and outcome.status is None:
        print(f"FAILED: endpoint unreachable: {outcome.detail}. Check {ENV_PREFIX}ENDPOINT "
              "and the network.", file=out)
    elif verdict is Verdict.RETRY:
        print(f"FAILED: {route.path} is reachable but not taking data now "
              f"(HTTP {outcome.status}: {outcome.detail}); try again later", file=out)
    else:
        print(f"FAILED: {route.path} answered HTTP {outcome.status} ({outcome.detail}): "
              f"is {ENV_PREFIX}ENDPOINT a Mixpanel ingestion API?", file=out)
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


def _drain_arguments(parser: argparse.ArgumentParser) -> None:
    _timeout_argument(60_000)(parser)
    parser.add_argument("--spool", metavar="FILE",
                        help="first move the records of this spool file (a name listed by status, or a path) "
                             "into the current spool, to send them with the current settings")


COMMANDS: list[Command] = [
    Command("status", "show every spool file in the spool directory: records and bytes pending per endpoint, "
            "oldest age, last delivery and last delivery error", _status, _status_arguments),
    Command("drain", "deliver everything in the spool now, within a deadline (or first take over another "
            "spool file's records with --spool)", _drain, _drain_arguments),
    Command("check", "check the configuration and make one authenticated request to the endpoint",
            _check, _timeout_argument(10_000)),
]


def build_parser(commands: Sequence[Command] = COMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otel-mixpanel",
        description=f"Tools for otel-mixpanel. Settings are read from {ENV_PREFIX}* variables.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__} ({conversion_build()})")
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
    code: int = args.run(args, out)
    return code


if __name__ == "__main__":
    sys.exit(main())
