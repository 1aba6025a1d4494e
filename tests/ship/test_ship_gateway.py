"""The loopback gateway itself: it must refuse what API Gateway refuses, or the
shipper's tests prove nothing."""

from __future__ import annotations

import base64
import gzip
import json
import time

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from devstack.gateway import (
    MSG_MISSING,
    MSG_SIGNATURE,
    Caller,
    Gateway,
    Reset,
    lambda_proxy,
    reply_json,
)
from omprog_forwarder.ship.auth import Credentials
from omprog_forwarder.ship.transport import Transport

AKID, SECRET, TOKEN = "ASIATESTKEY", "secret-key", "session-token"
BODY = gzip.compress(json.dumps({"batch_id": "b", "logs": ["x"]}).encode())


@pytest.fixture
def gw():
    with Gateway(
        {AKID: Caller(SECRET, TOKEN, identity={"cognitoIdentityId": "eu-west-1:abc"})}
    ) as g:
        yield g


def signed_post(gw, body=BODY, secret=SECRET, token=TOKEN, skew=None, tamper=None):
    """Sign with requests-aws4auth exactly as the shipper does (`skew` seconds off the
    gateway's clock, taken at the moment of sending), then optionally tamper."""
    from requests_aws4auth import AWS4Auth

    auth = AWS4Auth(AKID, secret, "eu-west-1", "execute-api", session_token=token)
    headers = {"Content-Type": "application/gzip"}
    if skew is not None:
        when = gw.clock() + skew
        headers["x-amz-date"] = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))
    req = requests.Request("POST", gw.url, data=body, headers=headers, auth=auth).prepare()
    if tamper:
        tamper(req)
    return requests.Session().send(req, timeout=5)


def test_accepts_the_shippers_signature_and_builds_the_proxy_event(gw):
    sent = Transport(gw.url, "eu-west-1").post(
        BODY, Credentials(AKID, SECRET, TOKEN, 0), time.time()
    )
    assert sent.status == 200
    (rec,) = gw.accepted
    ev = rec.event
    assert (ev["resource"], ev["path"], ev["httpMethod"]) == ("/logs", "/logs", "POST")
    assert ev["requestContext"]["stage"] == "prod"
    assert ev["isBase64Encoded"] is True and base64.b64decode(ev["body"]) == BODY
    assert ev["requestContext"]["identity"]["accessKey"] == AKID
    assert ev["requestContext"]["identity"]["cognitoIdentityId"] == "eu-west-1:abc"
    assert rec.payload == {"batch_id": "b", "logs": ["x"]}


def test_accepts_a_botocore_signature(gw):
    req = AWSRequest("POST", gw.url, data=BODY, headers={"Content-Type": "application/gzip"})
    SigV4Auth(BotoCredentials(AKID, SECRET, TOKEN), "execute-api", "eu-west-1").add_auth(req)
    p = req.prepare()
    assert requests.post(p.url, data=p.body, headers=dict(p.headers), timeout=5).status_code == 200


def set_header(name, value):
    def tamper(req):
        req.headers[name] = value

    return tamper


def drop_header(name):
    def tamper(req):
        del req.headers[name]

    return tamper


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"tamper": set_header("Content-Type", "application/json")}, MSG_SIGNATURE),
        ({"tamper": lambda r: setattr(r, "body", r.body[:-1] + b"!")}, MSG_SIGNATURE),
        ({"secret": "wrong"}, MSG_SIGNATURE),
        ({"token": None}, "The security token included in the request is invalid."),
        ({"tamper": set_header("x-amz-security-token", "other")}, "invalid"),
        ({"tamper": drop_header("Authorization")}, MSG_MISSING),
        ({"skew": -360}, "Signature expired"),
        ({"skew": +360}, "Signature not yet current"),
    ],
    ids=[
        "header-changed",
        "body-changed",
        "wrong-secret",
        "no-token",
        "other-token",
        "unsigned",
        "6-min-old",
        "6-min-ahead",
    ],
)
def test_refuses_what_api_gateway_refuses(gw, kwargs, message):
    resp = signed_post(gw, **kwargs)
    assert resp.status_code == 403
    assert message in resp.json()["message"]
    assert gw.accepted == []


def test_four_minutes_old_is_still_accepted(gw):
    assert signed_post(gw, skew=-240).status_code == 200


def test_skew_refusal_carries_the_gateways_clock_in_date():
    t = 2_000_000_000.0
    with Gateway({AKID: Caller(SECRET, TOKEN)}, clock=lambda: t) as g:
        resp = signed_post(g)
        assert resp.status_code == 403
        assert resp.headers["Date"] == "Wed, 18 May 2033 03:33:20 GMT"


def test_hook_answer_and_scripted_reset(gw):
    gw.on_request = lambda event: (201, {"X-Seen": event["requestContext"]["requestId"]}, b"{}")
    gw.enqueue(Reset(), reply_json(418, {"message": "teapot"}))
    with pytest.raises(requests.ConnectionError):
        signed_post(gw)
    assert signed_post(gw).status_code == 418
    resp = signed_post(gw)
    assert resp.status_code == 201 and resp.headers["X-Seen"]
    assert [r.outcome for r in gw.received] == ["reset", "scripted", "accepted"]


def test_a_lambda_proxy_handler_plugs_in(gw):
    def handler(event, context):
        raw = base64.b64decode(event["body"]) if event["isBase64Encoded"] else event["body"]
        doc = json.loads(gzip.decompress(raw))
        return {
            "statusCode": 200,
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps({"accepted": doc["batch_id"]}),
        }

    gw.on_request = lambda_proxy(handler)
    resp = signed_post(gw)
    assert resp.status_code == 200 and resp.json() == {"accepted": "b"}


def test_stop_also_drops_kept_alive_connections(gw):
    """Otherwise a client reusing its connection would still reach a 'down' API."""
    session = requests.Session()
    sent = Transport(gw.url, "eu-west-1", session=session)
    creds = Credentials(AKID, SECRET, TOKEN, 0)
    assert sent.post(BODY, creds, time.time()).status == 200
    gw.stop()
    from omprog_forwarder.errors import TransientSendError

    with pytest.raises(TransientSendError):
        sent.post(BODY, creds, time.time())
    gw.start()
    assert sent.post(BODY, creds, time.time()).status == 200
