"""Several forwarder instances on one spool while the shipper runs.

`queue.workerThreads="2"`: rsyslog starts a second worker, and with it a
second forwarder, once the action queue holds half its size; after a restart
one more instance drains the disk part of the disk-assisted queue. Each
instance has its own segment in open/; the shipper (started by whichever
seals) sends them all. The first start is slowed down (a wrapper that sleeps
before it starts the forwarder) so that the backlog builds up.
"""

from __future__ import annotations

import time

from support.reliability import (
    MARKS,
    PidWatch,
    Streamer,
    send_all,
    tally_run,
    wait_until,
)

pytestmark = MARKS


def test_two_workers_and_a_disk_queue_drain_on_one_spool(stack, chain, tmp_path):
    started = time.monotonic()
    slow = tmp_path / "slow-start.sh"
    slow.write_text('#!/bin/sh\nsleep 3\nexec "$@"\n')
    slow.chmod(0o755)
    dev = chain.device(window_seconds=3)
    pipe = chain.pipeline(dev, overrides={"queue.workerThreads": "2"}, wrapper=[str(slow)])
    watch = PidWatch(dev.spool)
    watch.start()
    try:
        pipe.start()
        sent = send_all(pipe.port, range(90_000))
        # Both workers' forwarders up, then a stop with most of the backlog queued.
        wait_until(lambda: watch.max_at_once >= 2, 30, 0.05, "a second forwarder")
        wait_until(lambda: len(pipe.journal_state().acked) >= 20_000, 60, 0.1, "some lines in")
        pipe.stop()
        queued = sorted(p.name for p in (pipe.workdir / "queue").iterdir())
        pipe.set_wrapper(())
        pipe.start()
        stream = Streamer(lambda: pipe.port, range(90_000, 110_000), rate=4000, chunk=200)
        stream.start()
        stream.join_ok(60)
        sent += stream.sent
        wait_until(lambda: set(sent) <= pipe.journal_state().acked, 120, 0.5, "all answered")
        pipe.stop()
    finally:
        watch.stop()
    dev.drain()
    result = tally_run(
        "8 workerThreads=2 + disk-queue drain",
        sent,
        pipe,
        dev,
        started=started,
        notes=(
            f"{len(watch.seen)} forwarder processes, up to {watch.max_at_once} at once, "
            f"{len(queued)} queue files at the stop, "
            f"{pipe.log_count('sealed ')} seals, {dev.counters().get('shipper_started', 0)} "
            "shippers started"
        ),
    )
    result.assert_promise()
    assert watch.max_at_once >= 2 and queued
