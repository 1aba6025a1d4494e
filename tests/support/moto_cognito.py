"""Test shortcuts over devstack.aws: a provisioned device in one call, a clean AWS env.

`MotoCognito` is devstack's `MotoServer` plus `provision()`: a fresh user
pool, an app client *with* a secret, an identity pool trusting it, and a
device user with a permanent random password (the calls `omprog-forwarder
provision` makes, without a stack: for tests that are not about
provisioning). `Device.environ()` points a device process at the server.

moto's quirks, which tests must work around and say so:
* its SRP accepts any password: wrong-password tests use USER_PASSWORD_AUTH,
  which moto does check;
* its identity pool gives every identity the same credentials
  (`MOTO_CALLER`, 90 s of real time): tests that need per-device or expiring
  credentials install `devstack.aws.IdentityBroker`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional

from devstack.aws import MotoServer
from devstack.gateway import Caller

MOTO_ACCESS_KEY = "TESTACCESSKEY12345"
MOTO_CALLER = Caller(secret_key="ABCSECRETKEY", session_token="ABC12345")


@dataclass(frozen=True)
class Device:
    """One provisioned device: everything its config file would hold."""

    endpoint: str
    region: str
    user_pool_id: str
    client_id: str
    client_secret: str
    identity_pool_id: str
    username: str
    password: str
    jwks: str

    def config_values(self) -> dict[str, str]:
        """The shipper's config keys (endpoint_url of the API is the test's to add)."""
        return {
            "region": self.region,
            "user_pool_id": self.user_pool_id,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "identity_pool_id": self.identity_pool_id,
            "username": self.username,
            "password": self.password,
        }

    def environ(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "COGNITO_JWKS": self.jwks,
            "AWS_EC2_METADATA_DISABLED": "true",
        }


def random_password() -> str:
    """Strong enough for Cognito's default policy (upper, lower, digit, symbol)."""
    return "Aa1!" + secrets.token_urlsafe(24)


class MotoCognito(MotoServer):
    def provision(self, username: str = "dev-0001", with_secret: bool = True) -> Device:
        """A fresh user pool, app client, identity pool and device user."""
        idp, ci = self.client("cognito-idp"), self.client("cognito-identity")
        pool_id = idp.create_user_pool(PoolName=f"devices-{secrets.token_hex(3)}")["UserPool"]["Id"]
        app = idp.create_user_pool_client(
            UserPoolId=pool_id,
            ClientName="device",
            GenerateSecret=with_secret,
            ExplicitAuthFlows=["ALLOW_USER_SRP_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
        )["UserPoolClient"]
        identity_pool_id = ci.create_identity_pool(
            IdentityPoolName=f"devices{secrets.token_hex(3)}",
            AllowUnauthenticatedIdentities=False,
            CognitoIdentityProviders=[
                {
                    "ProviderName": f"cognito-idp.{self.region}.amazonaws.com/{pool_id}",
                    "ClientId": app["ClientId"],
                }
            ],
        )["IdentityPoolId"]
        jwks = self.jwks(pool_id)
        device = Device(
            endpoint=self.endpoint,
            region=self.region,
            user_pool_id=pool_id,
            client_id=app["ClientId"],
            client_secret=app.get("ClientSecret", ""),
            identity_pool_id=identity_pool_id,
            username=username,
            password="",
            jwks=jwks,
        )
        return self.add_user(device, username)

    def add_user(self, device: Device, username: str, password: Optional[str] = None) -> Device:
        """Another device user in the same pools (returns its settings)."""
        idp = self.client("cognito-idp")
        password = password or random_password()
        idp.admin_create_user(
            UserPoolId=device.user_pool_id, Username=username, MessageAction="SUPPRESS"
        )
        idp.admin_set_user_password(
            UserPoolId=device.user_pool_id, Username=username, Password=password, Permanent=True
        )
        return dataclasses.replace(device, username=username, password=password)


@contextlib.contextmanager
def applied_environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block, then put back what was there."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def moto_cognito(region: str = "eu-west-1", username: str = "dev-0001") -> Iterator[Device]:
    """Start moto, provision one device, point boto3 at moto; undo everything after."""
    with MotoCognito(region) as moto:
        device = moto.provision(username)
        with applied_environ(device.environ()):
            yield device


def isolate_aws_env(monkeypatch: Any, tmp_path: Any) -> None:
    """No host AWS or forwarder settings leak into a test; nothing asks instance metadata."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "OMPROG_FORWARDER_")) or name == "COGNITO_JWKS":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
