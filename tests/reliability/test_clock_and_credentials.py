"""Credentials that expire every few seconds, and the device clock jumping forward and back.

The stack's IdentityBroker hands out credentials valid for 12 s (the gateway
refuses them after that: `MSG_EXPIRED_TOKEN`), and at each clock jump every
credential issued so far expires at once, sooner than the device planned.
The forwarder and the shippers it starts run under libfaketime, whose
offset the test changes while lines flow: +20 min (signatures look 20 min
in the future: the gateway answers "Signature not yet current"), -15 min
(behind: "Signature expired"), then back to the right time. The shipper
learns the offset from the API's answer, renews refused credentials, and
sends every batch once.

Only the wall clock jumps (`FAKETIME_DONT_FAKE_MONOTONIC=1`), as an NTP step
does; the monotonic clock the forwarder times its windows with does not.
(libfaketime 0.9.10 then makes Python's `time.sleep` fail with EINVAL, so a
shipper that had to back off would exit 1 and be started again at the next
seal; nothing here asks it to back off, and the count of such failures is
printed.) rsyslogd itself keeps the true time.
"""

from __future__ import annotations

import glob
import time

import pytest
from support.reliability import MARKS, Streamer, archived_seqs, tally_run, wait_until

from devstack.gateway import MSG_EXPIRED_TOKEN

pytestmark = MARKS
STACK_OPTIONS = {"credentials_lifetime": 12.0}
LIBFAKETIME = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))


@pytest.mark.skipif(not LIBFAKETIME, reason="libfaketime is missing: apt-get install faketime")
def test_credentials_expire_and_the_clock_jumps_forward_and_back(stack, chain, tmp_path):
    started = time.monotonic()
    offset_file = tmp_path / "faketime"
    offset_file.write_text("+0\n")
    wrapper = [
        "/usr/bin/env",
        f"LD_PRELOAD={LIBFAKETIME[0]}",
        f"FAKETIME_TIMESTAMP_FILE={offset_file}",
        "FAKETIME_DONT_FAKE_MONOTONIC=1",
        "FAKETIME_DONT_RESET=1",
        "FAKETIME_CACHE_DURATION=1",
    ]
    gw = stack.gateway
    first = len(gw.received)
    dev = chain.device(window_seconds=2)
    pipe = chain.pipeline(dev, wrapper=wrapper).start()
    stream = Streamer(lambda: pipe.port, range(8000), rate=200, chunk=20)
    stream.start()
    for offset in ("+1200", "-900", "+0"):
        time.sleep(10)  # a phase of the run: credentials expire, windows seal, batches ship
        offset_file.write_text(offset + "\n")
        for caller in list(stack.broker.issued.values()):
            caller.expires_at = min(caller.expires_at or 0, stack.clock())
    stream.join_ok(60)
    wait_until(
        lambda: set(stream.sent) <= set(archived_seqs(stack, dev.device_id)),
        120,
        0.5,
        "every line in the archive",
    )
    pipe.stop()
    dev.drain()
    answers = [r.outcome for r in gw.received[first:]]
    expired = answers.count(MSG_EXPIRED_TOKEN)
    ahead = sum(a.startswith("Signature not yet current") for a in answers)
    behind = sum(a.startswith("Signature expired") for a in answers)
    counters = dev.counters()
    ship_log = (dev.folder("state") / "ship.log").read_text(errors="replace")
    result = tally_run(
        "7 credentials 12 s, clock +20 min / -15 min / back",
        stream.sent,
        pipe,
        dev,
        started=started,
        notes=(
            f"{answers.count('accepted')} accepted, {expired} expired-token 403s, "
            f"{ahead} ahead / {behind} behind skew 403s, "
            f"{counters.get('ship_clock_corrections', 0)} clock corrections, "
            f"{counters.get('ship_credential_renewals', 0)} credential renewals, "
            f"{ship_log.count('the shipper failed')} shipper failures"
        ),
    )
    result.assert_promise()
    assert ahead >= 1 and behind >= 1, "the clock jumps never reached the API"
    assert expired >= 1, "no credential was refused as expired"
    assert counters.get("ship_clock_corrections", 0) >= 2
    assert counters.get("ship_credential_renewals", 0) >= 3
