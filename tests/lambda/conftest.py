"""Shared fixtures for the Lambda tests: moto AWS, a loopback Slack, and the handler's dependencies.

``lambda`` is a Python keyword, so the function's directory is on pytest's
``pythonpath`` and its modules are imported by their own names (``handler``,
``parsing``, ...), as the Lambda runtime imports them. Nothing here talks to
anything but moto and 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import alerts
import handler
import identity
import pytest
from support.alerting import slack_problems
from support.clock import FakeClock

from devstack.slack import SlackSink

BUCKET = "omprog-test-logs"
DEVICE = "pi-kitchen-01"


@pytest.fixture(autouse=True)
def _fresh_container(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test is a cold container: no cached usernames, counters or clients, fake AWS creds."""
    identity.clear_cache()
    handler.COUNTERS.clear()
    monkeypatch.setattr(handler, "_alerts_off_logged", False)
    monkeypatch.setattr(handler, "_clients", {})
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@dataclass
class CognitoSetup:
    client: Any
    user_pool_id: str
    identity_pool_id: str
    subs: dict[str, str]

    def add_device(self, name: str, enabled: bool = True) -> str:
        """Register a device user (idempotent: the pool lives for a whole test module)."""
        if name not in self.subs:
            self.client.admin_create_user(
                UserPoolId=self.user_pool_id, Username=name, MessageAction="SUPPRESS"
            )
            user = self.client.admin_get_user(UserPoolId=self.user_pool_id, Username=name)
            self.subs[name] = next(a["Value"] for a in user["UserAttributes"] if a["Name"] == "sub")
        if enabled:
            self.client.admin_enable_user(UserPoolId=self.user_pool_id, Username=name)
        else:
            self.client.admin_disable_user(UserPoolId=self.user_pool_id, Username=name)
        return self.subs[name]


@dataclass
class AwsWorld:
    s3: Any
    cognito: CognitoSetup


@pytest.fixture(scope="module")
def _aws_world() -> Iterator[AwsWorld]:
    """moto for one test module: clients and pools are built once (a moto user pool takes
    ~0.3 s to create); the bucket is emptied before each test by ``s3``.

    Module scope, not session: a mock left active would capture other suites' AWS calls.
    """
    import boto3
    from moto import mock_aws

    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        idp = boto3.client("cognito-idp", region_name="eu-west-1")
        pool = idp.create_user_pool(PoolName="devices")["UserPool"]["Id"]
        identity_pool = boto3.client(
            "cognito-identity", region_name="eu-west-1"
        ).create_identity_pool(IdentityPoolName="devices", AllowUnauthenticatedIdentities=False)[
            "IdentityPoolId"
        ]
        cognito = CognitoSetup(idp, pool, identity_pool, {})
        cognito.add_device(DEVICE)
        yield AwsWorld(s3, cognito)


@pytest.fixture
def s3(_aws_world: AwsWorld) -> Any:
    """The moto S3 client, with an empty ``BUCKET``."""
    client = _aws_world.s3
    while True:
        listed = client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
        if not listed:
            return client
        client.delete_objects(
            Bucket=BUCKET, Delete={"Objects": [{"Key": o["Key"]} for o in listed]}
        )


@pytest.fixture
def cognito(_aws_world: AwsWorld) -> CognitoSetup:
    """A moto user pool holding the device ``DEVICE`` (enabled), and an identity pool id."""
    _aws_world.cognito.add_device(DEVICE)
    return _aws_world.cognito


@pytest.fixture
def slack() -> Iterator[SlackSink]:
    """devstack's loopback Slack webhook: records posts, answers from `script`, then `ok`."""
    with SlackSink() as sink:
        yield sink


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@dataclass
class Rig:
    """The handler wired to moto, the loopback Slack and a fake clock; ``env`` is editable."""

    deps: handler.Dependencies
    env: dict[str, str]
    s3: Any
    cognito: CognitoSetup
    slack: SlackSink
    clock: FakeClock

    def call(self, event: Any, context: Any = None) -> tuple[int, dict[str, Any]]:
        response = handler.handle(event, context, self.deps)
        assert set(response) == {"statusCode", "headers", "body"}
        assert response["headers"]["Content-Type"] == "application/json"
        return response["statusCode"], json.loads(response["body"])


@pytest.fixture
def rig(s3: Any, cognito: CognitoSetup, slack: SlackSink, clock: FakeClock) -> Rig:
    env = {
        "BUCKET_NAME": BUCKET,
        "WEBHOOK_URL": slack.url,
        "USER_POOL_ID": cognito.user_pool_id,
        "IDENTITY_POOL_ID": cognito.identity_pool_id,
    }
    deps = handler.Dependencies(
        s3=lambda: s3,
        cognito=lambda: cognito.client,
        transport=alerts.urllib_transport,
        sleep=clock.sleep,
        clock=clock,
        environ=env,
    )
    return Rig(deps, env, s3, cognito, slack, clock)


def closed_port() -> int:
    """A loopback port with nothing listening (an S3 or Slack that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(name="slack_problems")
def _slack_problems_fixture() -> Any:
    """The payload checker, as a fixture (test modules do not import conftest)."""
    return slack_problems


@pytest.fixture(name="closed_port")
def _closed_port_fixture() -> int:
    return closed_port()


@pytest.fixture
def bucket() -> str:
    """The moto bucket the ``s3`` fixture creates."""
    return BUCKET
