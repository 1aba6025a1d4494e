"""Replay after an outage: nothing lost, nothing twice, oldest first."""

from __future__ import annotations

from omprog_forwarder.ship import shipper as ship

WINDOWS = [
    "20261126T230000Z",
    "20261126T230500Z",
    "20261126T231000Z",
    "20261126T231500Z",
    "20261126T232000Z",
]


def seal_several(seal):
    batches = [seal(w, [f"{w} line {i}".encode() for i in range(3)]) for w in WINDOWS]
    return [b.batch_id for b in batches]


def test_api_down_for_a_whole_run_then_up_delivers_every_batch_once_in_order(
    make_cfg, gateway, spool, seal, fake_clock
):
    gateway.stop()  # the API is unreachable: connection refused
    sealed = seal_several(seal)
    cfg = make_cfg(ship_max_seconds="60")

    rc = ship.run_ship(cfg, clock=fake_clock, sleep=fake_clock.sleep, rand=lambda: 0.5)
    assert rc == 75
    assert [b.batch_id for b in spool.ready_batches()] == sealed
    assert "cannot reach the API" in spool.read_state("ship.json")["last_error"]["error"]

    gateway.start()  # same port: the outage is over
    assert ship.run_ship(cfg, clock=fake_clock, sleep=fake_clock.sleep) == 0
    assert [p["batch_id"] for p in gateway.payloads] == sealed
    assert gateway.statuses() == [200] * len(sealed)
    assert spool.ready_batches() == []
    logs = [line for p in gateway.payloads for line in p["logs"]]
    assert logs == [f"{w} line {i}" for w in WINDOWS for i in range(3)]
    assert spool.read_state("counters.json")["ship_batches_sent"] == len(sealed)


def test_api_comes_back_during_the_backoff_and_the_same_run_delivers_everything(
    make_cfg, gateway, spool, seal, fake_clock
):
    gateway.stop()
    sealed = seal_several(seal)

    def back_up_after_third_wait(n: int) -> None:
        if n == 3:
            gateway.start()

    fake_clock.on_sleep = back_up_after_third_wait
    rc = ship.run_ship(make_cfg(), clock=fake_clock, sleep=fake_clock.sleep, rand=lambda: 0.5)
    assert rc == 0
    assert fake_clock.sleeps == [0.5, 1.0, 2.0]
    assert [p["batch_id"] for p in gateway.payloads] == sealed
    assert spool.ready_batches() == []


def test_batches_sealed_while_shipping_are_picked_up_before_exit(make_cfg, gateway, spool, seal):
    first = seal(WINDOWS[0], [b"a"])
    later = []

    def seal_one_more(event):
        if not later:  # ingest seals another batch while the shipper runs
            later.append(seal(WINDOWS[1], [b"b"]))
        return gateway.default_handler(event)

    gateway.on_request = seal_one_more
    assert ship.run_ship(make_cfg()) == 0
    assert [p["batch_id"] for p in gateway.payloads] == [first.batch_id, later[0].batch_id]
    assert spool.ready_batches() == []
