"""A flaky API: 503s, hangs past the client's timeout, resets, 429 with Retry-After, and
answers lost after the Lambda archived the batch; each line is still archived once.

The gateway answers a seeded random sequence of requests with those faults
(`devstack.gateway.enqueue`; `Proceed` gaps between them), in the
proportions the issue gives: about 30 % 503, 10 % hangs (longer than the
shipper's read timeout, `request_timeout`, set to 5 s here), 5 % resets,
10 % 429 with `Retry-After`, 10 % `CompleteThenReset` (the handler runs, the
answer never leaves). The device must resend what got no answer; the Lambda's
conditional write makes the resend of an archived batch a duplicate that
overwrites nothing.
"""

from __future__ import annotations

import time

from support.reliability import (
    MARKS,
    Holder,
    Streamer,
    archived_seqs,
    rng_for,
    tally_run,
    wait_until,
)

from devstack.gateway import UNAVAILABLE, CompleteThenReset, Hang, Proceed, Reset, too_many

pytestmark = MARKS
#: The shipper's read timeout for this scenario (request_timeout; the default is 60 s):
#: a hang past it costs the suite that long, twice.
READ_TIMEOUT = 5.0


def fault_script(rng, n: int) -> list:
    """`n` answers in the issue's proportions, shuffled (two hangs in twenty)."""
    counts = {"503": 0.30, "hang": 0.10, "reset": 0.05, "429": 0.10, "lost": 0.10}
    plan = [kind for kind, share in counts.items() for _ in range(round(share * n))]
    plan += ["ok"] * (n - len(plan))
    rng.shuffle(plan)
    make = {
        "503": lambda: UNAVAILABLE,
        "hang": lambda: Hang(READ_TIMEOUT + 10),
        "reset": Reset,
        "429": lambda: too_many(str(rng.choice([1, 2, 3]))),
        "lost": CompleteThenReset,
        "ok": Proceed,
    }
    return [make[kind]() for kind in plan]


def test_flaky_api_every_line_archived_once(stack, chain):
    started = time.monotonic()
    rng = rng_for("flaky")
    gw = stack.gateway
    holder = Holder(gw)
    script = fault_script(rng, 20)
    gw.enqueue(*script)
    first = len(gw.received)
    dev = chain.device(window_seconds=2, request_timeout=READ_TIMEOUT)
    pipe = chain.pipeline(dev).start()
    stream = Streamer(lambda: pipe.port, range(10_000), rate=500, chunk=50)
    stream.start()
    stream.join_ok(120)
    # Every scripted answer used (so every fault happened), then every line archived.
    wait_until(lambda: len(gw.received) - first >= len(script), 300, 0.2, "the script used up")
    wait_until(
        lambda: set(stream.sent) <= set(archived_seqs(stack, dev.device_id)),
        180,
        0.5,
        "every line in the archive",
    )
    pipe.stop()
    dev.drain()
    outcomes = [r.outcome for r in gw.received[first:]]
    statuses = [r.status for r in gw.received[first:]]
    lost_answers = outcomes.count("complete-reset")
    duplicates = sum(1 for span in holder.spans if span[3])
    result = tally_run(
        "3 flaky API",
        stream.sent,
        pipe,
        dev,
        started=started,
        notes=(
            f"{len(outcomes)} requests: {statuses.count(503)} x 503, "
            f"{outcomes.count('hang')} hangs, {outcomes.count('reset')} resets, "
            f"{statuses.count(429)} x 429, {lost_answers} answers lost after archiving "
            f"-> {duplicates} resends answered as duplicates"
        ),
    )
    result.assert_promise()
    assert outcomes.count("hang") == 2 and outcomes.count("reset") >= 1
    assert lost_answers == 2 and duplicates >= lost_answers
    assert holder.max_concurrent == 1
