"""Several `run` instances on one spool, as rsyslog starts them (one per action
worker, one more to drain a disk-assisted queue)."""

from __future__ import annotations

import os
from pathlib import Path

from support.ingest_helpers import (
    Ingest,
    counters,
    decode_segment,
    open_segments,
    ready_batches,
    ready_lines,
)

from omprog_forwarder.spool import Spool, encode_record


def test_each_instance_has_its_own_open_segment_and_a_new_one_leaves_the_live_one_alone(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    with Ingest(spool) as a:
        assert a.read_reply() == b"OK"
        assert a.send(b"a1") == b"OK"
        (seg_a,) = open_segments(spool)
        inode = seg_a.stat().st_ino

        with Ingest(spool) as b:
            assert b.read_reply() == b"OK", "b has adopted what it may before saying OK"
            assert open_segments(spool) == [seg_a]
            assert seg_a.stat().st_ino == inode
            assert ready_lines(spool) == [], "a's live segment was not sealed by b"
            assert b.send(b"b1") == b"OK"
            assert a.send(b"a2") == b"OK"
            segs = open_segments(spool)
            assert len(segs) == 2
            (seg_b,) = [s for s in segs if s != seg_a]
            assert decode_segment(seg_a) == [b"a1", b"a2"]
            assert decode_segment(seg_b) == [b"b1"]
            assert b.close() == (0, b"")

        assert decode_segment(seg_a) == [b"a1", b"a2"], "b's seal at EOF left a alone too"
        assert a.send(b"a3") == b"OK"
        assert a.close() == (0, b"")

    assert sorted(lines for _, lines in ready_batches(spool)) == [[b"a1", b"a2", b"a3"], [b"b1"]]
    assert open_segments(spool) == []


def test_a_segment_whose_owner_died_is_adopted_at_start_up_with_its_torn_tail_cut(
    tmp_path: Path,
) -> None:
    spool_dir = tmp_path / "spool"
    spool = Spool(str(spool_dir)).create()
    dead = Path(spool.open_dir) / "20261126T220500Z-4242-0badf00d.seg"
    dead.write_bytes(
        encode_record(b"acked before the crash") + encode_record(b"") + encode_record(b"torn")[:-3]
    )
    with Ingest(spool_dir) as ingest:
        assert ingest.read_reply() == b"OK"
        assert open_segments(spool_dir) == [], "adopted before OK"
        ((name, lines),) = ready_batches(spool_dir)
        assert lines == [b"acked before the crash", b""]
        assert name.startswith("20261126T220500Z-") and name.endswith("+2.batch")
        assert ingest.send(b"new") == b"OK"
        assert ingest.close() == (0, b"")
    assert sorted(ready_lines(spool_dir)) == [b"", b"acked before the crash", b"new"]
    assert counters(spool_dir)["adopted_segments"] == 1
    assert counters(spool_dir)["adopted_lines"] == 2


def test_an_instance_that_exits_leaves_no_open_segment_behind(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with Ingest(spool) as ingest:
        assert ingest.read_reply() == b"OK"
        assert ingest.close() == (0, b"")
    assert os.listdir(spool / "open") == []
    assert os.listdir(spool / "ready") == [], "no line, no batch"
