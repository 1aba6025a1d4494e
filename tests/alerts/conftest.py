"""The alert policy's world: both functions on moto (S3, Cognito, DynamoDB), a loopback Slack,
one fake clock for everything.

``World.send`` is a device's batch through the real ingest handler (REST proxy event,
the caller's Cognito identity); ``World.tick`` is one run of the scheduled function.
The clock only moves when a test says so (or when the code sleeps, e.g. a 429's
``Retry-After``), so every figure is exact and no test depends on the day it runs:
times start at a fixed instant taken from the test data.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import handler
import identity
import pytest
import scheduled
from support.alert_world import BUCKET, REGION, T0, Aws, World, _tables
from support.alerting import AtomicRequests, create_table, loopback_slack
from support.clock import FakeClock


@pytest.fixture(autouse=True)
def _cold_containers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test is a cold container of each function, with fake AWS credentials."""
    identity.clear_cache()
    handler.COUNTERS.clear()
    scheduled.COUNTERS.clear()
    monkeypatch.setattr(handler, "_alerts_off_logged", False)
    monkeypatch.setattr(handler, "_clients", {})
    monkeypatch.setattr(handler, "_webhook_urls", {})
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(scope="module")
def _aws() -> Iterator[Aws]:
    """moto for one module (module scope: a mock left active would catch other suites')."""
    import boto3
    from moto import mock_aws

    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        idp = boto3.client("cognito-idp", region_name=REGION)
        pool = idp.create_user_pool(PoolName="devices")["UserPool"]["Id"]
        identity_pool = boto3.client("cognito-identity", region_name=REGION).create_identity_pool(
            IdentityPoolName="devices", AllowUnauthenticatedIdentities=False
        )["IdentityPoolId"]
        yield Aws(s3, idp, boto3.client("dynamodb", region_name=REGION), pool, identity_pool)


@pytest.fixture
def world(_aws: Aws) -> Iterator[World]:
    """A fresh state table and Slack per test; the bucket and the user pool are shared."""
    table = create_table(_aws.dynamodb, f"state-{next(_tables)}")
    clock = FakeClock(start=T0)
    with loopback_slack() as slack:
        common = {
            "WEBHOOK_URL": slack.url,
            "STATE_TABLE": table,
            "USER_POOL_ID": _aws.user_pool_id,
        }
        env = {**common, "BUCKET_NAME": BUCKET, "IDENTITY_POOL_ID": _aws.identity_pool_id}
        yield World(
            _aws,
            table,
            slack,
            clock,
            AtomicRequests(_aws.dynamodb),
            env,
            dict(common),
        )


@pytest.fixture
def log_lines(caplog: pytest.LogCaptureFixture) -> Any:
    """The functions' structured log lines so far, as dicts."""
    caplog.set_level("INFO", logger="omprog_forwarder.lambda")

    def read() -> list[dict[str, Any]]:
        found = []
        for record in caplog.records:
            if record.name == "omprog_forwarder.lambda":
                try:
                    found.append(json.loads(record.getMessage()))
                except ValueError:
                    pass
        return found

    return read
