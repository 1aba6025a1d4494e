"""AWS on loopback: moto in server mode, and the identity pool moto does not emulate.

`MotoServer` runs `moto.server.ThreadedMotoServer` on 127.0.0.1 in this
process (port 0 unless one is asked for). Every boto3 client pointed at it
(`AWS_ENDPOINT_URL`) gets Cognito, S3, DynamoDB, Secrets Manager and
CloudFormation, with fake keys.

moto's identity pool hands every identity the same credentials
(`TESTACCESSKEY12345`), so a gateway cannot tell one device from another,
and it asks nothing of the login it is given. `IdentityBroker` replaces its
`GetId` and `GetCredentialsForIdentity` (in this process, where the server
runs) with what Cognito does:

* the call must carry a login (`Logins`) from a user pool the identity pool
  trusts, as an ID token that pool signed, not expired, of a user still
  enabled (`ServerSideTokenCheck`): else `NotAuthorizedException` (the pools
  allow no unauthenticated identities);
* one identity id per (identity pool, user), the same on every call;
* credentials unique to each call, valid `lifetime` seconds on `clock`, and
  remembered with the caller's identity (`lookup(access_key)`), which is what
  API Gateway puts in `requestContext.identity` for a verified signature:
  `cognitoIdentityPoolId`, `cognitoIdentityId`, `cognitoAuthenticationType`
  and `cognitoAuthenticationProvider` (`provider,provider:CognitoSignIn:SUB`).

That is enough for the Lambda's device binding to be exercised for real:
device A's credentials archive under A, and a body claiming B is refused.
"""

from __future__ import annotations

import datetime
import gzip
import json
import os
import secrets
import threading
import time
from typing import Any, Callable, Optional

from devstack.gateway import Caller

ADMIN_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
ACCOUNT_ID = "123456789012"  # moto's default account


class MotoServer:
    """moto in server mode on loopback, in this process."""

    def __init__(self, region: str = "eu-west-1", port: int = 0) -> None:
        self.region = region
        self.port = port
        self.server: Any = None
        self.endpoint = ""

    def start(self) -> MotoServer:
        import logging

        from moto.server import ThreadedMotoServer

        # One access-log line per AWS call is noise on a terminal and in test output.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.port = port
        self.endpoint = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service, region_name=self.region, endpoint_url=self.endpoint, **ADMIN_KEYS
        )

    def jwks(self, pool_id: str) -> str:
        """A user pool's public keys as moto serves them (some moto servers answer that
        URL with an HTML error page: then moto's own key file, the same keys)."""
        import requests

        resp = requests.get(f"{self.endpoint}/{pool_id}/.well-known/jwks.json", timeout=10)
        try:
            if resp.ok and "keys" in resp.json():
                return resp.text
        except ValueError:
            pass
        return moto_jwks()

    def environ(self) -> dict[str, str]:
        """What a device process needs to talk to this server (and never to AWS).

        pycognito does not see AWS_ENDPOINT_URL, so the tokens' issuer still
        names the real Cognito host; COGNITO_JWKS gives it the pool's keys so
        it never fetches them from the internet.
        """
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "COGNITO_JWKS": moto_jwks(),
            "AWS_EC2_METADATA_DISABLED": "true",
        }


def moto_jwks() -> str:
    """moto's user-pool public keys (every moto pool signs with the same key)."""
    import moto.cognitoidp

    path = os.path.join(
        os.path.dirname(moto.cognitoidp.__file__), "resources", "jwks-public.json.gz"
    )
    with gzip.open(path, "rt") as fh:
        return fh.read()


class IdentityBroker:
    """Cognito identity pools' GetId / GetCredentialsForIdentity, per identity (see above)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        lifetime: float = 3600.0,
        token_clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        # moto's user pool issues tokens on real time: their expiry is judged on it.
        self.token_clock = token_clock
        self.lifetime = lifetime
        self.issued: dict[str, Caller] = {}
        self.identities: dict[tuple[str, str], str] = {}
        self.calls = {"get_id": 0, "get_credentials_for_identity": 0, "refused": 0}
        self._lock = threading.Lock()
        self._patches: list[Any] = []
        self._keys: Any = None

    # -- for the gateway ------------------------------------------------

    def lookup(self, access_key: str) -> Optional[Caller]:
        with self._lock:
            return self.issued.get(access_key)

    # -- install into moto ----------------------------------------------

    def __enter__(self) -> IdentityBroker:
        from unittest import mock

        from moto.cognitoidentity.responses import CognitoIdentityResponse

        broker = self

        def get_id(response: Any) -> str:
            return broker.get_id(
                response._get_param("IdentityPoolId"), response._get_param("Logins") or {}
            )

        def get_credentials(response: Any) -> str:
            return broker.get_credentials_for_identity(
                response._get_param("IdentityId"), response._get_param("Logins") or {}
            )

        self._patches = [
            mock.patch.object(CognitoIdentityResponse, "get_id", get_id),
            mock.patch.object(
                CognitoIdentityResponse, "get_credentials_for_identity", get_credentials
            ),
        ]
        for patch in self._patches:
            patch.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        for patch in reversed(self._patches):
            patch.stop()
        self._patches = []

    # -- what Cognito does ------------------------------------------------

    def get_id(self, identity_pool_id: str, logins: dict[str, str]) -> str:
        self.calls["get_id"] += 1
        pool = self._pool(identity_pool_id)
        provider, claims = self._verified_login(pool, logins)
        key = (identity_pool_id, claims["sub"])
        with self._lock:
            identity_id = self.identities.get(key)
            if identity_id is None:
                region = identity_pool_id.split(":", 1)[0]
                identity_id = f"{region}:{secrets.token_hex(4)}-{secrets.token_hex(2)}-" + (
                    f"{secrets.token_hex(2)}-{secrets.token_hex(2)}-{secrets.token_hex(6)}"
                )
                self.identities[key] = identity_id
        return json.dumps({"IdentityId": identity_id})

    def get_credentials_for_identity(self, identity_id: str, logins: dict[str, str]) -> str:
        self.calls["get_credentials_for_identity"] += 1
        with self._lock:
            owner = next((k for k, v in self.identities.items() if v == identity_id), None)
        if owner is None:
            self._refuse("ResourceNotFoundException", f"Identity '{identity_id}' not found.")
        identity_pool_id, sub = owner
        provider, claims = self._verified_login(self._pool(identity_pool_id), logins)
        if claims["sub"] != sub:
            self._refuse("NotAuthorizedException", "Logins don't match the identity.")
        akid = "ASIA" + secrets.token_hex(8).upper()
        caller = Caller(
            secret_key=secrets.token_urlsafe(30),
            session_token=secrets.token_urlsafe(60),
            expires_at=self.clock() + self.lifetime,
            identity={
                "cognitoIdentityPoolId": identity_pool_id,
                "cognitoIdentityId": identity_id,
                "cognitoAuthenticationType": "authenticated",
                "cognitoAuthenticationProvider": f"{provider},{provider}:CognitoSignIn:{sub}",
                "accountId": ACCOUNT_ID,
                "caller": f"AROAEXAMPLEDEVICEROLE:CognitoIdentityCredentials-{akid[-6:]}",
            },
        )
        with self._lock:
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

    # -- helpers ------------------------------------------------------------

    def _refuse(self, code: str, message: str) -> None:
        from moto.core.exceptions import JsonRESTError

        self.calls["refused"] += 1
        raise JsonRESTError(code, message)

    def _pool(self, identity_pool_id: str) -> Any:
        from moto.cognitoidentity.models import cognitoidentity_backends

        region = (identity_pool_id or "").split(":", 1)[0]
        backend = cognitoidentity_backends[ACCOUNT_ID][region] if region else None
        pool = backend.identity_pools.get(identity_pool_id) if backend is not None else None
        if pool is None:
            self._refuse(
                "ResourceNotFoundException", f"IdentityPool '{identity_pool_id}' not found."
            )
        return pool

    def _verified_login(self, pool: Any, logins: dict[str, str]) -> tuple[str, dict[str, Any]]:
        """The one trusted provider in `logins` and its verified ID token's claims."""
        import jwt

        trusted = {p.get("ProviderName") for p in (pool.cognito_identity_providers or [])}
        given = [p for p in logins if p in trusted]
        if not logins:
            self._refuse(
                "NotAuthorizedException", "Unauthenticated access is not supported for this pool."
            )
        if len(given) != 1 or len(logins) != 1:
            self._refuse("NotAuthorizedException", "Invalid login token. Not a trusted provider.")
        provider = given[0]
        if self._keys is None:
            self._keys = {k.key_id: k for k in jwt.PyJWKSet.from_json(moto_jwks()).keys}
        token = logins[provider]
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            claims = jwt.decode(
                token,
                self._keys[kid].key,
                algorithms=["RS256"],
                options={"verify_aud": False, "verify_exp": False},
            )
        except (jwt.PyJWTError, KeyError, ValueError):
            self._refuse("NotAuthorizedException", "Invalid login token. Not a valid token.")
        if claims.get("token_use") != "id" or f"https://{provider}" != claims.get("iss"):
            self._refuse("NotAuthorizedException", "Invalid login token. Issuer mismatch.")
        if float(claims.get("exp", 0)) <= self.token_clock():
            self._refuse("NotAuthorizedException", "Invalid login token. Token expired.")
        if not claims.get("sub"):
            self._refuse("NotAuthorizedException", "Invalid login token. No subject.")
        # ServerSideTokenCheck: a token of a user disabled since it was issued is refused.
        if not self._user_enabled(provider, claims):
            self._refuse("NotAuthorizedException", "Invalid login token. User is disabled.")
        return provider, claims

    @staticmethod
    def _user_enabled(provider: str, claims: dict[str, Any]) -> bool:
        from moto.cognitoidp.models import cognitoidp_backends

        pool_id = provider.rsplit("/", 1)[-1]
        region = pool_id.split("_", 1)[0]
        pool = cognitoidp_backends[ACCOUNT_ID][region].user_pools.get(pool_id)
        user = pool._get_user(str(claims.get("cognito:username", ""))) if pool else None
        return user is not None and user.enabled
