"""Who is calling: the device behind the request's Cognito identity, never the body's word.

API Gateway (``AWS_IAM`` auth) puts the caller's identity-pool identity in
``requestContext.identity``. The device is a user pool user whose username is
its device id; the user pool ``sub`` is the last part of
``cognitoAuthenticationProvider``. ``userArn``/``caller`` name the shared role
session, the same for every device, so they are never used.

``requestContext`` is trusted only because the API uses the ``AWS_PROXY``
(Lambda proxy) integration: there API Gateway builds that context itself from
the verified SigV4 signature, and nothing the caller sends can set it. A
non-proxy integration without a mapping template passes the request body
through as the event, so a caller could forge a ``requestContext`` naming
any device. Keep the proxy integration (or a mapping template that wraps the
body, as the how-to's does) in front of this function.

The ``sub`` → username lookup (Cognito ``ListUsers``) is cached per container
for ``CACHE_TTL_SECONDS`` (10 minutes): a sub names one user for good, but a
device that is disabled or deleted must be refused within that time by a warm
container too. Only hits are cached, so a device provisioned a minute ago is
found at once. Time comes from the caller's clock (the handler's
``Dependencies.clock``), so tests move it.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable, Optional

from errors import BadRequest, Forbidden, ServiceUnavailable
from request import ID_RE

_PROVIDER_RE = re.compile(
    r"cognito-idp\.[a-z0-9-]+\.amazonaws\.com/(?P<pool>[\w-]+_[0-9A-Za-z]+)"
    r":CognitoSignIn:(?P<sub>[0-9a-f-]{36})\Z",
    re.ASCII,
)

#: How long a looked-up username is trusted without asking Cognito again, seconds.
CACHE_TTL_SECONDS = 600.0

#: (user pool id, sub) → (username, clock time it expires), kept across warm invocations.
_USERNAMES: dict[tuple[str, str], tuple[str, float]] = {}


def clear_cache() -> None:
    """Forget every cached username (tests; a container never needs to)."""
    _USERNAMES.clear()


def caller_sub(event: dict[str, Any], user_pool_id: str, identity_pool_id: str) -> str:
    """Return the user pool ``sub`` of an authenticated caller of the expected pools."""
    context = event.get("requestContext")
    identity = context.get("identity") if isinstance(context, dict) else None
    if not isinstance(identity, dict):
        raise Forbidden("the request carries no Cognito identity (REQUIRE_IDENTITY is on)")
    if identity.get("cognitoAuthenticationType") != "authenticated":
        raise Forbidden("the caller is not an authenticated Cognito identity")
    if identity.get("cognitoIdentityPoolId") != identity_pool_id:
        raise Forbidden("the caller's identity pool is not this deployment's")
    provider = identity.get("cognitoAuthenticationProvider")
    if not isinstance(provider, str):
        raise Forbidden("the caller has no user pool login")
    match = _PROVIDER_RE.match(provider.rsplit(",", 1)[-1].strip())
    if match is None:
        raise Forbidden("the caller's login provider is not a user pool sign-in")
    if match.group("pool") != user_pool_id:
        raise Forbidden("the caller signed in to another user pool")
    return match.group("sub")


def username_for_sub(
    sub: str,
    user_pool_id: str,
    cognito: Callable[[], Any],
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Map a ``sub`` to its username with ``ListUsers``, cached per container for
    ``CACHE_TTL_SECONDS`` of ``clock`` time.

    ``cognito`` is a factory so the client is only built on a cache miss.
    """
    key = (user_pool_id, sub)
    now = clock()
    cached = _USERNAMES.get(key)
    if cached is not None:
        if now < cached[1]:
            return cached[0]
        del _USERNAMES[key]
    try:
        # `sub` matched [0-9a-f-]{36} above, so it cannot break out of the filter's quotes.
        answer = cognito().list_users(UserPoolId=user_pool_id, Filter=f'sub = "{sub}"', Limit=1)
    except Exception as exc:  # botocore ClientError, connection errors, throttling
        raise ServiceUnavailable("the device directory (Cognito) is unavailable") from exc
    users = answer.get("Users") or []
    if not users or not isinstance(users[0].get("Username"), str):
        raise Forbidden("no device is registered for this identity")
    if users[0].get("Enabled") is False:
        raise Forbidden("this device is disabled")
    username = users[0]["Username"]
    if not ID_RE.match(username):
        raise Forbidden("this device's username cannot be used as a device id")
    _USERNAMES[key] = (username, now + CACHE_TTL_SECONDS)
    return username


def resolve_device(
    event: dict[str, Any],
    claimed: Optional[str],
    *,
    require_identity: bool,
    user_pool_id: str,
    identity_pool_id: str,
    cognito: Callable[[], Any],
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """The device id to archive under: the caller's, or (how-to mode) the body's."""
    if not require_identity:
        if claimed is None:
            raise BadRequest("device_id is required", field="device_id")
        return claimed
    sub = caller_sub(event, user_pool_id, identity_pool_id)
    device = username_for_sub(sub, user_pool_id, cognito, clock)
    if claimed is not None and claimed != device:
        raise Forbidden("device_id does not match the caller's identity", field="device_id")
    return device
