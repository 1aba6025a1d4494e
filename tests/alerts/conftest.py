"""The alert policy's world: both functions on moto (S3, Cognito, DynamoDB), a loopback Slack,
one fake clock for everything.

``World.send`` is a device's batch through the real ingest handler (REST proxy event,
the caller's Cognito identity); ``World.tick`` is one run of the scheduled function.
The clock only moves when a test says so (or when the code sleeps, e.g. a 429's
``Retry-After``), so every figure is exact and no test depends on the day it runs:
times start at a fixed instant taken from the test data.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

import alerts
import handler
import identity
import pytest
import scheduled
from support.alerting import AtomicRequests, LoopbackSlack, create_table, loopback_slack
from support.clock import FakeClock
from support.events import batch, proxy_event

REGION = "eu-west-1"
BUCKET = "omprog-alert-tests"
#: 2026-11-26 23:00:07 UTC: off a minute boundary on purpose (the fleet gate slides).
T0 = datetime(2026, 11, 26, 23, 0, 7, tzinfo=timezone.utc).timestamp()
_tables = itertools.count()


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


@dataclass
class Aws:
    s3: Any
    idp: Any
    dynamodb: Any
    user_pool_id: str
    identity_pool_id: str
    subs: dict[str, str] = field(default_factory=dict)


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


def err_line(when: float, msg: str, severity: int = 3, app: str = "myapp") -> str:
    """A line in the project's JSON template (rsyslog.d/), at ``when``."""
    return json.dumps(
        {
            "ts": datetime.fromtimestamp(when, timezone.utc).isoformat(),
            "host": "pi",
            "facility": "daemon",
            "severity": severity,
            "app": app,
            "pid": "42",
            "msg": " " + msg,
            "uuid": None,
        }
    )


def info_line(when: float, msg: str = "all is well") -> str:
    return err_line(when, msg, severity=6, app="cron")


@dataclass
class World:
    aws: Aws
    table: str
    slack: LoopbackSlack
    clock: FakeClock
    dynamodb: Any
    env: dict[str, str]
    schedule_env: dict[str, str]
    sent_alert_lines: dict[str, int] = field(default_factory=dict)
    logs: list[dict[str, Any]] = field(default_factory=list)
    _batches: Iterator[int] = field(default_factory=itertools.count)

    def device(self, name: str, *, enabled: bool = True) -> str:
        """Register (or enable/disable) a device user; returns its sub."""
        idp, pool = self.aws.idp, self.aws.user_pool_id
        if name not in self.aws.subs:
            idp.admin_create_user(UserPoolId=pool, Username=name, MessageAction="SUPPRESS")
            user = idp.admin_get_user(UserPoolId=pool, Username=name)
            self.aws.subs[name] = next(
                a["Value"] for a in user["UserAttributes"] if a["Name"] == "sub"
            )
        if enabled:
            idp.admin_enable_user(UserPoolId=pool, Username=name)
        else:
            idp.admin_disable_user(UserPoolId=pool, Username=name)
        return self.aws.subs[name]

    def ingest_deps(self, dynamodb: Any = None) -> handler.Dependencies:
        return handler.Dependencies(
            s3=lambda: self.aws.s3,
            cognito=lambda: self.aws.idp,
            transport=alerts.urllib_transport,
            sleep=self.clock.sleep,
            clock=self.clock,
            environ=self.env,
            dynamodb=lambda: dynamodb or self.dynamodb,
            wall=self.clock,
        )

    def schedule_deps(self, dynamodb: Any = None) -> scheduled.Dependencies:
        return scheduled.Dependencies(
            dynamodb=lambda: dynamodb or self.dynamodb,
            cognito=lambda: self.aws.idp,
            transport=alerts.urllib_transport,
            sleep=self.clock.sleep,
            clock=self.clock,
            environ=self.schedule_env,
            wall=self.clock,
        )

    def send(
        self,
        device: str,
        lines: list[str],
        *,
        batch_id: Optional[str] = None,
        deps: Optional[handler.Dependencies] = None,
    ) -> tuple[int, dict[str, Any]]:
        """One batch of ``device`` through the ingest handler, as API Gateway calls it."""
        if device not in self.aws.subs:
            self.device(device)
        batch_id = batch_id or f"{self.table}.b{next(self._batches):07d}"
        stamp = datetime.fromtimestamp(self.clock(), timezone.utc).isoformat()
        event = proxy_event(
            batch(lines, device_id=device, batch_id=batch_id, timestamp=stamp),
            user_pool_id=self.aws.user_pool_id,
            sub=self.aws.subs[device],
            identity_pool_id=self.aws.identity_pool_id,
        )
        response = handler.handle(event, None, deps or self.ingest_deps())
        body = json.loads(response["body"])
        if response["statusCode"] == 200 and not body.get("duplicate"):
            self.sent_alert_lines[device] = self.sent_alert_lines.get(device, 0) + body["alerts"]
        return response["statusCode"], body

    def tick(self, deps: Optional[scheduled.Dependencies] = None) -> dict[str, Any]:
        """One run of the scheduled function."""
        return scheduled.handle({"source": "aws.events"}, None, deps or self.schedule_deps())

    def schedule_policy(self) -> Any:
        """The alert policy the functions read from this world's environment."""
        import settings

        return settings.load_policy(self.env)

    def item(self, key: str) -> dict[str, Any]:
        import state

        return state.StateStore(self.dynamodb, self.table).get(key)


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
