"""identity.py: the device is the caller's Cognito user, never the body's claim (moto Cognito)."""

from __future__ import annotations

from typing import Any

import identity
import pytest
from errors import BadRequest, Forbidden, ServiceUnavailable
from support.clock import FakeClock
from support.events import load_event

RECORDED_POOL = "eu-west-1_kcpcLxLzn"
RECORDED_IDENTITY_POOL = "eu-west-1:1ed8f1a2-3b4c-4d5e-8f90-a1b2c3d4e5f6"
RECORDED_SUB = "f31c1cb8-681c-4d3e-9749-d7c074ffd7f6"


def recorded() -> dict[str, Any]:
    return load_event("apigw_rest_proxy_cognito")


def test_recorded_event_yields_its_sub() -> None:
    assert identity.caller_sub(recorded(), RECORDED_POOL, RECORDED_IDENTITY_POOL) == RECORDED_SUB


def _edit(path: str, value: object) -> dict[str, Any]:
    event = recorded()
    node = event
    *parents, last = path.split(".")
    for name in parents:
        node = node[name]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return event


PROVIDER = "requestContext.identity.cognitoAuthenticationProvider"


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(_edit("requestContext", KeyError), id="no-request-context"),
        pytest.param(_edit("requestContext.identity", KeyError), id="no-identity"),
        pytest.param(_edit("requestContext.identity", "x"), id="identity-not-object"),
        pytest.param(
            _edit("requestContext.identity.cognitoAuthenticationType", "unauthenticated"),
            id="unauthenticated",
        ),
        pytest.param(
            _edit("requestContext.identity.cognitoAuthenticationType", None),
            id="iam-user-not-cognito",
        ),
        pytest.param(
            _edit("requestContext.identity.cognitoIdentityPoolId", "eu-west-1:other"),
            id="other-identity-pool",
        ),
        pytest.param(_edit(PROVIDER, None), id="no-provider"),
        pytest.param(_edit(PROVIDER, "graph.facebook.com"), id="social-provider"),
        pytest.param(
            _edit(
                PROVIDER,
                "cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Other:CognitoSignIn:" + RECORDED_SUB,
            ),
            id="other-user-pool",
        ),
        pytest.param(
            _edit(
                PROVIDER,
                f"cognito-idp.eu-west-1.amazonaws.com/{RECORDED_POOL}:CognitoSignIn:../../x",
            ),
            id="sub-path-injection",
        ),
        pytest.param(
            _edit(
                PROVIDER,
                f"cognito-idp.eu-west-1.amazonaws.com/{RECORDED_POOL}:CognitoSignIn:"
                '"x" or sub = "y',
            ),
            id="sub-filter-injection",
        ),
    ],
)
def test_callers_who_are_not_a_device_of_this_deployment_are_403(event: dict[str, Any]) -> None:
    with pytest.raises(Forbidden):
        identity.caller_sub(event, RECORDED_POOL, RECORDED_IDENTITY_POOL)


def test_sub_maps_to_username_with_list_users(cognito: Any) -> None:
    sub = cognito.subs["pi-kitchen-01"]
    assert (
        identity.username_for_sub(sub, cognito.user_pool_id, lambda: cognito.client)
        == "pi-kitchen-01"
    )


def test_username_is_cached_per_container(cognito: Any) -> None:
    sub = cognito.subs["pi-kitchen-01"]
    calls = []

    def factory() -> Any:
        calls.append(1)
        return cognito.client

    for _ in range(3):
        assert identity.username_for_sub(sub, cognito.user_pool_id, factory) == "pi-kitchen-01"
    assert len(calls) == 1


def test_cached_username_expires_after_ten_minutes(cognito: Any) -> None:
    """A device disabled in Cognito is refused by a warm container once its entry expires."""
    sub = cognito.add_device("pi-ttl")
    clock, calls = FakeClock(5000.0), []

    def factory() -> Any:
        calls.append(clock.now)
        return cognito.client

    def lookup() -> str:
        return identity.username_for_sub(sub, cognito.user_pool_id, factory, clock)

    assert lookup() == "pi-ttl"
    cognito.add_device("pi-ttl", enabled=False)
    clock.now += identity.CACHE_TTL_SECONDS - 1
    assert lookup() == "pi-ttl" and calls == [5000.0]  # still the cached answer
    clock.now += 1
    with pytest.raises(Forbidden, match="disabled"):
        lookup()
    assert calls == [5000.0, 5600.0] and identity.CACHE_TTL_SECONDS == 600


def test_unknown_sub_is_403_and_not_cached(cognito: Any) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(Forbidden):
        identity.username_for_sub(unknown, cognito.user_pool_id, lambda: cognito.client)
    assert identity._USERNAMES == {}


def test_disabled_device_is_403(cognito: Any) -> None:
    sub = cognito.add_device("pi-retired", enabled=False)
    with pytest.raises(Forbidden, match="disabled"):
        identity.username_for_sub(sub, cognito.user_pool_id, lambda: cognito.client)


def test_username_unfit_for_a_key_is_403(cognito: Any) -> None:
    sub = cognito.add_device("pi kitchen")
    with pytest.raises(Forbidden, match="username"):
        identity.username_for_sub(sub, cognito.user_pool_id, lambda: cognito.client)


def test_cognito_outage_is_503(cognito: Any, closed_port: int) -> None:
    import boto3
    from botocore.config import Config

    down = boto3.client(
        "cognito-idp",
        endpoint_url=f"http://127.0.0.1:{closed_port}",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    sub = cognito.subs["pi-kitchen-01"]
    with pytest.raises(ServiceUnavailable):
        identity.username_for_sub(sub, cognito.user_pool_id, lambda: down)


def test_cognito_refusal_is_503_too(cognito: Any) -> None:
    """ListUsers denied or the pool gone: the device keeps its batch until an operator fixes it."""
    sub = cognito.subs["pi-kitchen-01"]
    with pytest.raises(ServiceUnavailable):
        identity.username_for_sub(sub, "eu-west-1_doesnotexist", lambda: cognito.client)


def _resolve(event: dict[str, Any], claimed: Any, cognito: Any, require: bool = True) -> str:
    return identity.resolve_device(
        event,
        claimed,
        require_identity=require,
        user_pool_id=cognito.user_pool_id,
        identity_pool_id=cognito.identity_pool_id,
        cognito=lambda: cognito.client,
    )


def _event_for(cognito: Any, name: str) -> dict[str, Any]:
    from support.events import proxy_event

    return proxy_event(
        {},
        user_pool_id=cognito.user_pool_id,
        sub=cognito.subs[name],
        identity_pool_id=cognito.identity_pool_id,
    )


def test_matching_or_absent_claim_resolves_to_the_caller(cognito: Any) -> None:
    event = _event_for(cognito, "pi-kitchen-01")
    assert _resolve(event, "pi-kitchen-01", cognito) == "pi-kitchen-01"
    assert _resolve(event, None, cognito) == "pi-kitchen-01"


def test_claiming_another_device_is_403(cognito: Any) -> None:
    cognito.add_device("pi-garage")
    with pytest.raises(Forbidden) as info:
        _resolve(_event_for(cognito, "pi-kitchen-01"), "pi-garage", cognito)
    assert info.value.field == "device_id"


def test_without_required_identity_the_validated_claim_is_used(cognito: Any) -> None:
    assert (
        _resolve(load_event("howto_test_event"), "THISISTEST", cognito, require=False)
        == "THISISTEST"
    )
    with pytest.raises(BadRequest):
        _resolve(load_event("howto_test_event"), None, cognito, require=False)


def test_howto_event_without_identity_is_403_by_default(cognito: Any) -> None:
    with pytest.raises(Forbidden, match="REQUIRE_IDENTITY"):
        _resolve(load_event("howto_test_event"), "THISISTEST", cognito)
