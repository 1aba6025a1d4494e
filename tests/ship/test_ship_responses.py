"""How the shipper acts on each kind of answer, and the exact retry schedule."""

from __future__ import annotations

import base64
import email.utils
import json
import os
import time

import pytest
from support.moto_cognito import MOTO_ACCESS_KEY, MOTO_CALLER

from devstack.gateway import (
    BAD_SIGNATURE,
    EXPIRED_TOKEN,
    SERVER_ERROR,
    TOO_LARGE,
    UNAVAILABLE,
    Gateway,
    Hang,
    Reply,
    Reset,
    reply_json,
    too_many,
)
from omprog_forwarder.ship import shipper as ship
from omprog_forwarder.ship.transport import Transport

W = "20261126T231000Z"


def counters(spool):
    return spool.read_state("counters.json")


# ---------------------------------------------------------------- transient


def test_exact_retry_schedule_full_jitter_and_retry_after(
    make_cfg, gateway, spool, seal, fake_clock
):
    batch = seal(W, [b"one", b"two"])
    gateway.enqueue(SERVER_ERROR, UNAVAILABLE, Reset(), too_many("7"))
    rc = ship.run_ship(make_cfg(), clock=fake_clock, sleep=fake_clock.sleep, rand=lambda: 0.5)
    assert rc == 0
    # rand()=0.5 of min(60, 2**(n-1)) s: 0.5, 1, 2; then Retry-After 7 beats 0.5*8=4.
    assert fake_clock.sleeps == [0.5, 1.0, 2.0, 7.0]
    assert gateway.statuses() == [500, 503, 0, 429, 200]
    assert [p["batch_id"] for p in gateway.payloads] == [batch.batch_id]
    assert counters(spool)["ship_retries"] == 4
    assert spool.ready_batches() == []


def test_jitter_never_undercuts_retry_after_and_grows_to_the_cap(
    make_cfg, gateway, seal, fake_clock
):
    seal(W, [b"x"])
    gateway.enqueue(*([UNAVAILABLE] * 9), too_many("3"))
    rc = ship.run_ship(
        make_cfg(ship_max_seconds="10m"), clock=fake_clock, sleep=fake_clock.sleep, rand=lambda: 1.0
    )
    assert rc == 0
    assert fake_clock.sleeps == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]


def test_retry_after_as_http_date_is_measured_against_the_response_date(
    make_cfg, spool, seal, fake_clock
):
    t0 = float(int(time.time()))
    with Gateway({MOTO_ACCESS_KEY: MOTO_CALLER}, clock=lambda: t0) as gw:
        gw.enqueue(too_many(email.utils.formatdate(t0 + 12, usegmt=True)))
        seal(W, [b"x"])
        rc = ship.run_ship(
            make_cfg(endpoint_url=gw.url),
            clock=fake_clock,
            sleep=fake_clock.sleep,
            rand=lambda: 0.0,
        )
        assert rc == 0
        assert fake_clock.sleeps == [12.0]
        assert gw.statuses() == [429, 200]


def test_time_budget_stops_the_retries_and_keeps_every_batch(
    make_cfg, gateway, spool, seal, fake_clock
):
    first = seal(W, [b"a"])
    second = seal("20261126T231500Z", [b"b"])
    gateway.enqueue(*([UNAVAILABLE] * 20))
    rc = ship.run_ship(
        make_cfg(ship_max_seconds="10"), clock=fake_clock, sleep=fake_clock.sleep, rand=lambda: 0.5
    )
    assert rc == ship.EXIT_BUDGET == 75
    # 0.5+1+2+4 = 7.5 s slept; the next wait (8 s) would end past the 10 s budget.
    assert fake_clock.sleeps == [0.5, 1.0, 2.0, 4.0]
    assert gateway.statuses() == [503] * 5
    assert [b.batch_id for b in spool.ready_batches()] == [first.batch_id, second.batch_id]
    last_error = spool.read_state("ship.json")["last_error"]
    assert last_error["batch_id"] == first.batch_id and "503" in last_error["error"]


def test_retry_after_longer_than_the_budget_stops_at_once(
    make_cfg, gateway, spool, seal, fake_clock
):
    seal(W, [b"a"])
    gateway.enqueue(too_many("3600"))
    rc = ship.run_ship(make_cfg(), clock=fake_clock, sleep=fake_clock.sleep)
    assert rc == 75
    assert fake_clock.sleeps == []
    assert len(spool.ready_batches()) == 1


def test_a_hanging_api_times_out_and_is_retried(make_cfg, gateway, spool, seal, fake_clock):
    seal(W, [b"a"])
    gateway.enqueue(Hang(30))
    cfg = make_cfg()
    transport = Transport(cfg.endpoint_url, cfg.region, timeout=(2.0, 0.5))
    started = time.monotonic()
    rc = ship.run_ship(
        cfg, transport=transport, clock=fake_clock, sleep=fake_clock.sleep, rand=lambda: 0.5
    )
    assert rc == 0
    assert time.monotonic() - started < 10
    assert gateway.statuses() == [0, 200]
    assert fake_clock.sleeps == [0.5]
    assert spool.ready_batches() == []


@pytest.mark.parametrize("status", [301, 302, 408, 502, 504, 599])
def test_other_transient_statuses_keep_the_batch_and_retry(
    make_cfg, gateway, spool, seal, fake_clock, status
):
    seal(W, [b"a"])
    gateway.enqueue(Reply(status, b"", {"Location": "https://elsewhere.example/"}))
    assert (
        ship.run_ship(make_cfg(), clock=fake_clock, sleep=fake_clock.sleep, rand=lambda: 0.5) == 0
    )
    assert gateway.statuses() == [status, 200]
    assert os.listdir(spool.dead_dir) == []


# ---------------------------------------------------------------- dead/


@pytest.mark.parametrize("status", [400, 404, 405, 409, 415, 422])
def test_other_4xx_moves_the_batch_to_dead_with_a_why_file(make_cfg, gateway, spool, seal, status):
    rejected = seal(W, [b"a", b"b"])
    fine = seal("20261126T231500Z", [b"c"])
    gateway.enqueue(reply_json(status, {"message": f"no thanks {status}"}))
    assert ship.run_ship(make_cfg()) == 0
    (dead,) = spool.dead_batches()
    assert dead.batch_id == rejected.batch_id
    with open(os.path.join(spool.dead_dir, f"{rejected.batch_id}+2.why")) as fh:
        why = json.load(fh)
    assert why["status"] == status
    assert f"no thanks {status}" in why["body"]
    assert why["reason"] == "rejected"
    assert why["time"].endswith("+00:00")
    assert [p["batch_id"] for p in gateway.payloads] == [fine.batch_id]
    c = counters(spool)
    assert (c["ship_dead_batches"], c["ship_dead_lines"], c["ship_dead_rejected"]) == (1, 2, 1)
    assert "moved to dead/" in spool.read_state("ship.json")["last_error"]["error"]


def test_a_damaged_batch_goes_to_dead_and_the_rest_ships(make_cfg, gateway, spool, seal):
    damaged = seal(W, [b"a", b"b"])
    with open(damaged.path, "r+b") as fh:
        fh.seek(10)
        fh.write(b"X")
    fine = seal("20261126T231500Z", [b"c"])
    assert ship.run_ship(make_cfg()) == 0
    assert [b.batch_id for b in spool.dead_batches()] == [damaged.batch_id]
    assert [p["batch_id"] for p in gateway.payloads] == [fine.batch_id]
    assert counters(spool)["ship_dead_damaged"] == 1


# ---------------------------------------------------------------- 413


def noise_line(n: int) -> bytes:
    """A line that does not compress (so body size follows line count)."""
    return base64.b64encode(os.urandom(n))[:n]


def test_413_splits_recursively_and_every_line_arrives_once_in_order(make_cfg, spool, seal):
    lines = [noise_line(2000) for _ in range(16)]
    with Gateway({MOTO_ACCESS_KEY: MOTO_CALLER}, max_body_bytes=7000) as gw:
        parent = seal(W, lines)
        assert ship.run_ship(make_cfg(endpoint_url=gw.url)) == 0
        ids = [p["batch_id"] for p in gw.payloads]
        assert ids == [f"{parent.batch_id}.{s}" for s in ("1.1", "1.2", "2.1", "2.2")]
        delivered = [line for p in gw.payloads for line in p["logs"]]
        assert delivered == [x.decode() for x in lines]
        assert all(p["timestamp"] == "2026-11-26T23:10:00+00:00" for p in gw.payloads)
        assert gw.statuses() == [413, 413, 200, 200, 413, 200, 200]
    assert spool.ready_batches() == [] and spool.dead_batches() == []
    assert counters(spool)["ship_split_batches"] == 3


def test_413_on_a_single_line_sends_the_rest_and_dead_letters_only_that_line(make_cfg, spool, seal):
    small, huge = b"small line", noise_line(9000)
    with Gateway({MOTO_ACCESS_KEY: MOTO_CALLER}, max_body_bytes=4000) as gw:
        parent = seal(W, [small, huge])
        assert ship.run_ship(make_cfg(endpoint_url=gw.url)) == 0
        assert [(p["batch_id"], p["logs"]) for p in gw.payloads] == [
            (f"{parent.batch_id}.1", ["small line"])
        ]
    (dead,) = spool.dead_batches()
    assert dead.batch_id == f"{parent.batch_id}.2" and dead.read_lines() == [huge]
    with open(dead.path[: -len(".batch")] + ".why") as fh:
        why = json.load(fh)
    assert why["status"] == 413 and why["reason"] == "too_large"
    c = counters(spool)
    assert (c["ship_dead_too_large"], c["ship_dead_lines"], c["ship_split_batches"]) == (1, 1, 1)


def test_split_after_a_crash_between_halves_and_parent_resends_the_same_ids(
    make_cfg, gateway, spool, seal
):
    """A crash left the parent and its halves in ready/: each id still arrives once."""
    parent = seal(W, [b"a", b"b", b"c"])
    spool.write_batch(f"{parent.batch_id}.1", [b"a"])
    spool.write_batch(f"{parent.batch_id}.2", [b"b", b"c"])
    gateway.enqueue(TOO_LARGE)
    assert ship.run_ship(make_cfg()) == 0
    ids = [p["batch_id"] for p in gateway.payloads]
    assert ids == [f"{parent.batch_id}.1", f"{parent.batch_id}.2"]
    assert [line for p in gateway.payloads for line in p["logs"]] == ["a", "b", "c"]
    assert spool.ready_batches() == []


# ---------------------------------------------------------------- 401 / 403


@pytest.mark.parametrize(
    "refusal",
    [EXPIRED_TOKEN, BAD_SIGNATURE, reply_json(401, {"message": "Unauthorized"})],
    ids=["403-expired-token", "403-signature", "401"],
)
def test_refused_credentials_are_renewed_once_and_the_batch_resent(
    make_cfg, gateway, spool, seal, refusal
):
    seal(W, [b"a"])
    gateway.enqueue(refusal)
    assert ship.run_ship(make_cfg()) == 0
    assert gateway.statuses() == [refusal.status, 200]
    c = counters(spool)
    assert c["ship_credential_renewals"] == 2  # the first, and the one forced by the refusal
    assert c["ship_logins"] == 1  # the cached ID token was still good
    assert spool.ready_batches() == [] and spool.dead_batches() == []


def test_still_refused_after_renewal_stops_the_run_and_keeps_everything(
    make_cfg, gateway, spool, seal
):
    first = seal(W, [b"a"])
    second = seal("20261126T231500Z", [b"b"])
    gateway.enqueue(BAD_SIGNATURE, BAD_SIGNATURE, BAD_SIGNATURE)
    assert ship.run_ship(make_cfg()) == ship.EXIT_AUTH == 77
    assert gateway.statuses() == [403, 403]  # renewed once, then stopped: no loop
    assert [b.batch_id for b in spool.ready_batches()] == [first.batch_id, second.batch_id]
    assert spool.dead_batches() == []
    assert "after renewing" in spool.read_state("ship.json")["last_error"]["error"]


@pytest.mark.parametrize(
    "headers,message",
    [
        pytest.param({"Retry-After": "\u00b2"}, "", id="Retry-After: superscript two"),
        pytest.param(
            {}, "Signature expired: 20261399T000000Z is now earlier than", id="impossible date"
        ),
    ],
)
def test_odd_server_headers_never_crash_the_run(headers, message) -> None:
    from omprog_forwarder.ship import transport

    assert transport.parse_retry_after(headers, 0.0) is None
    assert transport.server_time_from(headers, message) is None
