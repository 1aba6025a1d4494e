"""Cognito: user-pool login, identity-pool credentials, and the renewal ladder.

The device is a user-pool user (username = device id). It logs in with SRP
through pycognito (SECRET_HASH added when the app client has a secret), then
trades the ID token for temporary AWS credentials with the identity pool's
`GetId` (the identity id is cached: real Cognito returns the same one every
time, so asking again only costs a round trip) and `GetCredentialsForIdentity`.
Those two calls are unauthenticated, so the boto3 clients are UNSIGNED and
never go looking for AWS keys on the device.

Everything obtained is cached on disk by `credcache.CredentialCache`
(`state/credentials.json`, private, bound to this config). A token or
credential is renewed when less than `min(300 s, half its lifetime)` is
left: 5 minutes for real Cognito (1 h credentials); for an emulator handing
out 90 s credentials it becomes 45 s instead of "always due". Renewal order:
credentials from the cached ID token; else new tokens from the refresh
token; else, when that is refused, a full login. A refused login is an
`AuthError` (the operator must act); Cognito being unreachable or throttling
is an `AuthUnavailableError`, which the shipper retries like an API outage.

The password, the client secret, tokens and keys never appear in a log line,
an error message or a repr. boto3 honours `AWS_ENDPOINT_URL` (and
`AWS_ENDPOINT_URL_COGNITO_IDP` / `_COGNITO_IDENTITY`) by itself, which is how
tests point Cognito at a local emulator.

boto3 and pycognito are imported when first needed: `StaticAuth` and the
rest of this module stay cheap to import.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable, Optional

from omprog_forwarder.config import Config
from omprog_forwarder.errors import AuthError, AuthUnavailableError
from omprog_forwarder.ship.credcache import CredentialCache

log = logging.getLogger(__name__)

RENEW_MARGIN = 300.0
LOGIN_SRP, LOGIN_PASSWORD = "srp", "password"
# Cognito error codes that mean "these credentials/tokens are not accepted".
_REFUSED = {
    "NotAuthorizedException",
    "UserNotFoundException",
    "UserNotConfirmedException",
    "PasswordResetRequiredException",
}
# ... and those that mean "try again later".
_UNAVAILABLE = {
    "TooManyRequestsException",
    "TooManyFailedAttemptsException",
    "LimitExceededException",
    "InternalErrorException",
    "InternalServerError",
    "ServiceUnavailable",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeoutException",
}


@dataclass(frozen=True)
class Credentials:
    """Temporary AWS credentials; `expiration` is epoch seconds (server clock)."""

    access_key: str
    secret_key: str
    token: str
    expiration: float

    def __repr__(self) -> str:
        return f"Credentials(access_key={self.access_key!r}, expiration={self.expiration})"


def renew_margin(obtained_at: float, expires_at: float) -> float:
    """How long before expiry to renew: 5 minutes, or half a shorter lifetime."""
    return min(RENEW_MARGIN, max(0.0, expires_at - obtained_at) / 2)


def is_due(now: float, obtained_at: float, expires_at: float) -> bool:
    return expires_at - now < renew_margin(obtained_at, expires_at)


# Their DEBUG output holds request bodies (InitiateAuth carries the password in
# USER_PASSWORD_AUTH, tokens everywhere). Whatever log_level says, they stay quiet.
_CHATTY_LOGGERS = ("botocore", "boto3", "urllib3", "pycognito", "requests_aws4auth")


def quiet_dependencies(level: int = logging.WARNING) -> None:
    """Keep third-party loggers that could print secrets at `level` or above."""
    for name in _CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level < level:
            logger.setLevel(level)


class StaticAuth:
    """Fixed credentials: for benchmarks and tests where Cognito is not the subject."""

    def __init__(self, creds: Credentials) -> None:
        self.creds = creds
        self.counts: collections.Counter[str] = collections.Counter()

    def credentials(self) -> Credentials:
        return self.creds

    def renew(self) -> Credentials:
        self.counts["credential_renewals"] += 1
        return self.creds


class _TokenRefused(Exception):
    """Internal: Cognito refused a token (refresh token or ID token); try the next way."""


class CognitoAuth:
    """Cognito login + identity-pool credentials for one device, cached on disk.

    `now` is the (corrected) wall clock used for every expiry decision;
    `login_flow` is "srp" (default) or "password" (USER_PASSWORD_AUTH, what
    the how-to used; SRP falls back to it by itself when the app client does
    not allow SRP).
    """

    def __init__(
        self,
        cfg: Config,
        cache_path: str,
        lock_path: str,
        *,
        now: Callable[[], float] = time.time,
        session: Any = None,
        login_flow: str = LOGIN_SRP,
    ) -> None:
        if login_flow not in (LOGIN_SRP, LOGIN_PASSWORD):
            raise ValueError(f"login_flow must be {LOGIN_SRP!r} or {LOGIN_PASSWORD!r}")
        self.cfg = cfg
        self.cache = CredentialCache(cache_path, lock_path, self._binding())
        self.now = now
        self.login_flow = login_flow
        self._session = session
        self._state: Optional[dict[str, Any]] = None
        self._identity_client: Any = None
        self.counts: collections.Counter[str] = collections.Counter()
        quiet_dependencies()

    # -- public ---------------------------------------------------------

    def credentials(self) -> Credentials:
        """Credentials with more than the renewal margin left, renewing them if needed."""
        creds = self._fresh(self._state)
        if creds is not None:
            return creds
        with self.cache.locked():
            state = self._load()  # another process may have renewed meanwhile
            creds = self._fresh(state)
            if creds is not None:
                return creds
            return self._obtain(state)

    def renew(self) -> Credentials:
        """New credentials even if the cached ones look valid (the API refused them)."""
        with self.cache.locked():
            state = self._load()
            state.pop("credentials", None)
            return self._obtain(state)

    def login(self) -> float:
        """A full login now, whatever the cache holds (`check` proves the password
        works); the new tokens are cached. Returns the ID token's expiry."""
        with self.cache.locked():
            state = self._load()
            state.pop("tokens", None)
            state.pop("credentials", None)
            self._login(state)
            self._save(state)
            return float(state["tokens"]["expires_at"])

    # -- cache ----------------------------------------------------------

    def _binding(self) -> dict[str, str]:
        c = self.cfg
        return {
            "region": c.region,
            "user_pool_id": c.user_pool_id,
            "client_id": c.client_id,
            "identity_pool_id": c.identity_pool_id,
            "username": c.username,
            "endpoint": os.environ.get("AWS_ENDPOINT_URL", ""),
        }

    def _load(self) -> dict[str, Any]:
        self._state = self.cache.load()
        return self._state

    def _save(self, state: dict[str, Any]) -> None:
        self.cache.save(state)
        self._state = state

    def _fresh(self, state: Optional[dict[str, Any]]) -> Optional[Credentials]:
        c = (state or {}).get("credentials")
        if not c:
            return None
        try:
            if is_due(self.now(), c["obtained_at"], c["expires_at"]):
                return None
            return Credentials(c["access_key"], c["secret_key"], c["token"], c["expires_at"])
        except (KeyError, TypeError):
            return None

    def _tokens_fresh(self, state: dict[str, Any]) -> bool:
        t = state.get("tokens") or {}
        try:
            return bool(t.get("id_token")) and not is_due(
                self.now(), t["obtained_at"], t["expires_at"]
            )
        except (KeyError, TypeError):
            return False

    # -- the renewal ladder ---------------------------------------------

    def _obtain(self, state: dict[str, Any]) -> Credentials:
        try:
            if not self._tokens_fresh(state):
                self._renew_tokens(state)
            try:
                creds = self._fetch_credentials(state)
            except _TokenRefused:
                # The identity pool refused an ID token that looked valid
                # (revoked, user disabled): get new tokens once.
                log.info("the identity pool refused the cached ID token; renewing tokens")
                state.pop("tokens", None)
                self._renew_tokens(state, refresh=False)
                creds = self._fetch_credentials(state)
        except _TokenRefused as exc:
            raise AuthError(self._redact(f"Cognito refused the device's tokens: {exc}")) from None
        self._save(state)
        return creds

    def _renew_tokens(self, state: dict[str, Any], refresh: bool = True) -> None:
        tokens = state.get("tokens") or {}
        if refresh and tokens.get("refresh_token"):
            try:
                self._refresh(state)
                return
            except _TokenRefused:
                log.info("Cognito refused the refresh token; logging in again")
        state.pop("tokens", None)
        self._login(state)

    def _cognito(self, tokens: Optional[dict[str, Any]] = None) -> Any:
        from botocore.config import Config as BotoConfig
        from pycognito import Cognito

        tokens = tokens or {}
        return Cognito(
            self.cfg.user_pool_id,
            self.cfg.client_id,
            user_pool_region=self._pool_region(),
            username=self.cfg.username,
            client_secret=self.cfg.client_secret or None,
            id_token=tokens.get("id_token"),
            access_token=tokens.get("access_token"),
            refresh_token=tokens.get("refresh_token"),
            session=self._boto_session(),
            botocore_config=self._boto_config(BotoConfig),
        )

    def _login(self, state: dict[str, Any]) -> None:
        flow = self.login_flow
        u = self._cognito()
        with self._translated("login"):
            if flow == LOGIN_SRP:
                try:
                    u.authenticate(password=self.cfg.password)
                except Exception as exc:
                    if not _srp_not_enabled(exc):
                        raise
                    log.warning(
                        "the Cognito app client does not allow SRP; logging in with "
                        "USER_PASSWORD_AUTH instead (the password goes to Cognito over TLS). "
                        "Allow ALLOW_USER_SRP_AUTH on the app client to avoid that."
                    )
                    flow = self.login_flow = LOGIN_PASSWORD
            if flow == LOGIN_PASSWORD:
                self._password_login(u)
        self.counts["logins"] += 1
        log.info("logged in to Cognito as %s (%s)", self.cfg.username, flow)
        self._keep_tokens(state, u)

    def _password_login(self, u: Any) -> None:
        from pycognito.aws_srp import AWSSRP

        params = {"USERNAME": self.cfg.username, "PASSWORD": self.cfg.password}
        if self.cfg.client_secret:
            params["SECRET_HASH"] = AWSSRP.get_secret_hash(
                self.cfg.username, self.cfg.client_id, self.cfg.client_secret
            )
        resp = u.client.initiate_auth(
            ClientId=self.cfg.client_id, AuthFlow="USER_PASSWORD_AUTH", AuthParameters=params
        )
        if "AuthenticationResult" not in resp:
            raise AuthError(
                f"Cognito answered the login of {self.cfg.username!r} with the challenge "
                f"{resp.get('ChallengeName')!r}; a device user needs a permanent password "
                "and no MFA (see the provisioning notes)"
            )
        result = resp["AuthenticationResult"]
        u.access_token = result["AccessToken"]
        u.id_token = result["IdToken"]
        u.refresh_token = result.get("RefreshToken")
        u.verify_tokens()

    def _refresh(self, state: dict[str, Any]) -> None:
        u = self._cognito(state.get("tokens"))
        with self._translated("refresh"):
            u.renew_access_token()
        self.counts["token_refreshes"] += 1
        log.info("renewed the Cognito tokens with the refresh token")
        self._keep_tokens(state, u)

    def _keep_tokens(self, state: dict[str, Any], u: Any) -> None:
        previous = state.get("tokens") or {}
        claims = u.id_claims or {}
        state["tokens"] = {
            "id_token": u.id_token,
            "access_token": u.access_token,
            # Without rotation Cognito returns no new refresh token: keep the old one.
            "refresh_token": u.refresh_token or previous.get("refresh_token"),
            "expires_at": float(claims.get("exp", 0)),
            "obtained_at": self.now(),
        }

    def _fetch_credentials(self, state: dict[str, Any]) -> Credentials:
        client = self._identity()
        logins = {
            f"cognito-idp.{self._pool_region()}.amazonaws.com/{self.cfg.user_pool_id}": state[
                "tokens"
            ]["id_token"]
        }
        with self._translated("credentials"):
            for attempt in (1, 2):
                if not state.get("identity_id"):
                    got = client.get_id(IdentityPoolId=self.cfg.identity_pool_id, Logins=logins)
                    state["identity_id"] = got["IdentityId"]
                try:
                    resp = client.get_credentials_for_identity(
                        IdentityId=state["identity_id"], Logins=logins
                    )
                    break
                except Exception as exc:
                    if _error_code(exc) != "ResourceNotFoundException" or attempt == 2:
                        raise
                    state.pop("identity_id", None)  # the identity was deleted: ask again
        c = resp["Credentials"]
        expiration = c["Expiration"]
        expires_at = expiration.timestamp() if hasattr(expiration, "timestamp") else expiration
        creds = Credentials(c["AccessKeyId"], c["SecretKey"], c["SessionToken"], float(expires_at))
        state["credentials"] = {
            "access_key": creds.access_key,
            "secret_key": creds.secret_key,
            "token": creds.token,
            "expires_at": creds.expiration,
            "obtained_at": self.now(),
        }
        self.counts["credential_renewals"] += 1
        log.info(
            "got identity-pool credentials %s, valid for %.0f s",
            creds.access_key[:4] + "…",
            creds.expiration - self.now(),
        )
        return creds

    # -- boto3 plumbing -------------------------------------------------

    def _pool_region(self) -> str:
        pool = self.cfg.user_pool_id
        return pool.split("_", 1)[0] if "_" in pool else self.cfg.region

    def _identity_region(self) -> str:
        pool = self.cfg.identity_pool_id
        return pool.split(":", 1)[0] if ":" in pool else self.cfg.region

    def _boto_session(self) -> Any:
        if self._session is None:
            import boto3

            self._session = boto3.session.Session()
        return self._session

    @staticmethod
    def _boto_config(config_class: Any) -> Any:
        from botocore import UNSIGNED

        return config_class(
            signature_version=UNSIGNED,
            connect_timeout=10,
            read_timeout=30,
            retries={"max_attempts": 2, "mode": "standard"},
        )

    def _identity(self) -> Any:
        if self._identity_client is None:
            from botocore.config import Config as BotoConfig

            self._identity_client = self._boto_session().client(
                "cognito-identity",
                region_name=self._identity_region(),
                config=self._boto_config(BotoConfig),
            )
        return self._identity_client

    # -- errors ---------------------------------------------------------

    def _secrets(self) -> list[str]:
        values = [self.cfg.password, self.cfg.client_secret]
        state = self._state or {}
        for group in ("tokens", "credentials"):
            for key, value in (state.get(group) or {}).items():
                if key not in ("expires_at", "obtained_at", "access_key") and value:
                    values.append(str(value))
        return [v for v in values if v]

    def _redact(self, text: str) -> str:
        for secret in sorted(self._secrets(), key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    @contextlib.contextmanager
    def _translated(self, step: str) -> Iterator[None]:
        """boto3 / pycognito / requests errors -> ours, with nothing secret in them."""
        from botocore.exceptions import BotoCoreError, ClientError
        from pycognito.exceptions import (
            ForceChangePasswordException,
            MFAChallengeException,
            TokenVerificationException,
        )
        from requests import RequestException

        what = {
            "login": f"the Cognito login of {self.cfg.username!r}",
            "refresh": "the Cognito token refresh",
            "credentials": "the identity pool's GetId/GetCredentialsForIdentity",
        }[step]
        try:
            yield
        except (AuthError, AuthUnavailableError):
            raise
        except ClientError as exc:
            code = _error_code(exc)
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            message = self._redact(exc.response.get("Error", {}).get("Message", ""))
            text = f"{what} failed: {code}: {message}"
            if code in _UNAVAILABLE or status >= 500:
                raise AuthUnavailableError(text) from None
            if step in ("refresh", "credentials") and code == "NotAuthorizedException":
                raise _TokenRefused(text) from None
            if code in _REFUSED:
                raise AuthError(
                    f"Cognito refused {what}: {code}: {message} "
                    "(check username and password; is the user disabled?)"
                ) from None
            raise AuthError(
                f"{what} failed: {code}: {message} "
                "(check region, user_pool_id, client_id, client_secret and identity_pool_id)"
            ) from None
        except BotoCoreError as exc:
            raise AuthUnavailableError(
                self._redact(f"{what} failed: {type(exc).__name__}: {exc}")
            ) from None
        except RequestException as exc:  # pycognito fetches the pool's JWKS with requests
            raise AuthUnavailableError(
                self._redact(
                    f"{what} failed fetching the pool's signing keys: {type(exc).__name__}"
                )
            ) from None
        except ForceChangePasswordException:
            raise AuthError(
                f"{what}: the user must change its password; provision devices with a "
                "permanent password (admin_set_user_password Permanent=True)"
            ) from None
        except MFAChallengeException:
            raise AuthError(f"{what}: Cognito asks for MFA, which a device cannot answer") from None
        except TokenVerificationException as exc:
            raise AuthError(self._redact(f"{what}: token verification failed: {exc}")) from None


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _srp_not_enabled(exc: BaseException) -> bool:
    """Cognito's answer when the app client does not list ALLOW_USER_SRP_AUTH."""
    if _error_code(exc) != "InvalidParameterException":
        return False
    message = str(getattr(exc, "response", {}).get("Error", {}).get("Message", ""))
    return "not enabled" in message.lower()
