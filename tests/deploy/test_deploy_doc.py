"""docs/DEPLOY.md is true: its Athena queries work on what the function archives,
and its cost table is the cost model's output.

The queries run with DuckDB (devstack/athena.py) over `.jsonl.gz` objects the
real handler wrote to moto's S3 through the local stack: devices provisioned
with `omprog-forwarder provision`, batches shipped by `ship` through the
SigV4 gateway. The table's schema is read from lambda/template.yaml. A
documented query without a check here, a query Athena would refuse (no static
`device` condition), a record key the table lacks, or a result that differs
from what the archived lines say, each fails.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.moto_cognito import isolate_aws_env

from devstack.athena import Archive, documented_queries, download_archive, unknown_keys
from devstack.stack import LocalStack
from omprog_forwarder import config
from omprog_forwarder.admin.provision import Fleet
from omprog_forwarder.admin.stack import Deployment
from omprog_forwarder.ship.shipper import run_ship
from omprog_forwarder.spool import Spool, window_label

REPO = Path(__file__).resolve().parents[2]
DEPLOY_MD = REPO / "docs" / "DEPLOY.md"
sys.path.insert(0, str(REPO / "bench"))
import cost_model  # noqa: E402


def json_line(ts: datetime.datetime, severity: int, app: str, msg: str, n: int) -> bytes:
    return json.dumps(
        {
            "ts": ts.isoformat(),
            "host": "pi",
            "facility": "daemon",
            "severity": severity,
            "app": app,
            "pid": "42",
            "msg": " " + msg,
            "uuid": f"{n:032X}",
        },
        separators=(",", ":"),
    ).encode()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Three devices' batches of this window, archived by the real handler."""
    tmp = tmp_path_factory.mktemp("deploy-doc")
    mp = pytest.MonkeyPatch()
    isolate_aws_env(mp, tmp)
    now = datetime.datetime.now(datetime.timezone.utc)
    recent = [now - datetime.timedelta(minutes=m) for m in range(1, 40, 3)]
    lines = {
        "pi-0001": [json_line(recent[0], 3, "sshd", "auth failed", 1)]
        + [json_line(recent[1], 3, "sshd", "auth failed", 2)]
        + [json_line(recent[2], 3, "sshd", "auth failed", 3)]
        + [json_line(recent[3], 2, "kernel", "disk on fire", 4)]
        + [json_line(recent[4 + i], 6, "cron", "job ran", 10 + i) for i in range(6)]
        + [json_line(now - datetime.timedelta(hours=3), 6, "cron", "long ago", 30)],
        "pi-0002": [json_line(recent[0], 3, "app", "timeout", 40)]
        + [json_line(recent[1], 3, "app", "timeout", 41)]
        + [json_line(recent[2], 6, "cron", "job ran", 42)]
        + [b"2024-12-30 22:50:33 raspberrypi daemon.info: dhcpcd[727]: wlan0: howto line"]
        + [b"\xff not a syslog line at all"],
        "pi-0003": [json_line(recent[i], 3, "noisy", "not asked for", 50 + i) for i in range(4)],
    }
    window = window_label(math.floor(now.timestamp() / 300) * 300)
    try:
        with LocalStack() as stack:
            for k, v in stack.operator_environ().items():
                mp.setenv(k, v)
            import boto3

            dep = Deployment(
                region=stack.region,
                user_pool_id=stack.outputs["UserPoolId"],
                client_id=stack.outputs["UserPoolClientId"],
                identity_pool_id=stack.outputs["IdentityPoolId"],
                endpoint_url=stack.endpoint_url,
                stack=stack.stack_name,
            )
            fleet = Fleet(boto3.session.Session(region_name=stack.region), dep)
            for n, (device, device_lines) in enumerate(lines.items()):
                conf = tmp / f"{device}.conf"
                spool_dir = tmp / f"spool-{device}"
                conf.write_text(fleet.provision(device, spool_dir=str(spool_dir)).config_text)
                os.chmod(conf, 0o600)
                cfg = config.load(str(conf), environ={})
                Spool(cfg.spool_dir).create().write_batch(f"{window}-{n:016x}", device_lines)
                assert run_ship(cfg) == 0
            root = tmp / "s3"
            paths = download_archive(
                stack.client("s3"), stack.bucket, stack.outputs["LogPrefix"] + "/", str(root)
            )
            yield {
                "paths": paths,
                "db": Archive(str(root), stack.outputs["LogPrefix"]),
                "lines": lines,
                "now": now,
            }
    finally:
        mp.undo()


def rows_of(result: tuple[list[str], list[tuple[Any, ...]]]) -> list[dict[str, Any]]:
    names, rows = result
    return [dict(zip(names, row)) for row in rows]


QUERIES = dict(documented_queries(str(DEPLOY_MD)))


def check_errors_per_device_per_day(rows: list[dict[str, Any]], archive: dict[str, Any]) -> None:
    today = {r["dt"] for r in rows}
    assert len(today) == 1
    assert [(r["device"], r["errors"]) for r in rows] == [("pi-0001", 4), ("pi-0002", 2)]


def check_last_hour(rows: list[dict[str, Any]], archive: dict[str, Any]) -> None:
    assert len(rows) == 10, "pi-0001's ten recent lines, not the one from three hours ago"
    assert [r["ts"] for r in rows] == sorted((r["ts"] for r in rows), reverse=True)
    assert {r["app"] for r in rows} == {"sshd", "kernel", "cron"}
    assert rows[0]["severity"] == "err" and rows[0]["msg"] == "auth failed"


def check_top_messages(rows: list[dict[str, Any]], archive: dict[str, Any]) -> None:
    top = [(r["app"], r["msg"], r["lines"]) for r in rows]
    assert top[:3] == [("cron", "job ran", 7), ("sshd", "auth failed", 3), ("app", "timeout", 2)]
    assert ("noisy", "not asked for", 4) not in top, "pi-0003 is not in the IN list"
    assert (None, None, 1) in top, "the raw line is counted too"


CHECKS = {
    "Errors per device per day": check_errors_per_device_per_day,
    "The last hour of one device": check_last_hour,
    "Top messages by count since yesterday": check_top_messages,
}


def test_every_documented_query_has_a_check() -> None:
    assert set(QUERIES) == set(CHECKS)


@pytest.mark.parametrize("title", sorted(CHECKS))
def test_a_documented_athena_query_answers_from_the_archive(title: str, archive) -> None:
    rows = rows_of(archive["db"].query(QUERIES[title]))
    CHECKS[title](rows, archive)


def test_every_archived_key_is_a_column_of_the_table(archive) -> None:
    assert len(archive["paths"]) == 3
    assert unknown_keys(archive["paths"], archive["db"].columns) == {}


def test_a_column_the_table_lacks_is_found(archive) -> None:
    """Control: drop a column the records use from the schema and the check sees it."""
    columns = [c for c in archive["db"].columns if c[0] != "severity_num"]
    assert unknown_keys(archive["paths"], columns).get("severity_num", 0) > 0


def test_a_query_athena_would_refuse_is_refused(archive) -> None:
    from devstack.athena import QueryError

    with pytest.raises(QueryError, match="CONSTRAINT_VIOLATION"):
        archive["db"].query("SELECT count(*) FROM omprog_forwarder.logs WHERE severity_num <= 3")


def test_the_cost_table_is_the_cost_models_output() -> None:
    text = DEPLOY_MD.read_text(encoding="utf-8")
    start = text.index(cost_model.BEGIN) + len(cost_model.BEGIN)
    end = text.index(cost_model.END)
    assert text[start:end].strip() == cost_model.table().strip(), (
        "docs/DEPLOY.md's cost table is stale: run bench/cost_model.py --write-docs"
    )


def test_the_cost_models_arithmetic() -> None:
    """One item by hand: 293 requests a device a day, 30 days, $5 per million S3 PUTs."""
    month = cost_model.monthly(10_000, cost_model.ASSUMPTIONS, cost_model.PRICES)
    assert month["S3 PUTs"] == pytest.approx(10_000 * 293 * 30 / 1000 * 0.005)
