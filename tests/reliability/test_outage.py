"""The API down for several batching windows, then back: everything arrives by itself,
oldest batch first, and the catch-up is paced.

Three outages of two windows each while lines keep coming: the API
answering 503 to every request, the gateway stopped (connection refused),
and 503s again. Ingest
keeps sealing a batch per window meanwhile; the shipper it started backs off
and, once the API is back, sends the backlog one request at a time. Nobody
runs `ship` by hand here: the forwarder alone must deliver everything.
"""

from __future__ import annotations

import time

from support.reliability import (
    MARKS,
    Holder,
    Streamer,
    archived_seqs,
    shipper_pids,
    tally_run,
    wait_until,
)

from devstack.gateway import UNAVAILABLE

pytestmark = MARKS
WINDOW = 3.0


def test_api_down_for_several_windows_then_back_delivers_oldest_first_paced(stack, chain):
    started = time.monotonic()
    gw = stack.gateway
    holder = Holder(gw)
    first_request = len(gw.received)
    dev = chain.device(window_seconds=WINDOW)
    pipe = chain.pipeline(dev).start()
    n = 8000
    stream = Streamer(lambda: pipe.port, range(n), rate=300, chunk=30)
    stream.start()
    outages = []

    def down_for(seconds: float, how: str) -> None:
        begin = time.monotonic()
        if how == "refused":
            gw.stop()
        else:
            holder.outage = (UNAVAILABLE.status, dict(UNAVAILABLE.headers), UNAVAILABLE.body)
        time.sleep(seconds)  # the outage itself: a span of time, nothing to wait for
        if how == "refused":
            gw.start()
        else:
            holder.outage = None
        outages.append((how, begin, time.monotonic()))

    time.sleep(WINDOW)
    down_for(2 * WINDOW, "503")
    time.sleep(WINDOW)
    down_for(2 * WINDOW, "refused")
    time.sleep(WINDOW)
    down_for(2 * WINDOW, "503")
    stream.join_ok(120)
    wait_until(
        lambda: set(stream.sent) <= set(archived_seqs(stack, dev.device_id)),
        150,
        0.5,
        "every line in the archive without a manual ship",
    )
    recovered = time.monotonic()
    pipe.stop()
    dev.drain()  # only the lines of rsyslog's last moments: sealed at EOF above

    requests = gw.received[first_request:]
    accepted = [r.payload["batch_id"] for r in requests if r.outcome == "accepted" and r.payload]
    windows = [b[:16] for b in accepted]
    in_503 = [
        [s for s in holder.spans if s[2] == 503 and begin <= s[0] <= end]
        for how, begin, end in outages
        if how == "503"
    ]
    retries = dev.counters().get("ship_retries", 0)
    result = tally_run(
        "2 API down x3 (503, refused, 503)",
        stream.sent,
        pipe,
        dev,
        started=started,
        notes=(
            f"{len(accepted)} batches, {[len(x) for x in in_503]} requests in the two "
            f"{2 * WINDOW:.0f} s spells of 503, "
            f"{retries} retries, at most {holder.max_concurrent} request in flight, "
            f"caught up {recovered - outages[-1][2]:.1f} s after the last outage"
        ),
    )
    result.assert_promise()
    assert windows == sorted(windows), "a newer batch went before an older one"
    assert len(accepted) >= 6, "the outages spanned several windows: several batches"
    # Paced: one request at a time, and backoff (not a tight loop) while down.
    assert holder.max_concurrent == 1
    assert len(in_503[0]) >= 1 and all(len(x) <= 10 for x in in_503)
    assert not shipper_pids(dev.spool)
