"""The one way tests get Lambda events: load a recorded-shape fixture, then set its body.

Fixtures in ``tests/events/`` (``*.json``) keep the shape of real events so that the handler
is tested against what API Gateway and the how-to actually send; tests change
only what they are about (body, identity) through the helpers below.
"""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from typing import Any, Optional

EVENTS_DIR = Path(__file__).resolve().parents[1] / "events"

PROXY = "apigw_rest_proxy_cognito"
HOWTO_TEST = "howto_test_event"
HOWTO_MAPPING = "howto_mapping_template"
DIRECT = "direct_invoke"


def load_event(name: str) -> dict[str, Any]:
    """A fresh copy of ``tests/events/<name>.json``."""
    return json.loads((EVENTS_DIR / f"{name}.json").read_text(encoding="utf-8"))


def gzip_b64(data: bytes) -> str:
    """What API Gateway hands the Lambda for an ``application/gzip`` body."""
    return base64.b64encode(gzip.compress(data, mtime=0)).decode("ascii")


def proxy_event(
    batch: Any = None,
    *,
    raw: Optional[bytes] = None,
    encoding: str = "gzip",
    user_pool_id: Optional[str] = None,
    sub: Optional[str] = None,
    identity_pool_id: Optional[str] = None,
) -> dict[str, Any]:
    """The recorded REST proxy event carrying ``batch`` (or ``raw`` bytes).

    ``encoding``: ``gzip`` (the device: base64 of gzip), ``plain`` (a JSON
    string body, ``isBase64Encoded: false``) or ``base64`` (base64 of plain
    JSON). The identity fields are rewritten when ids are given, so that an
    event can point at a moto user pool.
    """
    event = load_event(PROXY)
    data = raw if raw is not None else json.dumps(batch).encode("utf-8")
    if encoding == "gzip":
        event["body"], event["isBase64Encoded"] = gzip_b64(data), True
    elif encoding == "base64":
        event["body"], event["isBase64Encoded"] = base64.b64encode(data).decode("ascii"), True
        event["headers"]["Content-Type"] = "application/octet-stream"
    elif encoding == "plain":
        event["body"], event["isBase64Encoded"] = data.decode("utf-8"), False
        event["headers"]["Content-Type"] = "application/json"
    else:
        raise ValueError(encoding)
    identity = event["requestContext"]["identity"]
    if identity_pool_id is not None:
        identity["cognitoIdentityPoolId"] = identity_pool_id
    if user_pool_id is not None or sub is not None:
        last = identity["cognitoAuthenticationProvider"].rsplit(",", 1)[-1]
        old_provider, _, old_sub = last.partition(":CognitoSignIn:")
        pool = user_pool_id or old_provider.rsplit("/", 1)[-1]
        provider = f"cognito-idp.{pool.split('_', 1)[0]}.amazonaws.com/{pool}"
        identity["cognitoAuthenticationProvider"] = (
            f"{provider},{provider}:CognitoSignIn:{sub or old_sub}"
        )
    return event


def batch(
    logs: list[str],
    *,
    device_id: Optional[str] = "pi-kitchen-01",
    batch_id: Optional[str] = "20261126T231000Z-1a2b3c4d5e6f7a8b",
    timestamp: str = "2026-11-26T23:10:00+00:00",
) -> dict[str, Any]:
    """A device batch (the wire format of DESIGN.md); ``None`` leaves a field out."""
    body: dict[str, Any] = {"timestamp": timestamp, "logs": logs}
    if device_id is not None:
        body["device_id"] = device_id
    if batch_id is not None:
        body["batch_id"] = batch_id
    return body
