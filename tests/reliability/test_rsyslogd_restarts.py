"""rsyslogd stopped (SIGTERM) and started again mid-stream, several times, and HUP'd.

The sender keeps going across the restarts (it reconnects to the new port).
What rsyslog holds in its queue at a stop is saved (disk-assisted,
saveOnShutdown) and handed over after the start, sometimes by an extra
instance that drains the disk part. Lines that were still in a TCP socket
buffer when rsyslogd closed it never reach rsyslog: plain-TCP syslog loses
them, and the count shows them as lost before rsyslog's queue (they are not
in the side file), not as the forwarder's. Anything the forwarder answered
for must be in the archive once.
"""

from __future__ import annotations

import signal
import time

from support.reliability import MARKS, Streamer, rng_for, tally_run, wait_until

pytestmark = MARKS


def test_rsyslogd_restarted_and_hupped_mid_stream(stack, chain):
    started = time.monotonic()
    rng = rng_for("rsyslogd-restarts")
    dev = chain.device(window_seconds=3)
    pipe = chain.pipeline(dev).start()
    stream = Streamer(lambda: pipe.port, range(20_000), rate=1200, chunk=50)
    stream.start()
    restarts = hups = 0
    for _ in range(4):
        time.sleep(rng.uniform(1.0, 2.5))  # the stream runs meanwhile: a random moment in it
        if rng.random() < 0.5:
            pipe.rs.proc.send_signal(signal.SIGHUP)
            hups += 1
            time.sleep(rng.uniform(0.2, 0.8))
        pipe.restart()
        restarts += 1
    pipe.rs.proc.send_signal(signal.SIGHUP)
    hups += 1
    stream.join_ok(120)
    accepted = set(pipe.accepted())
    wait_until(
        lambda: accepted <= pipe.journal_state().acked, 60, 0.2, "rsyslog to hand over its queue"
    )
    pipe.stop()
    dev.drain()
    result = tally_run(
        "6 rsyslogd SIGTERM+start x4, HUP",
        stream.sent,
        pipe,
        dev,
        started=started,
        notes=f"{restarts} restarts, {hups} HUPs, {stream.reconnects} sender reconnects",
    )
    result.assert_promise(rsyslog_loss_allowed=True)
    assert result.lost_in_queue == 0, "rsyslog lost queued lines at an orderly stop"
    assert restarts == 4 and stream.reconnects >= 4
