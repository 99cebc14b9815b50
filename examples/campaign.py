"""A coin campaign from a CSV file, with the library's journal-free bulk API (``allocate_stream``).

Usage::

    python examples/campaign.py users.csv --campaign DIWALI_2026 --out results.csv \\
        [--concurrency 16] [--rate 50] [--base-url URL] [--company-id ID]

``users.csv`` has a header and the columns ``user_id,event``; each row is credited the
coins configured for its event. The file is read as the run goes (memory does not
grow with its size), at most ``--concurrency`` requests are in flight, and ``--rate``
caps the requests started per second. ``results.csv`` gets one line per row as it
finishes: ``line, user_id, event, request_id, outcome, needs_check, error``, where
``outcome`` is ``succeeded``, ``failed`` (refused, provably not applied: fix the row),
``unknown`` (it may have been applied) or ``not_attempted`` (EnKash did not act on it).

**Re-running is safe, and is how you finish a campaign.** Each row's requestId is
derived from the campaign name, the company and the row's ``user_id`` and ``event``
(``derive_request_id``), so running the same command again (after a crash, a
``kill -9``, an EnKash outage, or with rows ``unknown``) sends every row with the same
requestId as before. EnKash applies a requestId at most once: a replay answers with
the original success and credits nothing more. So rows whose credit landed, even
those whose answer was lost, are not credited twice, and the others are credited
now. Keep the campaign name: a new name means new ids, and every row credited again.
Two rows with the same user and event share one id: that user is credited once.
(Without a journal a re-run sends the finished rows again too, as harmless replays;
``enkash-coins bulk`` keeps a journal and skips them, for very large campaigns.)

Connection: ``--base-url`` / ``ENKASH_BASE_URL``, ``--company-id`` / ``ENKASH_COMPANY_ID``;
credentials from the environment only: ``ENKASH_TOKEN``, or ``ENKASH_USERNAME``,
``ENKASH_PASSWORD``, ``ENKASH_CLIENT_ID``, ``ENKASH_CLIENT_SECRET`` (+ ``ENKASH_TOKEN_URL``).

Exit status: 0 every row succeeded; 1 some rows failed or were not attempted; 3 some
outcomes are unknown (run the same command again); 2 bad usage or configuration.

Against the fake EnKash (no real coins), from the repository root::

    enkash-coins serve --port 8080 --seed examples/fake_seed.toml      # prints a bearer token
    ENKASH_TOKEN=<that token> python examples/campaign.py examples/users.csv \\
        --campaign DIWALI_2026 --out results.csv --base-url http://127.0.0.1:8080 --company-id C1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import os
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

from enkash_coins import (
    AiohttpTransport,
    Auth,
    CoinAllocator,
    InvalidInputError,
    Outcome,
    PasswordGrant,
    StaticToken,
    derive_request_id,
)

RESULT_FIELDS = ("line", "user_id", "event", "request_id", "outcome", "needs_check", "error")
EXIT_OK, EXIT_UNFINISHED, EXIT_USAGE, EXIT_UNKNOWN = 0, 1, 2, 3


class ConfigError(Exception):
    """The command line or environment is unusable; nothing was sent."""


class Row(NamedTuple):
    line: int
    user_id: str
    event: str
    request_id: str


def auth_from_env(env: Mapping[str, str]) -> Auth:
    if env.get("ENKASH_TOKEN"):
        return StaticToken(env["ENKASH_TOKEN"])
    names = ("ENKASH_USERNAME", "ENKASH_PASSWORD", "ENKASH_CLIENT_ID", "ENKASH_CLIENT_SECRET")
    if not all(env.get(name) for name in names):
        raise ConfigError("set ENKASH_TOKEN, or all of " + ", ".join(names))
    return PasswordGrant(username=env["ENKASH_USERNAME"], password=env["ENKASH_PASSWORD"],
                         client_id=env["ENKASH_CLIENT_ID"], client_secret=env["ENKASH_CLIENT_SECRET"],
                         token_url=env.get("ENKASH_TOKEN_URL") or None)


def read_rows(reader: csv.DictReader[str], campaign: str, company_id: str) -> Iterator[Row]:
    """The rows of the file, lazily, each with its stable requestId."""
    for record in reader:
        user_id, event = record.get("user_id") or "", record.get("event") or ""
        yield Row(reader.line_num, user_id, event, derive_request_id(campaign, company_id, user_id, event))


async def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    base_url = args.base_url or env.get("ENKASH_BASE_URL")
    company_id = args.company_id or env.get("ENKASH_COMPANY_ID")
    if not base_url or not company_id:
        raise ConfigError("pass --base-url and --company-id, or set ENKASH_BASE_URL and ENKASH_COMPANY_ID")
    coins = CoinAllocator(AiohttpTransport(base_url), auth=auth_from_env(env), company_id=company_id)

    # utf-8-sig: a byte-order mark (spreadsheets write one) is not part of the first column's name.
    with args.file.open(newline="", encoding="utf-8-sig") as source:
        reader = csv.DictReader(source)
        if not {"user_id", "event"} <= set(reader.fieldnames or ()):
            raise ConfigError(f"{args.file}: the header must name the columns user_id and event")

        # The rows handed to the SDK and not finished yet, by input position (BulkItem.index):
        # a handful at any time, however long the file.
        pending: dict[int, Row] = {}

        def requests() -> Iterator[dict[str, str]]:
            for index, row in enumerate(read_rows(reader, args.campaign, company_id)):
                pending[index] = row
                # A mapping, not an AllocationRequest: a bad row (say, an empty user_id) then
                # ends as one `failed` item instead of stopping the whole run.
                yield {"user_id": row.user_id, "event": row.event, "request_id": row.request_id}

        counts: Counter[Outcome] = Counter()
        with args.out.open("w", newline="", encoding="utf-8") as out:
            results = csv.writer(out)
            results.writerow(RESULT_FIELDS)
            async with coins, contextlib.aclosing(
                coins.allocate_stream(requests(), concurrency=args.concurrency, rate=args.rate)
            ) as stream:
                async for item in stream:
                    row = pending.pop(item.index)
                    counts[item.outcome] += 1
                    error = "" if item.error is None else str(item.error)
                    results.writerow((row.line, row.user_id, row.event, row.request_id, item.outcome.value,
                                      "yes" if item.needs_check else "", error))

    print(", ".join(f"{outcome.value} {counts[outcome]}" for outcome in Outcome), file=sys.stderr)
    if counts[Outcome.UNKNOWN]:
        print(f"{counts[Outcome.UNKNOWN]} rows may or may not have been credited: run the same command "
              "again (same --campaign); nobody is credited twice", file=sys.stderr)
        return EXIT_UNKNOWN
    return EXIT_UNFINISHED if counts[Outcome.FAILED] or counts[Outcome.NOT_ATTEMPTED] else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Credit EnKash coins to the rows of a CSV file (user_id,event).")
    parser.add_argument("file", type=Path, help="CSV with a header naming user_id and event")
    parser.add_argument("--campaign", required=True, help="campaign name; keep it for re-runs (the ids derive from it)")
    parser.add_argument("--out", type=Path, required=True, help="where to write one result line per row")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight at most (default 16)")
    parser.add_argument("--rate", type=float, help="requests started per second at most (default: no cap)")
    parser.add_argument("--base-url", help="EnKash API host (env ENKASH_BASE_URL)")
    parser.add_argument("--company-id", help="company to credit for (env ENKASH_COMPANY_ID)")
    args = parser.parse_args(argv)
    if not args.campaign.strip():
        parser.error("--campaign must not be empty")
    try:
        return asyncio.run(run(args, os.environ))
    # InvalidInputError: settings the SDK refused (say, --concurrency 0), before anything was sent.
    # csv.Error, UnicodeDecodeError: the file broke at some row; the rows before it are in --out.
    except (ConfigError, InvalidInputError, OSError, csv.Error, UnicodeDecodeError) as error:
        print(f"campaign: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("campaign: interrupted; run the same command again to finish (nobody is credited twice)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
