"""A full spool asks for a shipper: refusing lines must not wait for a seal that never comes.

Found by the reliability suite (tests/reliability/test_disk_full.py): with the
spool at its cap through an outage longer than the shipper's time budget, the
shipper gave up, every line was refused (so nothing was sealed, so nothing
started a new shipper), and when the API came back nothing was ever sent
again: rsyslog held the lines until its own queue would overflow.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import sys
from pathlib import Path

from support.ingest_helpers import make_rig, wait_for

from omprog_forwarder.ingest.batcher import MAKE_ROOM_SECONDS
from omprog_forwarder.spool import Segment

MAX_SPOOL = 2 * 1024 * 1024


def fill_ready(rig) -> None:
    """A sealed batch bigger than max_spool_bytes, left by a shipper that gave up."""
    rig.spool.write_batch("20261126T230500Z-00000000000000aa", [b"z" * 1023] * 2100)


def count_starts(rig) -> list[float]:
    starts: list[float] = []
    rig.batcher.launcher.start = lambda: starts.append(rig.clock())
    return starts


def test_refusing_lines_because_the_spool_is_full_starts_a_shipper_now_and_then(tmp_path: Path):
    rig = make_rig(tmp_path / "spool", max_spool_bytes=MAX_SPOOL)
    starts = count_starts(rig)
    fill_ready(rig)
    assert rig.batcher.on_message(b"held by rsyslog", 0).startswith(b"Error: spool full")
    assert starts == [1000.0], "a shipper for ready/, although nothing was sealed"
    for _ in range(int(MAKE_ROOM_SECONDS) - 1):  # rsyslog retries every second
        rig.advance(1)
        assert rig.batcher.on_message(b"held by rsyslog", 0).startswith(b"Error: spool full")
    assert len(starts) == 1, "not a shipper for every retry"
    rig.advance(1)
    rig.batcher.on_message(b"held by rsyslog", 0)
    assert len(starts) == 2


def test_a_spool_full_of_dead_batches_starts_no_shipper(tmp_path: Path):
    """Shipping cannot make room from dead/ (the operator must replay or remove them)."""
    rig = make_rig(tmp_path / "spool", max_spool_bytes=MAX_SPOOL)
    starts = count_starts(rig)
    fill_ready(rig)
    (batch,) = rig.spool.ready_batches()
    rig.spool.move_to_dead(batch, {"reason": "rejected"})
    assert rig.batcher.on_message(b"held", 0).startswith(b"Error: spool full")
    assert starts == []


def test_refusing_lines_because_the_disk_is_full_starts_a_shipper(tmp_path: Path, monkeypatch):
    rig = make_rig(tmp_path / "spool")
    starts = count_starts(rig)
    rig.spool.write_batch("20261126T230500Z-00000000000000ab", [b"waiting"])

    def no_space(self, record):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Segment, "append", no_space)
    assert rig.batcher.on_message(b"held", 0).startswith(b"Error: spool disk full")
    assert len(starts) == 1


def test_the_shipper_started_for_a_full_spool_is_a_real_detached_one(tmp_path: Path):
    """Through the real launcher: the ship_command runs while every line is refused."""
    marker = tmp_path / "shipper-ran"
    command = shlex.join(
        [sys.executable, "-c", f"import os; open({str(marker)!r}, 'w').write(str(os.getpid()))"]
    )
    rig = make_rig(tmp_path / "spool", max_spool_bytes=MAX_SPOOL, ship_command=command)
    fill_ready(rig)
    assert rig.batcher.on_message(b"held", 0).startswith(b"Error: spool full")
    pid = int(wait_for(lambda: marker.exists() and marker.read_text(), what="the shipper"))
    os.waitpid(pid, 0)  # our child (in-process batcher): reap it
    assert rig.batcher.counters["shipper_started"] == 1
    rig.batcher.flush_counters()
    assert (
        json.loads(Path(rig.spool.state_path("counters.json")).read_text())["refused_spool_full"]
        == 1
    )
