"""The shipper and the Lambda agree: ingest -> ship -> SigV4 gateway -> handler -> S3.

Real pieces end to end except AWS itself: `omprog-forwarder run` fills a spool
from a stdin stream, `run_ship` logs in to moto's Cognito (server mode, with
devstack's IdentityBroker issuing per-identity credentials) and posts
SigV4-signed gzip batches to the loopback gateway, which verifies the
signature, builds the proxy event with the caller's Cognito identity and calls
the real `lambda/handler.py`, which archives into moto's S3 (same server).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import alerts
import boto3
import handler
import pytest
from support.moto_cognito import (
    Device,
    MotoCognito,
    isolate_aws_env,
)

from devstack.aws import IdentityBroker
from devstack.gateway import Gateway, lambda_proxy
from omprog_forwarder import config
from omprog_forwarder.ship.shipper import run_ship

BUCKET = "omprog-forwarder-archive"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoCognito]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with MotoCognito("eu-west-1") as server:
        yield server


@pytest.fixture
def device(moto: MotoCognito, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Device:
    isolate_aws_env(monkeypatch, tmp_path)
    dev = moto.provision("pi-0001")
    for k, v in dev.environ().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")  # the Lambda's own role, on moto
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return dev


def feed_run(spool_dir: Path, lines: list[bytes]) -> None:
    """`omprog-forwarder run` over a stdin stream (as rsyslog drives it), then EOF."""
    stream = b"".join(x + b"\n" for x in lines)
    proc = subprocess.run(
        [sys.executable, "-m", "omprog_forwarder", "run", "--spool-dir", str(spool_dir)],
        input=stream,
        capture_output=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        timeout=60,
        check=True,
    )
    assert proc.stdout.split(b"\n")[:-1] == [b"OK"] * (len(lines) + 1)


def json_line(i: int, severity: int) -> bytes:
    record = (
        f'{{"ts":"2026-11-26T23:14:{i % 60:02d}.534728+00:00", "host":"pi", '
        f'"facility":"daemon", "severity":{severity}, "app":"sensor", "pid":"42", '
        f'"msg":" reading {i} <!channel>", "uuid":"{i:032X}"}}'
    )
    return record.encode()


def test_lines_from_run_arrive_once_in_s3_under_the_logged_in_device(device, tmp_path, monkeypatch):
    s3 = boto3.client("s3", region_name=device.region)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": device.region})
    lambda_env = {
        "BUCKET_NAME": BUCKET,
        "USER_POOL_ID": device.user_pool_id,
        "IDENTITY_POOL_ID": device.identity_pool_id,
        "WEBHOOK_URL": "",
    }
    deps = handler.Dependencies(
        s3=lambda: s3,
        cognito=lambda: boto3.client("cognito-idp", region_name=device.region),
        transport=alerts.urllib_transport,
        sleep=lambda s: None,
        clock=lambda: 0.0,
        environ=lambda_env,
    )
    spool_dir = tmp_path / "spool"
    lines = [json_line(i, 3 if i % 50 == 0 else 6) for i in range(200)]
    lines.append(b"2024-12-30 22:50:33 raspberrypi daemon.info: dhcpcd[727]: wlan0: how-to line")
    lines.append(b"\xff\xfe not UTF-8 #012 and a tab#011")
    feed_run(spool_dir, lines)
    batch_ids = [name.split("+", 1)[0] for name in os.listdir(spool_dir / "ready")]
    assert batch_ids

    with (
        IdentityBroker() as broker,
        Gateway(
            broker.lookup,
            on_request=lambda_proxy(lambda event, ctx: handler.handle(event, ctx, deps)),
        ) as gw,
    ):
        cfg = config.load(
            None,
            {**device.config_values(), "endpoint_url": gw.url, "spool_dir": str(spool_dir)},
            environ={},
        )
        assert run_ship(cfg) == 0
        assert run_ship(cfg) == 0  # nothing left: a second run sends nothing
        statuses = [r.status for r in gw.received]

    assert statuses and all(s == 200 for s in statuses), statuses
    assert os.listdir(spool_dir / "ready") == []
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    # The date partition is the batch's window (the start of its id), not today.
    expected = {
        f"logs/dt={b[0:4]}-{b[4:6]}-{b[6:8]}/device={device.username}/{b}.jsonl.gz"
        for b in batch_ids
    }
    assert set(keys) == expected
    records: list[dict[str, Any]] = []
    for key in keys:
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        records += [json.loads(x) for x in gzip.decompress(body).splitlines()]
    assert len(records) == len(lines)
    uuids = [r["uuid"] for r in records if r.get("uuid")]
    assert sorted(uuids) == sorted(f"{i:032X}" for i in range(200))
    assert {r["device_id"] for r in records} == {device.username}
    errs = [r for r in records if r.get("severity_num") == 3]
    assert len(errs) == 4 and all(r["severity"] == "err" for r in errs)
    howto = next(r for r in records if "how-to line" in (r.get("msg") or ""))
    assert howto["severity"] == "info" and howto["app"] == "dhcpcd"
    assert any("\ufffd" in (r.get("raw") or r.get("msg") or "") for r in records)
