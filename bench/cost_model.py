"""What the AWS side costs a month for 1, 100 and 10,000 devices, item by item.

    .venv/bin/python bench/cost_model.py               # print the table
    .venv/bin/python bench/cost_model.py --write-docs  # rewrite it in docs/DEPLOY.md

A model, not a measurement: list prices (us-east-1, as published on the AWS
pricing pages named in PRICES, read in 2026; check them before you rely on
them) times the volumes the assumptions give. Every figure in the table is
computed here from the numbers below, so the document cannot drift from its
own arithmetic (tests/deploy/test_deploy_doc.py checks the table is this
script's output). Free tiers are left out: they end, and they are per account.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Mapping

HERE = os.path.dirname(os.path.abspath(__file__))
DEPLOY_MD = os.path.join(os.path.dirname(HERE), "docs", "DEPLOY.md")
BEGIN, END = "<!-- cost-table: begin -->", "<!-- cost-table: end -->"
DAYS = 30
FLEETS = (1, 100, 10_000)

#: us-east-1 list prices, USD. Source pages: aws.amazon.com/{api-gateway,lambda,s3,athena,
#: cognito,secrets-manager,cloudwatch,dynamodb,firehose}/pricing/.
PRICES = {
    "rest_api_per_million": 3.50,  # first 333 M requests a month
    "http_api_per_million": 1.00,  # first 300 M
    "lambda_request_per_million": 0.20,
    "lambda_gb_second_arm": 0.0000133334,
    "s3_put_per_thousand": 0.005,
    "s3_standard_gb_month": 0.023,
    "athena_per_tb": 5.00,  # 10 MB minimum per query
    "cognito_lite_mau": 0.0055,  # above 10,000 MAUs a month
    "cognito_free_mau": 10_000,
    "secret_month": 0.40,
    "logs_ingest_gb": 0.50,
    "dynamodb_write_per_million": 0.625,  # on-demand write request units
    "dynamodb_read_per_million": 0.125,  # on-demand read request units
    "firehose_gb": 0.029,  # direct PUT, each record rounded up to 5 KB
}

#: Per device, per day. Each is written next to its figure in docs/DEPLOY.md.
ASSUMPTIONS = {
    "lines_per_day": 20_000,  # about one line every 4 s: a busy-ish Pi
    "window_seconds": 300,  # the default window: 288 batches a day
    "urgent_seals_per_day": 5,  # err lines sealing a batch early
    "archived_bytes_per_line": 40,  # gzip JSON Lines in S3 (the record is ~400 B raw)
    "lambda_seconds_per_batch": 0.06,  # ~70 lines; cold starts amortised
    "lambda_memory_gb": 0.5,  # the template's MemorySize 512
    "log_bytes_per_request": 1_500,  # the function's JSON line + START/END/REPORT + access log
    "dynamodb_writes_per_batch": 1,  # the device's "seen" update (lambda/state.py)
    # An alerting batch also takes a fleet-gate slot, commits the policy and settles the
    # post: 3 writes, and 3 strongly consistent reads (gate, settle, the fleet episode).
    "dynamodb_writes_per_alerting_batch": 3,
    "dynamodb_reads_per_alerting_batch": 3,
    "scheduled_runs_per_day": 288,  # the scheduled function, every 5 minutes
    "scheduled_seconds_per_run": 0.5,  # a scan and a few posts, at 256 MB
    "scheduled_memory_gb": 0.25,
    "state_item_bytes": 400,  # a device's item with nothing pending: what the scan reads
    "athena_queries_per_day": 20,  # each over one device-day: billed at the 10 MB minimum
}


def batches_per_day(a: Mapping[str, float]) -> float:
    return 86_400 / a["window_seconds"] + a["urgent_seals_per_day"]


def monthly(devices: int, a: Mapping[str, float], p: Mapping[str, float]) -> dict[str, float]:
    """USD a month for each item (storage: the first month's data only)."""
    requests = devices * batches_per_day(a) * DAYS
    lines = devices * a["lines_per_day"] * DAYS
    stored_gb = lines * a["archived_bytes_per_line"] / 1e9
    alerting = devices * a["urgent_seals_per_day"] * DAYS
    runs = a["scheduled_runs_per_day"] * DAYS
    # A Scan reads 4 KB per read unit, half a unit each when eventually consistent.
    scan_units = runs * math.ceil(devices * a["state_item_bytes"] / 4096) * 0.5
    return {
        "API Gateway REST requests": requests / 1e6 * p["rest_api_per_million"],
        "Lambda requests": requests / 1e6 * p["lambda_request_per_million"],
        "Lambda GB-s": requests
        * a["lambda_seconds_per_batch"]
        * a["lambda_memory_gb"]
        * p["lambda_gb_second_arm"],
        "S3 PUTs": requests / 1e3 * p["s3_put_per_thousand"],
        "S3 storage (one month of data)": stored_gb * p["s3_standard_gb_month"],
        "CloudWatch Logs ingestion": requests
        * a["log_bytes_per_request"]
        / 1e9
        * p["logs_ingest_gb"],
        "DynamoDB writes": (
            requests * a["dynamodb_writes_per_batch"]
            + alerting * a["dynamodb_writes_per_alerting_batch"]
        )
        / 1e6
        * p["dynamodb_write_per_million"],
        "DynamoDB reads (alerts, 5-minute scan)": (
            alerting * a["dynamodb_reads_per_alerting_batch"] + scan_units
        )
        / 1e6
        * p["dynamodb_read_per_million"],
        "Scheduled function": runs / 1e6 * p["lambda_request_per_million"]
        + runs
        * a["scheduled_seconds_per_run"]
        * a["scheduled_memory_gb"]
        * p["lambda_gb_second_arm"],
        "Athena (10 MB minimum per query)": a["athena_queries_per_day"]
        * DAYS
        * 10
        / 1e6
        * p["athena_per_tb"],
        "Cognito (Lite MAUs)": max(0, devices - p["cognito_free_mau"]) * p["cognito_lite_mau"],
        "Secrets Manager (webhook)": p["secret_month"],
    }


def alternatives(a: Mapping[str, float], p: Mapping[str, float]) -> dict[str, float]:
    """Monthly USD at 10,000 devices for the changes past that scale (see DEPLOY.md)."""
    base = monthly(10_000, a, p)
    total = sum(base.values())
    wider = dict(a, window_seconds=900)
    requests = 10_000 * batches_per_day(a) * DAYS
    http = requests / 1e6 * p["http_api_per_million"]
    record_kb = (
        math.ceil(a["lines_per_day"] / batches_per_day(a) * a["archived_bytes_per_line"] / 1024 / 5)
        * 5
    )
    firehose = requests * record_kb / 1e6 * p["firehose_gb"]
    return {
        "today": total,
        "15-minute windows": sum(monthly(10_000, wider, p).values()),
        "HTTP API instead of REST": total - base["API Gateway REST requests"] + http,
        "Firehose instead of one S3 PUT a batch": total - base["S3 PUTs"] + firehose,
    }


def table(a: Mapping[str, float] = ASSUMPTIONS, p: Mapping[str, float] = PRICES) -> str:
    per_fleet = {n: monthly(n, a, p) for n in FLEETS}
    items = list(per_fleet[FLEETS[0]])
    head = "| item | " + " | ".join(f"{n:,} device{'s' if n > 1 else ''}" for n in FLEETS) + " |"
    rows = [head, "|---|" + "---:|" * len(FLEETS)]
    for item in items:
        rows.append(
            f"| {item} | " + " | ".join(f"${per_fleet[n][item]:,.2f}" for n in FLEETS) + " |"
        )
    rows.append(
        "| **total a month** | "
        + " | ".join(f"**${sum(per_fleet[n].values()):,.2f}**" for n in FLEETS)
        + " |"
    )
    big = per_fleet[FLEETS[-1]]
    top = sorted(big, key=big.get, reverse=True)[:3]
    rows.append("")
    rows.append(
        f"At {FLEETS[-1]:,} devices the largest items are "
        + ", ".join(f"{item} (${big[item]:,.0f})" for item in top)
        + "; everything that scales with requests "
        f"({batches_per_day(a):.0f} a device a day) is most of the bill."
    )
    alt = alternatives(a, p)
    rows.append("")
    rows.append("| at 10,000 devices | a month | change |")
    rows.append("|---|---:|---:|")
    for name, cost in alt.items():
        rows.append(f"| {name} | ${cost:,.2f} | {cost - alt['today']:+,.2f} |")
    return "\n".join(rows)


def write_docs(text: str, path: str = DEPLOY_MD) -> None:
    with open(path, encoding="utf-8") as fh:
        doc = fh.read()
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(doc):
        raise SystemExit(f"{path} has no {BEGIN} ... {END} section")
    doc = pattern.sub(lambda _m: f"{BEGIN}\n{text}\n{END}", doc)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(doc)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true", help="rewrite docs/DEPLOY.md's table")
    args = parser.parse_args(argv)
    text = table()
    if args.write_docs:
        write_docs(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
