"""Cognito on loopback: moto in server mode, provisioned like a real device fleet.

`MotoCognito` runs `moto.server.ThreadedMotoServer` on 127.0.0.1 (port 0) and
`provision()` creates a user pool, an app client *with* a secret, an
identity pool trusting that client, and a device user with a permanent
random password (admin_create_user + admin_set_user_password, as in the
provisioning notes, research aws_slack.md section 7). `environ(device)` is
what a device process needs to talk to it: `AWS_ENDPOINT_URL` (botocore
sends every Cognito call there; pycognito does not see it, so the tokens'
issuer still matches) and `COGNITO_JWKS` (the pool's keys, so pycognito
never fetches them from the internet) -- the verified server-mode
workaround of section 2. `moto_cognito()` does all of that and restores
the environment afterwards.

moto's quirks, which tests must work around and say so:
* its SRP accepts any password: wrong-password tests use USER_PASSWORD_AUTH,
  which moto does check;
* GetId returns a new identity id on every call;
* every identity gets the same credentials (TESTACCESSKEY12345 / ABCSECRETKEY /
  ABC12345, `MOTO_CALLER`), valid for 90 s of real time. `CredentialVendor`
  replaces that one moto method (in-process, the server runs in this
  process) with unique credentials per call on an injectable clock, so a
  gateway can tell old credentials from renewed ones and expire them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import gzip
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable, Optional
from unittest import mock

import boto3
import requests
from moto.cognitoidentity.models import CognitoIdentityBackend
from moto.server import ThreadedMotoServer

from support.gateway import Caller

MOTO_ACCESS_KEY = "TESTACCESSKEY12345"
MOTO_CALLER = Caller(secret_key="ABCSECRETKEY", session_token="ABC12345")
_ADMIN_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


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


class MotoCognito:
    def __init__(self, region: str = "eu-west-1") -> None:
        self.region = region
        self.server: Optional[ThreadedMotoServer] = None
        self.endpoint = ""

    def start(self) -> MotoCognito:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def __enter__(self) -> MotoCognito:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def client(self, service: str) -> Any:
        return boto3.client(
            service, region_name=self.region, endpoint_url=self.endpoint, **_ADMIN_KEYS
        )

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

    def jwks(self, pool_id: str) -> str:
        """The pool's public keys as moto serves them (some moto 5.1 servers answer
        that URL with an HTML error page: then moto's own key file, the same keys)."""
        resp = requests.get(f"{self.endpoint}/{pool_id}/.well-known/jwks.json", timeout=10)
        try:
            if resp.ok and "keys" in resp.json():
                return resp.text
        except ValueError:
            pass
        import moto.cognitoidp

        path = os.path.join(
            os.path.dirname(moto.cognitoidp.__file__), "resources", "jwks-public.json.gz"
        )
        with gzip.open(path, "rt") as fh:
            return fh.read()

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


class CredentialVendor:
    """Unique identity-pool credentials per GetCredentialsForIdentity call.

    Replaces moto's constant, real-time 90 s credentials for the block (see the
    module docstring). `issued` maps each access key to a gateway `Caller`
    whose `expires_at` is on `clock`; pass `vendor.lookup` to the Gateway.
    """

    def __init__(self, clock: Callable[[], float] = time.time, lifetime: float = 90.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.issued: dict[str, Caller] = {}
        self._patch: Any = None

    def lookup(self, access_key: str) -> Optional[Caller]:
        return self.issued.get(access_key)

    def _vend(self, backend: Any, identity_id: str) -> str:
        akid = "ASIA" + secrets.token_hex(8).upper()
        caller = Caller(
            secret_key=secrets.token_urlsafe(30),
            session_token=secrets.token_urlsafe(60),
            expires_at=self.clock() + self.lifetime,
            identity={
                "cognitoIdentityId": identity_id,
                "cognitoAuthenticationType": "authenticated",
            },
        )
        self.issued[akid] = caller
        expiration = datetime.datetime.fromtimestamp(caller.expires_at, datetime.timezone.utc)
        return json.dumps(
            {
                "Credentials": {
                    "AccessKeyId": akid,
                    "Expiration": expiration.timestamp(),
                    "SecretKey": caller.secret_key,
                    "SessionToken": caller.session_token,
                },
                "IdentityId": identity_id,
            }
        )

    def __enter__(self) -> CredentialVendor:
        vendor = self

        def patched(backend: Any, identity_id: str) -> str:
            return vendor._vend(backend, identity_id)

        self._patch = mock.patch.object(
            CognitoIdentityBackend, "get_credentials_for_identity", patched
        )
        self._patch.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._patch.stop()


def caller_for_user(
    region: str, user_pool_id: str, identity_pool_id: str, username: str
) -> Caller:
    """What API Gateway puts in requestContext.identity for this user's credentials.

    moto gives every identity the same credentials (`MOTO_CALLER`), so a
    gateway that knows this one caller stands for one device at a time.
    """
    idp = boto3.client("cognito-idp", region_name=region)
    attrs = idp.admin_get_user(UserPoolId=user_pool_id, Username=username)
    sub = next(a["Value"] for a in attrs["UserAttributes"] if a["Name"] == "sub")
    provider = f"cognito-idp.{region}.amazonaws.com/{user_pool_id}"
    identity = {
        "cognitoIdentityPoolId": identity_pool_id,
        "cognitoIdentityId": f"{region}:00000000-0000-0000-0000-000000000001",
        "cognitoAuthenticationType": "authenticated",
        "cognitoAuthenticationProvider": f"{provider},{provider}:CognitoSignIn:{sub}",
    }
    return Caller(MOTO_CALLER.secret_key, MOTO_CALLER.session_token, identity=identity)


def isolate_aws_env(monkeypatch: Any, tmp_path: Any) -> None:
    """No host AWS or forwarder settings leak into a test; nothing asks instance metadata."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "OMPROG_FORWARDER_")) or name == "COGNITO_JWKS":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
