"""devstack's IdentityBroker does what Cognito identity pools do and moto does not.

Each refusal is one a real identity pool answers; the last tests show that
the device binding in the Lambda is therefore exercised for real: device A's
credentials archive under A, and a body claiming B is refused.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.exceptions
import handler
import identity
import pytest
from support.clock import FakeClock
from support.moto_cognito import Device, MotoCognito, isolate_aws_env

from devstack.aws import IdentityBroker
from devstack.gateway import MSG_EXPIRED_TOKEN, Gateway, lambda_proxy
from omprog_forwarder import config
from omprog_forwarder.errors import CredentialsRejectedError
from omprog_forwarder.ship.auth import CognitoAuth
from omprog_forwarder.ship.transport import Transport, build_body

REGION = "eu-west-1"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoCognito]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with MotoCognito(REGION) as server:
        yield server


@pytest.fixture
def two_devices(moto, monkeypatch, tmp_path) -> tuple[Device, Device]:
    isolate_aws_env(monkeypatch, tmp_path)
    a = moto.provision("pi-a")
    b = moto.add_user(a, "pi-b")
    for k, v in a.environ().items():
        monkeypatch.setenv(k, v)
    return a, b


@pytest.fixture
def broker() -> Iterator[IdentityBroker]:
    with IdentityBroker() as b:
        yield b


def auth_for(dev: Device, tmp_path: Any, name: str) -> CognitoAuth:
    cfg = config.load(None, dev.config_values(), environ={})
    (tmp_path / name).mkdir()
    return CognitoAuth(cfg, str(tmp_path / name / "c.json"), str(tmp_path / name / "c.lock"))


def id_token(auth: CognitoAuth) -> str:
    auth.login()
    return auth._state["tokens"]["id_token"]


def identity_client() -> Any:
    return boto3.client("cognito-identity", region_name=REGION)


def provider(dev: Device) -> str:
    return f"cognito-idp.{REGION}.amazonaws.com/{dev.user_pool_id}"


def refused(code: str, call: Any, **kwargs: Any) -> str:
    with pytest.raises(botocore.exceptions.ClientError) as err:
        call(**kwargs)
    assert err.value.response["Error"]["Code"] == code
    return err.value.response["Error"]["Message"]


def test_each_device_gets_its_own_stable_identity_and_own_credentials(
    two_devices, broker, tmp_path
):
    a, b = two_devices
    auth_a, auth_b = auth_for(a, tmp_path, "a"), auth_for(b, tmp_path, "b")
    creds_a, creds_b = auth_a.credentials(), auth_b.credentials()
    assert creds_a.access_key != creds_b.access_key
    id_a, id_b = broker.lookup(creds_a.access_key), broker.lookup(creds_b.access_key)
    assert id_a.identity["cognitoIdentityId"] != id_b.identity["cognitoIdentityId"]
    assert id_a.identity["cognitoAuthenticationType"] == "authenticated"
    assert id_a.identity["cognitoAuthenticationProvider"].startswith(provider(a) + ",")
    # A second login of the same device: the same identity, new credentials.
    again = auth_for(a, tmp_path, "a2").credentials()
    assert again.access_key != creds_a.access_key
    assert (
        broker.lookup(again.access_key).identity["cognitoIdentityId"]
        == id_a.identity["cognitoIdentityId"]
    )


def test_an_unauthenticated_get_id_is_refused(two_devices, broker):
    a, _ = two_devices
    message = refused(
        "NotAuthorizedException", identity_client().get_id, IdentityPoolId=a.identity_pool_id
    )
    assert "Unauthenticated" in message


def test_a_token_of_an_untrusted_pool_is_refused(two_devices, broker, tmp_path, moto):
    a, _ = two_devices
    stranger = moto.provision("stranger")  # another user pool, not trusted by a's identity pool
    token = id_token(auth_for(stranger, tmp_path, "s"))
    refused(
        "NotAuthorizedException",
        identity_client().get_id,
        IdentityPoolId=a.identity_pool_id,
        Logins={provider(stranger): token},
    )


def test_a_forged_token_is_refused(two_devices, broker, tmp_path):
    a, _ = two_devices
    token = id_token(auth_for(a, tmp_path, "a"))
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["sub"] = "00000000-0000-0000-0000-000000000000"
    forged_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    message = refused(
        "NotAuthorizedException",
        identity_client().get_id,
        IdentityPoolId=a.identity_pool_id,
        Logins={provider(a): f"{head}.{forged_body}.{sig}"},
    )
    assert "Not a valid token" in message


def test_credentials_for_another_devices_identity_are_refused(two_devices, broker, tmp_path):
    a, b = two_devices
    token_a = id_token(auth_for(a, tmp_path, "a"))
    token_b = id_token(auth_for(b, tmp_path, "b"))
    client = identity_client()
    identity_b = client.get_id(IdentityPoolId=a.identity_pool_id, Logins={provider(b): token_b})
    refused(
        "NotAuthorizedException",
        client.get_credentials_for_identity,
        IdentityId=identity_b["IdentityId"],
        Logins={provider(a): token_a},
    )


def test_a_disabled_device_gets_no_more_credentials(two_devices, broker, tmp_path, moto):
    a, _ = two_devices
    token = id_token(auth_for(a, tmp_path, "a"))
    moto.client("cognito-idp").admin_disable_user(UserPoolId=a.user_pool_id, Username="pi-a")
    message = refused(
        "NotAuthorizedException",
        identity_client().get_id,
        IdentityPoolId=a.identity_pool_id,
        Logins={provider(a): token},
    )
    assert "disabled" in message
    moto.client("cognito-idp").admin_enable_user(UserPoolId=a.user_pool_id, Username="pi-a")


def test_an_unknown_identity_pool_is_not_found(two_devices, broker, tmp_path):
    a, _ = two_devices
    token = id_token(auth_for(a, tmp_path, "a"))
    refused(
        "ResourceNotFoundException",
        identity_client().get_id,
        IdentityPoolId=f"{REGION}:00000000-0000-0000-0000-000000000000",
        Logins={provider(a): token},
    )


def test_issued_credentials_expire_at_the_gateway_on_the_brokers_clock(two_devices, tmp_path):
    a, _ = two_devices
    aws_time = FakeClock(0.0, follow=time.time)
    with (
        IdentityBroker(clock=aws_time, lifetime=60) as broker,
        Gateway(broker.lookup, clock=aws_time) as gw,
    ):
        creds = auth_for(a, tmp_path, "a").credentials()
        transport = Transport(gw.url, REGION)
        body = build_body("pi-a", "20261126T231000Z-00000000000000b0", "2026-11-26T23:10:00Z", [])
        assert transport.post(body.data, creds, aws_time()).status == 200
        aws_time.advance(61)
        with pytest.raises(CredentialsRejectedError, match="expired"):
            transport.post(body.data, creds, aws_time())
    assert gw.received[-1].outcome == MSG_EXPIRED_TOKEN


# ---------------------------------------------------------------- the binding is real


@pytest.fixture
def archive(two_devices, broker, monkeypatch) -> Iterator[tuple[Gateway, Any, str]]:
    a, _ = two_devices
    identity.clear_cache()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    s3 = boto3.client("s3", region_name=REGION)
    bucket = f"archive-{a.user_pool_id[-8:].lower()}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    deps = handler.Dependencies(
        s3=lambda: s3,
        cognito=lambda: boto3.client("cognito-idp", region_name=REGION),
        transport=lambda *a, **k: (200, {}, b"ok"),
        sleep=lambda s: None,
        clock=lambda: 0.0,
        environ={
            "BUCKET_NAME": bucket,
            "USER_POOL_ID": a.user_pool_id,
            "IDENTITY_POOL_ID": a.identity_pool_id,
        },
    )
    with Gateway(
        broker.lookup,
        on_request=lambda_proxy(lambda event, ctx: handler.handle(event, ctx, deps)),
    ) as gw:
        yield gw, s3, bucket


def post(gw: Gateway, creds: Any, device_id: str) -> Any:
    body = build_body(
        device_id, "20261126T231000Z-00000000000000b1", "2026-11-26T23:10:00Z", [b"x"]
    )
    return Transport(gw.url, REGION).post(body.data, creds, gw.clock())


def test_each_devices_batch_lands_under_its_own_id(two_devices, archive, tmp_path):
    a, b = two_devices
    gw, s3, bucket = archive
    post(gw, auth_for(a, tmp_path, "a").credentials(), "pi-a")
    post(gw, auth_for(b, tmp_path, "b").credentials(), "pi-b")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert [k.split("/")[2] for k in keys] == ["device=pi-a", "device=pi-b"]


def test_a_device_claiming_another_device_is_refused(two_devices, archive, tmp_path):
    a, _ = two_devices
    gw, s3, bucket = archive
    with pytest.raises(Exception, match="HTTP 403"):
        post(gw, auth_for(a, tmp_path, "a").credentials(), "pi-b")
    assert gw.received[-1].status == 403
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
