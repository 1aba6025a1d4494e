"""The gateway's scripted actions added for the reliability suite: `CompleteThenReset`
(the work is done, the answer is lost) and `Proceed` (a gap in a script).

`CompleteThenReset` is what tells an idempotent archive from one that only
looks idempotent: the handler has run and the batch is stored, yet the client
sees a dead connection and must send it again.
"""

from __future__ import annotations

import gzip
import json
import time

import pytest
import requests

from devstack.gateway import (
    MSG_SIGNATURE,
    Caller,
    CompleteThenReset,
    Gateway,
    Proceed,
    reply_json,
)
from omprog_forwarder.errors import CredentialsRejectedError, TransientSendError
from omprog_forwarder.ship.auth import Credentials
from omprog_forwarder.ship.transport import Transport

AKID, SECRET, TOKEN = "ASIATESTKEY", "secret-key", "session-token"
BODY = gzip.compress(json.dumps({"batch_id": "b", "logs": ["x"]}).encode())
CREDS = Credentials(AKID, SECRET, TOKEN, 0)


@pytest.fixture
def gw():
    handled: list[str] = []

    def handler(event):
        handled.append(event["requestContext"]["requestId"])
        return 200, {"Content-Type": "application/json"}, b'{"accepted": 1}'

    with Gateway({AKID: Caller(SECRET, TOKEN)}, on_request=handler) as g:
        g.handled = handled  # type: ignore[attr-defined]
        yield g


def post(gw, creds=CREDS):
    return Transport(gw.url, "eu-west-1", session=requests.Session()).post(BODY, creds, time.time())


def test_complete_then_reset_runs_the_handler_and_loses_the_answer(gw):
    gw.enqueue(CompleteThenReset())
    with pytest.raises(TransientSendError, match="cannot reach the API"):
        post(gw)
    assert len(gw.handled) == 1, "the handler ran: the batch would be archived"
    (rec,) = gw.received
    assert (rec.outcome, rec.status) == ("complete-reset", 200)
    assert rec.payload == {"batch_id": "b", "logs": ["x"]}
    assert gw.accepted == [], "not counted as answered"
    assert post(gw).status == 200, "the resend is answered"
    assert len(gw.handled) == 2


def test_complete_then_reset_answers_a_refused_request_as_usual(gw):
    """Nothing was done, so nothing is lost: the refusal goes out."""
    gw.enqueue(CompleteThenReset())
    with pytest.raises(CredentialsRejectedError, match="HTTP 403"):
        post(gw, Credentials(AKID, "wrong-secret", TOKEN, 0))
    assert gw.handled == []
    assert [r.outcome for r in gw.received] == [MSG_SIGNATURE]


def test_proceed_is_a_gap_in_a_script(gw):
    gw.enqueue(Proceed(), reply_json(503, {"message": "down"}), Proceed())
    assert post(gw).status == 200
    with pytest.raises(TransientSendError, match="HTTP 503"):
        post(gw)
    assert post(gw).status == 200
    assert [r.outcome for r in gw.received] == ["accepted", "scripted", "accepted"]
    assert len(gw.handled) == 2


def test_clear_script_forgets_what_was_not_used(gw):
    gw.enqueue(reply_json(503, {"message": "down"}), CompleteThenReset())
    gw.clear_script()
    assert post(gw).status == 200
    assert [r.outcome for r in gw.received] == ["accepted"]
