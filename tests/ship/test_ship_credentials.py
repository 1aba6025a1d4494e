"""Credentials expiring mid-run, and a device clock that is wrong.

moto hands every identity the same credentials for 90 s of real time, so a
gateway could not tell old credentials from renewed ones, and the tests
would have to sleep. devstack's `IdentityBroker` issues unique credentials
per call, expiring on a clock the test moves; the gateway checks expiry on
the same clock. Login and tokens are still moto's.
"""

from __future__ import annotations

import time

import pytest
from support.clock import FakeClock

from devstack.aws import IdentityBroker
from devstack.gateway import Gateway
from omprog_forwarder.ship import shipper as ship

W1, W2 = "20261126T231000Z", "20261126T231500Z"


def access_key(received) -> str:
    return received.headers["authorization"].split("Credential=")[1].split("/")[0]


@pytest.fixture
def world():
    """AWS's clock (the gateway and the credential vendor live on it)."""
    return FakeClock(0.0, follow=time.time)


@pytest.fixture
def vendor(world, device):
    with IdentityBroker(clock=world, lifetime=90) as v:
        yield v


@pytest.fixture
def api(world, vendor):
    with Gateway(vendor.lookup, clock=world) as gw:
        yield gw


def test_credentials_expiring_mid_run_are_renewed_before_a_send_fails(
    make_cfg, api, vendor, world, spool, seal
):
    first, second = seal(W1, [b"a"]), seal(W2, [b"b"])

    def accept_then_let_100_s_pass(event):
        world.advance(100)  # past the 90 s lifetime of the credentials just used
        return api.default_handler(event)

    api.on_request = accept_then_let_100_s_pass
    assert ship.run_ship(make_cfg(endpoint_url=api.url), wall=world) == 0

    assert api.statuses() == [200, 200]  # no refused send
    assert [p["batch_id"] for p in api.payloads] == [first.batch_id, second.batch_id]
    keys = [access_key(r) for r in api.accepted]
    assert keys[0] != keys[1]
    assert vendor.issued[keys[0]].expires_at < world()  # the old ones really are dead now
    counters = spool.read_state("counters.json")
    assert counters["ship_credential_renewals"] == 2
    assert counters["ship_logins"] == 1  # renewed from the cached ID token, no new login


def test_credentials_the_api_calls_expired_are_renewed_and_the_batch_resent(
    make_cfg, api, world, spool, seal
):
    """The device's clock lags (within the signing window): it thinks its keys are good."""
    seal(W1, [b"a"])
    seal(W2, [b"b"])
    device_clock = FakeClock(0.0, follow=time.time)

    def accept_then_world_moves_on(event):
        if len(api.accepted) == 0:
            world.advance(100)  # AWS time passes, the device's clock does not follow
        return api.default_handler(event)

    api.on_request = accept_then_world_moves_on
    assert ship.run_ship(make_cfg(endpoint_url=api.url), wall=device_clock) == 0
    assert api.statuses() == [200, 403, 200]
    assert api.received[1].outcome == "The security token included in the request is expired"
    assert spool.ready_batches() == [] and spool.dead_batches() == []
    assert spool.read_state("counters.json")["ship_credential_renewals"] == 2


@pytest.mark.parametrize(
    "skew", [3600.0, -3600.0], ids=["device-clock-behind", "device-clock-ahead"]
)
def test_a_skewed_device_clock_is_corrected_from_the_date_header_and_remembered(
    make_cfg, api, world, spool, seal, skew
):
    world.advance(skew)  # AWS is an hour away from the device
    first = seal(W1, [b"a"])
    cfg = make_cfg(endpoint_url=api.url)

    assert ship.run_ship(cfg) == 0
    assert api.statuses() == [403, 200]
    refusal = api.received[0].outcome
    assert ("Signature expired" if skew > 0 else "Signature not yet current") in refusal
    assert [p["batch_id"] for p in api.payloads] == [first.batch_id]
    offset = spool.read_state("clock.json")["offset_seconds"]
    assert abs(offset - skew) <= 2  # the Date header has one-second resolution
    assert spool.read_state("counters.json")["ship_clock_corrections"] == 1

    second = seal(W2, [b"b"])
    assert ship.run_ship(cfg) == 0  # the next run starts corrected: no 403 at all
    assert api.statuses() == [403, 200, 200]
    assert [p["batch_id"] for p in api.payloads] == [first.batch_id, second.batch_id]


def test_the_corrected_time_also_decides_credential_expiry(make_cfg, api, world, spool, seal):
    """With the clock 1 h behind, 90 s credentials must not look valid for 1 h."""
    world.advance(3600)
    seal(W1, [b"a"])
    cfg = make_cfg(endpoint_url=api.url)
    assert ship.run_ship(cfg) == 0
    world.advance(100)  # the credentials from the first run are now expired on AWS's clock
    seal(W2, [b"b"])
    assert ship.run_ship(cfg) == 0
    assert api.statuses() == [403, 200, 200]  # renewed up front, not after a refusal
