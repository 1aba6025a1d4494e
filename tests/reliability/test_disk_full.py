"""Disk full: the spool reaches its cap, and (separately) a small file system fills up.

Either way ingest refuses lines with an error status, so rsyslog holds them
in its own queue and retries; nothing in the spool is half-written; once the
API is back and the shipper has made room, everything arrives exactly once.
The API is down while the spool fills (so nothing drains it), then back.

The small file system is a tmpfs with `size=` mounted on the spool (root
only: without the right to mount, that half is skipped and says why).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator

import pytest
from support.reliability import MARKS, Streamer, archived_seqs, shipper_pids, tally_run, wait_until

from omprog_forwarder.spool import decode_records

pytestmark = MARKS
MIB = 1024 * 1024


@contextlib.contextmanager
def tmpfs(path: str, size: int) -> Iterator[None]:
    os.makedirs(path, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", path],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        reason = f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode})"
        print(f"[reliability] 4 small file system: SKIPPED: {reason}", flush=True)
        pytest.skip(reason)
    try:
        yield
    finally:
        if subprocess.run(["umount", path], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", path], capture_output=True)


def fill_then_free(
    stack, chain, dev, scenario: str, full_reason: str, started: float, outlast: bool = False
):
    """API down; stream until ingest refuses for a while; check the spool; API back.

    `outlast`: the outage lasts until every shipper has given up (its time
    budget spent), and a while longer, before the API comes back.
    """
    gw = stack.gateway
    gw.stop()
    pipe = chain.pipeline(dev).start()
    stream = Streamer(lambda: pipe.port, range(20_000), rate=4000, chunk=200)
    stream.start()
    wait_until(lambda: pipe.journal_state().refused >= 5, 60, 0.2, "ingest to refuse lines")
    stream.join_ok(60)
    if outlast:
        wait_until(lambda: not shipper_pids(dev.spool), 60, 0.2, "the shippers to give up")
        time.sleep(3)  # the rest of the outage, with nobody shipping
    held = len(set(stream.sent) - pipe.journal_state().acked)
    damaged_when_full = dev.half_written()
    open_segments = list(dev.folder("open").iterdir())
    sealed = sum(p.stat().st_size for p in dev.batches())
    usage_when_full = sealed + sum(decode_records(p.read_bytes())[1] for p in open_segments)
    reserved = sealed + sum(p.stat().st_size for p in open_segments)
    gw.start()
    wait_until(
        lambda: set(stream.sent) <= set(archived_seqs(stack, dev.device_id)),
        240,
        0.5,
        "every line in the archive once there is room again",
    )
    pipe.stop()
    dev.drain()
    refusals = pipe.log_count(full_reason)
    result = tally_run(
        scenario,
        stream.sent,
        pipe,
        dev,
        started=started,
        notes=(
            f"{pipe.journal_state().refused} refusals ({refusals} logged '{full_reason}'), "
            f"{held} lines held by rsyslog when full, spool then {usage_when_full} bytes "
            f"of lines in {reserved} bytes of files"
        ),
    )
    result.assert_promise()
    assert held > 0, "rsyslog never had to hold anything: the spool was not full"
    assert damaged_when_full == [] and dev.half_written() == []
    return usage_when_full


def test_spool_at_its_cap_rsyslog_holds_and_everything_arrives(stack, chain):
    started = time.monotonic()
    cap = 3 * MIB
    dev = chain.device(window_seconds=2, max_spool_bytes=cap)
    usage = fill_then_free(stack, chain, dev, "4 spool cap 3 MiB", "spool full", started)
    assert usage <= cap  # the lines; the open segment's reserved tail can reach past it


def test_spool_full_through_an_outage_longer_than_the_shippers_budget(stack, chain):
    """Every shipper gave up (ship_max_seconds spent) while every line was refused: no
    seal, so no new shipper from a seal. Ingest itself must ask for one while it
    refuses, or nothing is ever sent again (the bug this scenario found)."""
    started = time.monotonic()
    dev = chain.device(window_seconds=2, max_spool_bytes=3 * MIB, ship_max_seconds=4)
    scenario = "4 spool cap, outage past the shipper's budget"
    fill_then_free(stack, chain, dev, scenario, "spool full", started, outlast=True)


def test_small_file_system_fills_rsyslog_holds_and_everything_arrives(stack, chain):
    started = time.monotonic()
    dev = chain.device(window_seconds=2)
    with tmpfs(dev.spool, 4 * MIB):
        try:
            fill_then_free(stack, chain, dev, "4 tmpfs of 4 MiB full", "disk full", started)
        finally:
            chain.close_pipelines()
