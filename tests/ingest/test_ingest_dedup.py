"""Dedup by rsyslog's uuid: a resent line is ACKed but stored once.

The uuid is the last field of the project's JSON template. A line whose uuid
ingest already holds (its own open segment, another instance's open segment,
a batch in ready/ from an earlier process) is answered like any other line,
not stored again, and counted as `duplicate_lines`. Text that only looks like
a uuid field (in `msg`, or in a line that is not the JSON template) never
causes a drop.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.clock import FakeClock
from support.ingest_helpers import (
    WINDOW_START,
    LoopDrivenBatcher,
    counters,
    json_line,
    make_rig,
    ready_lines,
    run_once,
    uuid_hex,
)

from omprog_forwarder import config
from omprog_forwarder.ingest import protocol
from omprog_forwarder.ingest.batcher import line_severity
from omprog_forwarder.ingest.dedup import (
    RecentSet,
    holds_uuid,
    line_uuid,
    note_shipped,
    read_shipped,
)
from omprog_forwarder.ingest.launcher import ShipperLauncher
from omprog_forwarder.spool import SHIPPED_KEYS, Spool, encode_record

U = "00D86F880BD84D4E8F21B1497FAB6951"
LINE_UUID = U.encode()
LINE = json_line("hello", uuid=U)


def test_a_resent_line_already_in_the_own_open_segment_is_acked_not_stored(tmp_path: Path) -> None:
    rig = make_rig(tmp_path / "spool")
    assert rig.batcher.on_message(LINE, 0) == protocol.OK
    assert rig.batcher.on_message(LINE, 0) == protocol.OK
    assert rig.stored() == [LINE]
    assert rig.batcher.counters["duplicate_lines"] == 1


def test_a_resent_line_already_sealed_by_this_process_is_acked_not_stored(tmp_path: Path) -> None:
    rig = make_rig(tmp_path / "spool")
    rig.batcher.on_message(LINE, 0)
    rig.batcher.seal("test")
    assert rig.batcher.on_message(LINE, 0) == protocol.OK
    rig.batcher.on_eof()
    assert ready_lines(tmp_path / "spool") == [LINE]
    assert counters(tmp_path / "spool")["duplicate_lines"] == 1


def test_a_line_in_another_live_instances_open_segment_is_a_duplicate(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool")).create()
    live = spool.new_segment("20261126T231000Z")  # flock held: the other instance lives
    live.append(encode_record(LINE))
    rig = make_rig(tmp_path / "spool", spool=spool)
    assert rig.batcher.on_message(LINE, 0) == protocol.OK
    rig.batcher.on_eof()
    assert rig.batches() == []
    assert spool.read_state("counters.json")["duplicate_lines"] == 1
    live.close()


def test_a_line_in_a_dead_instances_segment_is_a_duplicate_after_adoption(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool")).create()
    (Path(spool.open_dir) / "20261126T230500Z-4242-0badf00d.seg").write_bytes(encode_record(LINE))
    rig = make_rig(tmp_path / "spool", spool=spool)
    assert rig.batcher.on_message(LINE, 0) == protocol.OK
    rig.batcher.on_eof()
    assert ready_lines(tmp_path / "spool") == [LINE]


class ShipsAtOnce(ShipperLauncher):
    """A shipper that sends and deletes everything in ready/ the moment it is started."""

    def start(self) -> None:
        for batch in self.spool.ready_batches():
            self.spool.delete(batch)


def test_a_dead_instances_lines_stay_known_when_a_shipper_deletes_them_at_once(
    tmp_path: Path,
) -> None:
    """Found end to end (tests/reliability, kill -9 under load): the adopted batch was
    shipped and deleted before the new instance had read it into its index, and the
    in-flight batch rsyslog resent was archived twice."""
    spool = Spool(str(tmp_path / "spool")).create()
    (Path(spool.open_dir) / "20261126T230500Z-4242-0badf00d.seg").write_bytes(encode_record(LINE))
    cfg = config.load(None, {"spool_dir": spool.root}, environ={})
    batcher = LoopDrivenBatcher(
        cfg, spool, ShipsAtOnce(cfg, spool), clock=FakeClock(1000.0), wall=FakeClock(WINDOW_START)
    )
    assert spool.ready_batches() == [], "the adopted batch was shipped at once"
    assert batcher.on_message(LINE, 0) == protocol.OK
    batcher.on_eof()
    assert ready_lines(tmp_path / "spool") == [], "the resent line was not stored again"
    assert counters(tmp_path / "spool")["duplicate_lines"] == 1


def test_a_dead_instances_lines_are_the_newest_in_a_full_index(tmp_path: Path) -> None:
    """The adopted uuids go in after the spool's older ones, so a full index keeps them."""
    spool = Spool(str(tmp_path / "spool")).create()
    older = [json_line("old", uuid=uuid_hex(1000 + n)) for n in range(50)]
    spool.write_batch("20261126T230000Z-00000000000000a1", older)
    (Path(spool.open_dir) / "20261126T230500Z-4242-0badf00d.seg").write_bytes(encode_record(LINE))
    rig = make_rig(tmp_path / "spool", spool=spool, dedup_window="10")
    assert rig.batcher.on_message(LINE, 0) == protocol.OK
    assert rig.batcher.counters["duplicate_lines"] == 1


def test_a_line_sealed_in_ready_by_an_earlier_process_is_a_duplicate(tmp_path: Path) -> None:
    """Two real `run` processes, one after the other (rsyslog restarted us after a lost ACK)."""
    spool = tmp_path / "spool"
    other = json_line("other", uuid=uuid_hex(1))
    first = run_once(spool, LINE + b"\n")
    assert first.replies == [b"OK", b"OK"]
    second = run_once(spool, LINE + b"\n" + other + b"\n")
    assert second.returncode == 0
    assert second.replies == [b"OK", b"OK", b"OK"]
    assert sorted(ready_lines(spool)) == sorted([LINE, other])
    assert counters(spool)["duplicate_lines"] == 1
    assert "resent line" in second.stderr


def test_a_duplicate_inside_a_transaction_is_answered_defer_commit(tmp_path: Path) -> None:
    rig = make_rig(tmp_path / "spool")
    rig.batcher.on_message(LINE, 0)
    rig.batcher.on_begin()
    assert rig.batcher.on_message(LINE, 0) == protocol.DEFER_COMMIT
    assert rig.batcher.on_commit() == protocol.OK
    assert rig.stored() == [LINE]


def _store_in_one_transaction(rig, lines: list) -> None:
    rig.batcher.on_begin()
    for line in lines:
        assert rig.batcher.on_message(line, 0) == protocol.DEFER_COMMIT
    assert rig.batcher.on_commit() == protocol.OK


# rsyslog 8.2302 puts the first line of a batch back at the tail of its queue when
# the program died between transactions (docs/rsyslog.md), so the copy comes as
# many lines later as the queue held: 37 000 in one reliability run.
FAR = 40_000


def test_a_line_rsyslog_hands_again_40000_lines_later_is_dropped(tmp_path: Path) -> None:
    rig = make_rig(tmp_path / "spool", max_batch_bytes="64MiB")
    lines = [json_line("x", uuid=uuid_hex(0xC0FFEE00000 + n)) for n in range(FAR)]
    _store_in_one_transaction(rig, lines)
    assert rig.batcher.on_message(lines[0], 0) == protocol.OK
    assert rig.batcher.counters["duplicate_lines"] == 1
    assert len(rig.stored()) == FAR


def test_a_copy_older_than_the_window_is_stored_again(tmp_path: Path) -> None:
    """The documented limit: the index is a window, not a record of every line."""
    rig = make_rig(tmp_path / "spool", max_batch_bytes="64MiB", dedup_window="1000")
    lines = [json_line("x", uuid=uuid_hex(0xC0FFEE00000 + n)) for n in range(2001)]
    _store_in_one_transaction(rig, lines)
    assert rig.batcher.on_message(lines[0], 0) == protocol.OK
    assert rig.batcher.counters["duplicate_lines"] == 0
    assert len(rig.stored()) == 2002


def test_a_line_40000_lines_back_in_the_spool_is_a_duplicate_after_a_restart(
    tmp_path: Path,
) -> None:
    spool = Spool(str(tmp_path / "spool")).create()
    lines = [json_line("x", uuid=uuid_hex(0xC0FFEE00000 + n)) for n in range(FAR)]
    for i in range(0, FAR, 5000):
        spool.write_batch(f"20261126T230000Z-{i:016x}", lines[i : i + 5000])
    rig = make_rig(tmp_path / "spool", spool=spool)
    assert len(rig.batcher.recent) == FAR
    assert rig.batcher.on_message(lines[0], 0) == protocol.OK
    assert rig.batcher.counters["duplicate_lines"] == 1


def test_a_refused_line_is_not_remembered_so_its_retry_is_stored(tmp_path: Path) -> None:
    rig = make_rig(tmp_path / "spool", max_spool_bytes=1024 * 1024)
    rig.spool.write_batch("20261126T230500Z-00000000000000aa", [b"z" * 1023] * 1100)
    assert rig.batcher.on_message(LINE, 0).startswith(b"Error: spool full")
    for batch in rig.spool.ready_batches():
        rig.spool.delete(batch)
    rig.advance(1)
    assert rig.batcher.on_message(LINE, 0) == protocol.OK
    assert rig.stored() == [LINE]


NOT_A_DROP = [
    pytest.param(
        json_line(f'text "uuid":"{U}"', uuid=uuid_hex(2)),
        id="uuid field quoted inside msg text",
    ),
    pytest.param(
        json_line(f'"uuid":"{U}"}}', uuid=None), id="msg ends like a uuid field, no uuid field"
    ),
    pytest.param(
        f'2026-11-26T23:14:05 vm daemon.info: app: "uuid":"{U}"}}'.encode(),
        id="non-JSON line (file format) ending in a uuid field",
    ),
    pytest.param(
        f'Nov 26 23:14:07 vm app: {{"uuid":"{U}"}}'.encode(),
        id="non-JSON line (RFC 3164) carrying a JSON object",
    ),
    pytest.param(
        f'{{not json at all "uuid":"{U}"}}'.encode(),
        id="non-JSON line starting with a brace",
    ),
    pytest.param(json_line("hello", uuid=U[:-1]), id="uuid one hex digit short"),
    pytest.param(json_line("hello", uuid=U + "0"), id="uuid one hex digit long"),
    pytest.param(
        json_line("hello", uuid=uuid_hex(3)) + b' "uuid":"' + U.encode() + b'"}',
        id="uuid field after the end of the JSON object",
    ),
]


@pytest.mark.parametrize("line", NOT_A_DROP)
def test_text_that_only_looks_like_the_uuid_field_never_causes_a_drop(
    tmp_path: Path, line: bytes
) -> None:
    rig = make_rig(tmp_path / "spool")
    assert rig.batcher.on_message(LINE, 0) == protocol.OK  # U is now held
    assert rig.batcher.on_message(line, 0) == protocol.OK
    assert rig.stored() == [LINE, line]
    assert rig.batcher.counters["duplicate_lines"] == 0


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(
            LINE.replace(b"hello", b"caf\xe9 \xff\xfe"), id="invalid UTF-8 in msg (passed raw)"
        ),
        pytest.param(LINE.replace(b"hello", b'#012#011 \\u00e9 \\"'), id="escapes in msg"),
        pytest.param(LINE + b"  ", id="trailing spaces"),
    ],
)
def test_a_genuine_resend_is_deduplicated_whatever_its_msg_holds(
    tmp_path: Path, line: bytes
) -> None:
    rig = make_rig(tmp_path / "spool")
    assert rig.batcher.on_message(line, 0) == protocol.OK
    assert rig.batcher.on_message(line, 0) == protocol.OK
    assert rig.stored() == [line]
    assert rig.batcher.counters["duplicate_lines"] == 1


def test_lines_without_a_uuid_are_never_deduplicated(tmp_path: Path) -> None:
    rig = make_rig(tmp_path / "spool")
    for line in (json_line("same"), json_line("same"), b"plain", b"plain", b"", b""):
        assert rig.batcher.on_message(line, 0) == protocol.OK
    assert len(rig.stored()) == 6


@pytest.mark.parametrize(
    ("line", "uuid"),
    [
        pytest.param(LINE, U.encode(), id="project template"),
        pytest.param(json_line("x", uuid=U.lower()), U.encode(), id="lower-case hex"),
        pytest.param(
            b'{"msg":"x",  "uuid" : "' + U.encode() + b'" }  ', U.encode(), id="spaces around"
        ),
        pytest.param(json_line("x"), None, id="no uuid field"),
        pytest.param(json_line("x", uuid="Z" * 32), None, id="not hex"),
        pytest.param(b"", None, id="empty line"),
        pytest.param(b"\xff\xfe{", None, id="invalid UTF-8"),
    ],
)
def test_line_uuid(line: bytes, uuid: object) -> None:
    assert line_uuid(line) == uuid


@given(st.binary(max_size=300))
def test_line_uuid_and_line_severity_never_raise_on_arbitrary_bytes(data: bytes) -> None:
    uuid = line_uuid(data)
    assert uuid is None or len(uuid) == 32
    severity = line_severity(data)
    assert severity is None or 0 <= severity <= 7


@given(st.binary(max_size=200))
def test_line_uuid_and_line_severity_never_raise_on_near_template_bytes(tail: bytes) -> None:
    for data in (b'{"severity":' + tail, LINE[:-40] + tail, b"{" + tail + b'"uuid":"'):
        line_uuid(data)
        line_severity(data)


@given(st.binary(max_size=300))
def test_holds_uuid_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    assert holds_uuid(data, U.encode()) in (True, False)


def test_holds_uuid_survives_absurd_nesting() -> None:
    assert (
        holds_uuid(b'{"a":' + b"[" * 100_000 + b'"uuid":"' + U.encode() + b'"}', U.encode())
        is False
    )


# ---------------------------------------------------------------- the index itself


@given(
    size=st.integers(1, 64),
    # Small numbers and multiples of the table size land on the same slots, so the
    # probing chains are long; repeats exercise adding what is already there.
    keys=st.lists(
        st.one_of(st.integers(0, 300), st.integers(0, 40).map(lambda n: n * 128)),  # 0 too
        max_size=600,
    ),
)
def test_the_index_holds_at_least_the_newest_size_uuids_and_nothing_never_added(
    size: int, keys: list
) -> None:
    recent = RecentSet(size)
    added: list = []
    for n in keys:
        recent.add(uuid_hex(n).encode())
        if n in added:
            added.remove(n)
        added.append(n)
        newest = added[-size:]
        assert all(uuid_hex(k).encode() in recent for k in newest)
        assert len(recent) <= 2 * size
    for n in range(301, 400):  # never added (and not a multiple of 128 under 5 121)
        if n % 128:
            assert uuid_hex(n).encode() not in recent


def test_the_index_is_at_most_half_full_and_takes_32_bytes_a_line() -> None:
    recent = RecentSet(65536)
    for n in range(3 * 65536 + 5):
        recent.add(uuid_hex(n).encode())
    tables = (recent._young, recent._old)
    assert all(sum(1 for v in t if v) <= len(t) // 2 for t in tables)
    assert sum(t.itemsize * len(t) for t in tables) == 32 * 65536


def test_the_index_keys_on_the_low_64_bits_of_the_uuid() -> None:
    """Two uuids that differ only in their high half are one key: the chance is
    about window / 2**64 for rsyslog's random uuids, and is the price of 8 bytes."""
    recent = RecentSet(8)
    assert b"0" * 32 not in recent
    recent.add(b"0" * 32)  # key 0 (a free slot's mark) is kept apart, and aliases nothing
    assert b"0" * 32 in recent
    assert b"0" * 31 + b"1" not in recent
    recent.add(b"F" * 16 + b"00000000000000AB")
    assert b"0" * 16 + b"00000000000000AB" in recent
    assert b"0" * 16 + b"00000000000000AC" not in recent


# ---------------------------------------------------------------- state/shipped.keys


def _keys_in(spool: Spool) -> list:
    return list(read_shipped(spool, 10**6, lambda reason: None))


def test_the_shipped_keys_file_keeps_the_newest_window_and_stays_bounded(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool")).create()
    window = 100
    for batch in range(30):
        lines = [json_line("x", uuid=uuid_hex(batch * 1000 + n + 1)) for n in range(17)]
        note_shipped(spool, lines, window)
        size = os.path.getsize(spool.state_path(SHIPPED_KEYS))
        assert size <= 2 * window * 8
    keys = _keys_in(spool)
    newest = [batch * 1000 + n + 1 for batch in range(30) for n in range(17)][-window:]
    assert keys[-window:] == newest
    assert read_shipped(spool, 5, lambda reason: None).tolist() == newest[-5:]


def test_a_torn_append_is_cut_so_the_keys_stay_whole(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool")).create()
    note_shipped(spool, [json_line("a", uuid=uuid_hex(7))], 100)
    with open(spool.state_path(SHIPPED_KEYS), "ab") as fh:
        fh.write(b"\x01\x02\x03")  # a shipper killed inside its write
    assert _keys_in(spool) == [7]
    note_shipped(spool, [json_line("b", uuid=uuid_hex(8))], 100)
    assert _keys_in(spool) == [7, 8]


def test_lines_without_a_uuid_note_nothing(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool")).create()
    note_shipped(spool, [b"<13>Nov 26 23:10:00 pi app: no uuid here", b"{}"], 100)
    assert not os.path.exists(spool.state_path(SHIPPED_KEYS))


def test_an_unreadable_shipped_keys_file_is_counted_and_ingest_starts(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool")).create()
    os.mkdir(spool.state_path(SHIPPED_KEYS))  # EISDIR on read: as good as EIO here
    rig = make_rig(tmp_path / "spool", spool=spool)
    assert rig.batcher.counters["unreadable_files"] == 1
    assert rig.batcher.on_message(LINE, 0) == protocol.OK


def test_the_spools_own_files_come_first_when_the_index_is_full(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool")).create()
    note_shipped(spool, [json_line("s", uuid=uuid_hex(n + 1)) for n in range(20)], 1000)
    (Path(spool.open_dir) / "20261126T230500Z-4242-0badf00d.seg").write_bytes(encode_record(LINE))
    rig = make_rig(tmp_path / "spool", spool=spool, dedup_window="10")
    # Room for 10: the segment's line, then the newest 9 shipped (12..20).
    assert LINE_UUID in rig.batcher.recent
    assert all(uuid_hex(n).encode() in rig.batcher.recent for n in range(12, 21))
    assert uuid_hex(11).encode() not in rig.batcher.recent
