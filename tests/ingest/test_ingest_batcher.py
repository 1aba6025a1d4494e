"""Batching in-process: windows on fake clocks, early seals, transactions, spool full.

The Batcher gets a fake monotonic `clock` and a fake `wall`; `Rig.advance` moves
both alike, moving only `wall` is a wall-clock jump (NTP on a Pi without RTC).
The omprog loop calls `on_tick()` before every wait; the tests call it by hand.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.ingest_helpers import BEGIN, COMMIT, Rig, json_line, make_rig, open_segments

from omprog_forwarder.ingest import protocol
from omprog_forwarder.ingest.batcher import line_severity
from omprog_forwarder.spool import encode_record, parse_batch_name, window_label

OK, DEFER = protocol.OK, protocol.DEFER_COMMIT


def windows(rig: Rig) -> list[str]:
    return [name[:16] for name, _ in rig.batches()]


def contents(rig: Rig) -> list[list[bytes]]:
    return [lines for _, lines in rig.batches()]


# ---------------------------------------------------------------- windows


def test_window_is_aligned_to_wall_clock_multiples_and_sealed_on_time_without_new_lines(
    tmp_path: Path,
) -> None:
    rig = make_rig(tmp_path / "spool", wall_offset=17, window_seconds=300)
    assert rig.batcher.on_message(b"first", 0) == OK
    assert 0 < rig.batcher.on_tick() <= 283, "asks to be woken by the window's end"

    rig.advance(282.9)
    rig.batcher.on_tick()
    assert rig.batches() == []

    rig.advance(0.1)
    rig.batcher.on_tick()
    assert windows(rig) == [window_label(rig.wall() - 300)]
    assert windows(rig) == ["20261126T231000Z"]
    assert contents(rig) == [[b"first"]]
    assert rig.batcher.counters["sealed_window"] == 1


@pytest.mark.parametrize(
    ("window_seconds", "offset", "label", "wait"),
    [
        pytest.param(300, 0, "20261126T231000Z", 300, id="300 s, at the window start"),
        pytest.param(300, 299.5, "20261126T231000Z", 0.5, id="300 s, half a second before the end"),
        pytest.param(300, 300, "20261126T231500Z", 300, id="300 s, at the next window start"),
        pytest.param(60, 61, "20261126T231100Z", 59, id="60 s"),
        pytest.param(3600, 0, "20261126T230000Z", 3000, id="3600 s: aligned to the hour"),
    ],
)
def test_segment_label_and_deadline_follow_the_wall_clock_window(
    tmp_path: Path, window_seconds: int, offset: float, label: str, wait: float
) -> None:
    rig = make_rig(tmp_path / "spool", wall_offset=offset, window_seconds=window_seconds)
    rig.batcher.on_message(b"x", 0)
    (seg,) = open_segments(tmp_path / "spool")
    assert seg.name.startswith(label + "-")
    while rig.clock() + rig.batcher.on_tick() < 1000 + wait - 0.01:  # sleep as the loop would
        rig.advance(rig.batcher.on_tick())
    rig.advance(1000 + wait - 0.01 - rig.clock())
    rig.batcher.on_tick()
    assert rig.batches() == []
    rig.advance(0.01)
    assert rig.batcher.on_tick() <= window_seconds
    assert windows(rig) == [label]


def test_a_line_after_the_deadline_seals_the_old_window_and_opens_the_next(tmp_path: Path) -> None:
    rig = make_rig(tmp_path / "spool", window_seconds=300)
    rig.batcher.on_message(b"old", 0)
    rig.advance(300)  # no tick in between (the loop was busy)
    rig.batcher.on_message(b"new", 0)
    rig.batcher.on_eof()
    assert windows(rig) == ["20261126T231000Z", "20261126T231500Z"]
    assert contents(rig) == [[b"old"], [b"new"]]


@pytest.mark.parametrize(
    "jump",
    [
        pytest.param(3600, id="wall clock jumps an hour forward"),
        pytest.param(86400 * 365, id="wall clock jumps a year forward (no RTC, then NTP)"),
        pytest.param(-3600, id="wall clock jumps an hour back"),
    ],
)
def test_a_wall_clock_jump_neither_loses_the_window_nor_seals_a_burst_of_empty_ones(
    tmp_path: Path, jump: float
) -> None:
    rig = make_rig(tmp_path / "spool", wall_offset=100, window_seconds=300)
    rig.batcher.on_message(b"before the jump", 0)
    rig.advance(10)
    rig.wall.advance(jump)
    rig.batcher.on_tick()
    assert rig.batches() == []
    rig.batcher.on_message(b"after the jump", 0)
    rig.advance(189.9)
    rig.batcher.on_tick()
    assert rig.batches() == [], "not sealed early: the deadline runs on the monotonic clock"
    rig.advance(0.1)
    rig.batcher.on_tick()
    assert len(rig.batches()) == 1, "not lost either"
    for _ in range(20):  # ticks long after: nothing more, never an empty batch
        rig.batcher.on_tick()
        rig.advance(300)
    assert contents(rig) == [[b"before the jump", b"after the jump"]]
    assert windows(rig) == ["20261126T231000Z"]
    assert os.listdir(rig.spool.open_dir) == []


def test_idle_ticks_over_many_windows_create_no_files(tmp_path: Path) -> None:
    rig = make_rig(tmp_path / "spool")
    for _ in range(50):
        rig.batcher.on_tick()
        rig.advance(150)
    rig.batcher.on_eof()
    assert os.listdir(rig.spool.open_dir) == os.listdir(rig.spool.ready_dir) == []


# ---------------------------------------------------------------- early seals


def test_a_batch_is_sealed_early_before_it_would_pass_max_batch_bytes(tmp_path: Path) -> None:
    record = len(encode_record(b"x" * 90))  # 100 bytes
    rig = make_rig(tmp_path / "spool", max_batch_bytes=3 * record)
    for n in range(7):
        assert rig.batcher.on_message(b"%d" % n * 90, 0) == OK
        rig.batcher.on_tick()
    rig.batcher.on_eof()
    assert [len(lines) for lines in contents(rig)] == [3, 3, 1]
    assert all(os.path.getsize(b.path) <= 3 * record for b in rig.spool.ready_batches())
    assert rig.spool.read_state("counters.json")["sealed_size"] == 2


def test_a_single_line_bigger_than_max_batch_bytes_is_its_own_batch(tmp_path: Path) -> None:
    rig = make_rig(tmp_path / "spool", max_batch_bytes=100)
    rig.batcher.on_message(b"small", 0)
    rig.batcher.on_message(b"B" * 500, 0)
    rig.batcher.on_tick()
    rig.batcher.on_message(b"after", 0)
    rig.batcher.on_eof()
    assert contents(rig) == [[b"small"], [b"B" * 500], [b"after"]]


URGENT_CASES = [
    pytest.param(json_line("disk on fire", severity=0), 3, True, id="JSON severity 0 (emerg)"),
    pytest.param(json_line("oops", severity=3), 3, True, id="JSON severity 3 (err) = threshold"),
    pytest.param(json_line("hmm", severity=4), 3, False, id="JSON severity 4 (warning)"),
    pytest.param(json_line("fyi", severity=6), 3, False, id="JSON severity 6 (info)"),
    pytest.param(json_line("oops", severity="err"), 3, True, id="JSON severity name err"),
    pytest.param(json_line("oops", severity="crit"), 3, True, id="JSON severity name crit"),
    pytest.param(json_line("hmm", severity=4), 4, True, id="urgent_severity=4 takes warning"),
    pytest.param(json_line("oops", severity=3), 2, False, id="urgent_severity=2 ignores err"),
    pytest.param(b"2026-11-26T23:14:04 vm daemon.err: app: x", 3, True, id="file format .err"),
    pytest.param(b"2024-12-30 22:50:33 pi kern.crit: app: x", 3, True, id="CustomLogFormat .crit"),
    pytest.param(b"2024-12-30 22:50:33 pi user.info: app: x", 3, False, id="CustomLogFormat .info"),
    pytest.param(b"free text saying severity err", 3, False, id="unparsable line: not urgent"),
    pytest.param(
        json_line('"severity":0 in the text', severity=6), 3, False, id="severity in msg text"
    ),
]


@pytest.mark.parametrize(("line", "threshold", "urgent"), URGENT_CASES)
def test_a_line_at_or_below_urgent_severity_seals_at_once(
    tmp_path: Path, line: bytes, threshold: int, urgent: bool
) -> None:
    rig = make_rig(tmp_path / "spool", urgent_severity=threshold)
    rig.batcher.on_message(b"earlier line", 0)
    rig.advance(1)
    rig.batcher.on_message(line, 0)
    rig.batcher.on_tick()
    if urgent:
        assert contents(rig) == [[b"earlier line", line]]
        assert rig.batcher.counters["sealed_urgent"] == 1
    else:
        assert rig.batches() == []


def test_urgent_seals_are_rate_limited_by_urgent_min_interval(tmp_path: Path) -> None:
    rig = make_rig(tmp_path / "spool", urgent_min_interval=10)
    err = json_line("oops", severity=3)
    rig.batcher.on_message(err, 0)
    rig.batcher.on_tick()
    assert len(rig.batches()) == 1

    rig.advance(2)
    rig.batcher.on_message(err, 0)
    assert rig.batcher.on_tick() == pytest.approx(8), "wakes up when the interval has passed"
    rig.advance(7.9)
    rig.batcher.on_tick()
    assert len(rig.batches()) == 1, "a second urgent line within the interval waits"
    rig.advance(0.1)
    rig.batcher.on_tick()
    assert len(rig.batches()) == 2, "and seals once the interval has passed"

    rig.advance(30)
    rig.batcher.on_message(err, 0)
    rig.batcher.on_tick()
    assert len(rig.batches()) == 3, "after a quiet interval the next one seals at once"


def test_an_urgent_line_already_sealed_by_size_causes_no_later_early_seal(tmp_path: Path) -> None:
    record = len(encode_record(json_line("oops", severity=3)))
    rig = make_rig(tmp_path / "spool", max_batch_bytes=record + 10, urgent_min_interval=10)
    rig.batcher.on_message(json_line("first", severity=3), 0)
    rig.batcher.on_tick()  # urgent seal at t=0
    rig.advance(1)
    rig.batcher.on_message(json_line("oops", severity=3), 0)  # urgent, due at t=10
    rig.batcher.on_message(b"fills the batch: seals the urgent line by size", 0)
    rig.advance(10)
    rig.batcher.on_tick()
    assert len(rig.batches()) == 2, "the new segment holds no urgent line; it waits its window"


# ---------------------------------------------------------------- transactions


def test_inside_a_transaction_nothing_is_sealed_until_commit_even_past_the_deadline(
    tmp_path: Path,
) -> None:
    rig = make_rig(tmp_path / "spool", max_batch_bytes=50)
    b = rig.batcher
    assert b.on_begin() == OK
    assert b.on_message(b"tx line 1", 0) == DEFER
    assert b.on_message(json_line("urgent in tx", severity=2), 0) == DEFER
    assert b.on_message(b"x" * 100, 0) == DEFER  # past max_batch_bytes
    rig.advance(600)  # past the window's deadline
    b.on_tick()
    assert b.on_message(b"tx line 4", 0) == DEFER
    b.on_tick()
    assert rig.batches() == []
    assert b.on_commit() == OK
    b.on_tick()
    assert contents(rig) == [
        [b"tx line 1", json_line("urgent in tx", severity=2), b"x" * 100, b"tx line 4"]
    ]


def test_a_repeated_begin_never_rolls_back_lines_answered_defer_commit(tmp_path: Path) -> None:
    rig = make_rig(tmp_path / "spool")
    b = rig.batcher
    assert [b.on_begin(), b.on_message(b"a", 0), b.on_message(b"b", 0)] == [OK, DEFER, DEFER]
    # rsyslog 8.2302 after an error on the next message: BEGIN again, resume there
    assert [b.on_begin(), b.on_message(b"c", 0), b.on_commit()] == [OK, DEFER, OK]
    b.on_eof()
    assert contents(rig) == [[b"a", b"b", b"c"]]


def test_lines_answered_defer_commit_without_a_commit_are_kept_at_eof(tmp_path: Path) -> None:
    rig = make_rig(tmp_path / "spool")
    rig.batcher.on_begin()
    rig.batcher.on_message(b"never committed", 0)
    rig.batcher.on_eof()
    assert contents(rig) == [[b"never committed"]]
    assert rig.spool.read_state("counters.json")["eof_uncommitted_lines_kept"] == 1


@pytest.fixture
def fdatasyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    return calls


def test_without_transactions_each_line_is_appended_and_fdatasynced_before_its_ok(
    tmp_path: Path, fdatasyncs: list[int]
) -> None:
    rig = make_rig(tmp_path / "spool")
    for n in range(3):
        assert rig.batcher.on_message(b"line %d" % n, 0) == OK
        assert len(fdatasyncs) == n + 1
        assert rig.stored()[-1] == b"line %d" % n


def test_with_transactions_each_line_is_written_before_defer_commit_and_one_fdatasync_at_commit(
    tmp_path: Path, fdatasyncs: list[int]
) -> None:
    rig = make_rig(tmp_path / "spool")
    assert rig.batcher.on_begin() == OK
    for n in range(5):
        assert rig.batcher.on_message(b"line %d" % n, 0) == DEFER
        assert rig.stored()[-1] == b"line %d" % n, "in the segment before its DEFER_COMMIT"
    assert fdatasyncs == []
    assert rig.batcher.on_commit() == OK
    assert len(fdatasyncs) == 1


# ---------------------------------------------------------------- spool full
# The cap is filled with a batch "from an earlier run" in ready/, so the tests do
# not depend on how much room the open segment reserves ahead on disk.

MAX_SPOOL = 2 * 1024 * 1024


def fill_ready(rig: Rig) -> None:
    """A sealed batch alone bigger than max_spool_bytes, waiting for the shipper."""
    rig.spool.write_batch("20261126T230500Z-00000000000000aa", [b"z" * 1023] * 2100)


def free_ready(rig: Rig) -> None:
    """The shipper delivered everything and deleted it; rsyslog retries 1 s later."""
    for batch in rig.spool.ready_batches():
        rig.spool.delete(batch)
    rig.advance(1)


def test_spool_full_refuses_with_a_reason_writes_nothing_and_accepts_once_space_is_freed(
    tmp_path: Path,
) -> None:
    rig = make_rig(tmp_path / "spool", max_spool_bytes=MAX_SPOOL)
    fill_ready(rig)

    status = rig.batcher.on_message(b"refused", 0)
    assert status.startswith(b"Error: ") and b"\n" not in status
    assert b"spool full" in status and b"max_spool_bytes" in status
    assert os.listdir(rig.spool.open_dir) == [], "the refused line is not written at all"
    rig.advance(1)
    assert rig.batcher.on_message(b"refused", 0).startswith(b"Error: spool full")
    assert rig.batcher.counters["refused_spool_full"] == 2

    free_ready(rig)
    assert rig.batcher.on_message(b"refused", 0) == OK
    rig.batcher.on_eof()
    assert contents(rig) == [[b"refused"]]


def test_spool_full_leaves_the_open_segment_byte_for_byte_unchanged(tmp_path: Path) -> None:
    rig = make_rig(tmp_path / "spool", max_spool_bytes=MAX_SPOOL)
    assert rig.batcher.on_message(b"a" * 100, 0) == OK
    (seg,) = open_segments(tmp_path / "spool")
    fill_ready(rig)
    rig.advance(1)
    before = seg.read_bytes()
    assert rig.batcher.on_message(b"b" * 200, 0).startswith(b"Error: spool full")
    assert seg.read_bytes() == before
    free_ready(rig)
    assert rig.batcher.on_message(b"c" * 10, 0) == OK
    assert rig.stored() == [b"a" * 100, b"c" * 10]


def test_spool_full_inside_a_transaction_keeps_earlier_deferred_lines(tmp_path: Path) -> None:
    rig = make_rig(tmp_path / "spool", max_spool_bytes=MAX_SPOOL)
    b = rig.batcher
    b.on_begin()
    assert b.on_message(b"a", 0) == DEFER
    fill_ready(rig)
    rig.advance(1)
    assert b.on_message(b"b", 0).startswith(b"Error: spool full")
    free_ready(rig)
    assert b.on_begin() == OK  # rsyslog 8.2302: BEGIN again, then the refused message
    assert b.on_message(b"b", 0) == DEFER
    assert b.on_commit() == OK
    b.on_eof()
    assert contents(rig) == [[b"a", b"b"]]


# ---------------------------------------------------------------- EOF and counters


def test_eof_seals_and_records_counters_in_state(tmp_path: Path) -> None:
    rig = make_rig(tmp_path / "spool", max_line_bytes=10)
    rig.batcher.on_message(b"0123456789", 5)  # the loop cut 5 bytes
    rig.batcher.on_eof()
    assert contents(rig) == [[b"0123456789"]]
    saved = rig.spool.read_state("counters.json")
    assert saved["truncated_lines"] == 1
    assert saved["sealed_eof"] == 1
    assert os.listdir(rig.spool.open_dir) == []


def test_counters_are_flushed_periodically_while_running(tmp_path: Path) -> None:
    rig = make_rig(tmp_path / "spool")
    rig.batcher.on_message(b"x", 3)
    rig.batcher.on_tick()
    assert rig.spool.read_state("counters.json") == {}
    rig.advance(10)
    rig.batcher.on_tick()
    assert rig.spool.read_state("counters.json") == {"truncated_lines": 1}


def test_sealed_batches_never_hold_a_mark_and_never_are_empty(tmp_path: Path) -> None:
    rig = make_rig(tmp_path / "spool")
    for _ in range(3):
        rig.batcher.on_begin()
        rig.batcher.on_commit()
        rig.advance(400)
        rig.batcher.on_tick()
    rig.batcher.on_eof()
    assert rig.batches() == []
    assert BEGIN not in rig.stored() and COMMIT not in rig.stored()


@pytest.mark.parametrize(
    ("line", "severity"),
    [
        (json_line("x", severity=3), 3),
        (json_line("x", severity="warning"), 4),
        (json_line("x", severity="Error"), 3),
        (json_line("x", severity="bogus"), None),
        (json_line("x", severity=9), None),
        (b"2026-11-26T23:14:04.123+00:00 vm local0.debug: app: x", 7),
        (b"2024-12-30 22:50:33 pi daemon.emerg: app: x", 0),
        (b"<11>1 2026-11-26T23:14:06Z vm app 42 - - RFC 5424", None),
        (b"", None),
        (b"\xff\xfe", None),
    ],
    ids=lambda v: v.decode("latin-1")[:40] if isinstance(v, bytes) else str(v),
)
def test_line_severity(line: bytes, severity: object) -> None:
    assert line_severity(line) == severity


def test_batch_line_count_in_the_name_matches_the_content(tmp_path: Path) -> None:
    rig = make_rig(tmp_path / "spool", max_batch_bytes=60)
    for n in range(10):
        rig.batcher.on_message(b"line %d" % n, 0)
    rig.batcher.on_eof()
    for name, lines in rig.batches():
        assert parse_batch_name(name)[1] == len(lines)
    assert rig.stored() == [b"line %d" % n for n in range(10)]
