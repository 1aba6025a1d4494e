"""The spool on disk: record framing, names, modes, and adopting a dead instance's segment."""

from __future__ import annotations

import fcntl
import os
import re
import stat
import subprocess
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.ingest_helpers import decode_file, decode_segment, make_rig, ready_batches

from omprog_forwarder import spool as spool_mod
from omprog_forwarder.spool import (
    Spool,
    batch_file_name,
    decode_records,
    encode_record,
    parse_batch_name,
)

lines_st = st.lists(st.binary(max_size=64).map(lambda b: b.replace(b"\n", b"")), max_size=40)
BATCH_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{16}$")
BATCH_ID_CONTRACT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


# ---------------------------------------------------------------- records


@given(lines_st)
def test_records_round_trip_any_lines_without_lf(lines: list[bytes]) -> None:
    data = b"".join(encode_record(x) for x in lines)
    assert decode_records(data) == (lines, len(data))


@given(lines_st, st.data())
def test_any_truncation_decodes_to_a_prefix_of_the_lines(lines: list[bytes], data) -> None:  # type: ignore[no-untyped-def]
    whole = b"".join(encode_record(x) for x in lines)
    cut = data.draw(st.integers(min_value=0, max_value=len(whole)))
    decoded, good = decode_records(whole[:cut])
    assert decoded == lines[: len(decoded)]
    assert good <= cut
    assert whole[:good] == b"".join(encode_record(x) for x in decoded)
    if len(decoded) < len(lines):  # nothing intact is lost: only the record the cut went through
        assert cut - good < len(encode_record(lines[len(decoded)]))
    else:
        assert good == cut == len(whole)


@given(st.binary(max_size=512))
def test_decode_records_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    lines, good = decode_records(data)
    assert 0 <= good <= len(data)
    assert all(b"\n" not in x for x in lines)


@pytest.mark.parametrize(
    ("damage", "kept"),
    [
        pytest.param(lambda d: d[:-1], [b"one", b"two"], id="last LF missing: torn"),
        pytest.param(lambda d: d.replace(b"three", b"thrEe"), [b"one", b"two"], id="flipped byte"),
        pytest.param(lambda d: d.replace(b"two", b"tw\x00"), [b"one"], id="zeroed byte"),
        pytest.param(lambda d: d.upper(), [], id="uppercase hex head"),
        pytest.param(lambda d: d.replace(b" one", b"_one"), [], id="separator not a space"),
        pytest.param(lambda d: d + b"\x00" * 4096, [b"one", b"two", b"three"], id="zero tail"),
        pytest.param(lambda d: b"garbage\n" + d, [], id="garbage first"),
    ],
)
def test_decoding_stops_at_the_first_damaged_record(damage, kept: list[bytes]) -> None:  # type: ignore[no-untyped-def]
    data = b"".join(encode_record(x) for x in (b"one", b"two", b"three"))
    assert decode_records(damage(data))[0] == kept


def test_record_is_crc32_hex_space_line_lf() -> None:
    assert encode_record(b"hello") == b"%08x hello\n" % zlib.crc32(b"hello")
    assert encode_record(b"") == b"00000000 \n"


# ---------------------------------------------------------------- names


@pytest.mark.parametrize(
    "bad_id",
    ["", ".hidden", "-dash-first", "a/b", "a b", "a+b", "x" * 129, "caf\u00e9", "../ready"],
    ids=lambda s: repr(s[:20]),
)
def test_batch_file_name_refuses_ids_outside_the_contract(bad_id: str) -> None:
    with pytest.raises(ValueError):
        batch_file_name(bad_id, 1)


@pytest.mark.parametrize("good_id", ["20261126T231000Z-0123456789abcdef", "a", "x" * 128, "a.1.2"])
def test_batch_file_name_round_trips(good_id: str) -> None:
    assert parse_batch_name(batch_file_name(good_id, 42)) == (good_id, 42)


def test_a_sealed_batch_name_carries_window_batch_id_and_line_count(tmp_path: Path) -> None:
    rig = make_rig(tmp_path / "spool", wall_offset=17)
    for n in range(3):
        rig.batcher.on_message(b"line %d" % n, 0)
    rig.batcher.on_eof()
    ((name, lines),) = rig.batches()
    batch_id, count = parse_batch_name(name)
    assert BATCH_ID.match(batch_id) and BATCH_ID_CONTRACT.match(batch_id)
    assert batch_id.startswith("20261126T231000Z-"), "the window start, UTC"
    assert count == len(lines) == 3
    assert name == f"{batch_id}+3.batch"


# ---------------------------------------------------------------- layout and modes


def test_create_makes_the_four_folders_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        spool = Spool(str(tmp_path / "spool")).create()
        seg = spool.new_segment("20261126T231000Z")
        seg.append(encode_record(b"x"))
        batch = spool.seal(seg)
        spool.add_counters({"x": 1})
    finally:
        os.umask(old)
    for sub in ("", "open", "ready", "dead", "state"):
        assert stat.S_IMODE(os.stat(os.path.join(spool.root, sub)).st_mode) == 0o700, sub
    assert batch is not None
    assert stat.S_IMODE(os.stat(batch.path).st_mode) == 0o600
    for name in os.listdir(spool.state_dir):
        assert stat.S_IMODE(os.stat(spool.state_path(name)).st_mode) == 0o600, name


def test_create_is_idempotent_and_keeps_what_is_there(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool")).create()
    spool.write_batch("20261126T231000Z-0123456789abcdef", [b"kept"])
    Spool(str(tmp_path / "spool")).create()
    assert [b.lines for b in spool.ready_batches()] == [1]


# ---------------------------------------------------------------- adoption


def orphan(spool: Spool, name: str, lines: list[bytes], tail: bytes = b"") -> Path:
    path = Path(spool.open_dir) / name
    path.write_bytes(b"".join(encode_record(x) for x in lines) + tail)
    return path


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(b"", id="clean end"),
        pytest.param(encode_record(b"torn")[:-1], id="torn: LF missing"),
        pytest.param(encode_record(b"torn")[:5], id="torn: half a CRC"),
        pytest.param(b"\x00" * 512, id="zeroes after a power cut"),
    ],
)
def test_a_dead_owners_segment_is_adopted_at_start_up_with_a_torn_last_record_cut(
    tmp_path: Path, tail: bytes
) -> None:
    spool = Spool(str(tmp_path / "spool")).create()
    orphan(spool, "20261126T220500Z-4242-0badf00d.seg", [b"a", b"b", b""], tail)

    rig = make_rig(tmp_path / "spool", spool=spool)

    ((name, lines),) = rig.batches()
    assert lines == [b"a", b"b", b""]
    assert name.startswith("20261126T220500Z-"), "keeps the window of the dead instance"
    assert name.endswith("+3.batch")
    assert os.listdir(spool.open_dir) == []
    assert rig.batcher.counters["adopted_segments"] == 1
    assert rig.batcher.counters["adopted_lines"] == 3


def test_an_empty_or_wholly_torn_orphan_is_removed_not_sealed_as_an_empty_batch(
    tmp_path: Path,
) -> None:
    spool = Spool(str(tmp_path / "spool")).create()
    orphan(spool, "20261126T220500Z-1-00000001.seg", [])
    orphan(spool, "20261126T220500Z-2-00000002.seg", [], encode_record(b"x")[:-1])
    make_rig(tmp_path / "spool", spool=spool)
    assert os.listdir(spool.open_dir) == []
    assert os.listdir(spool.ready_dir) == []


def test_a_live_instances_segment_is_not_touched_by_an_instance_starting_up(
    tmp_path: Path,
) -> None:
    spool = Spool(str(tmp_path / "spool")).create()
    live = spool.new_segment("20261126T231000Z")  # flock held by "the other instance"
    live.append(encode_record(b"theirs"))
    before = os.stat(live.path)

    rig = make_rig(tmp_path / "spool", spool=spool)
    rig.batcher.on_message(b"mine", 0)
    rig.batcher.on_eof()  # sealing also looks for orphans

    after = os.stat(live.path)
    assert (after.st_ino, after.st_size) == (before.st_ino, before.st_size)
    assert decode_segment(Path(live.path)) == [b"theirs"]
    assert [lines for _, lines in rig.batches()] == [[b"mine"]]
    live.append(encode_record(b"theirs too"))
    assert spool.seal(live) is not None
    assert sorted(lines for _, lines in ready_batches(tmp_path / "spool")) == [
        [b"mine"],
        [b"theirs", b"theirs too"],
    ]


def test_a_segment_being_created_is_never_adopted_by_another_instance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another instance may scan open/ between our create and our flock: the new
    segment must not be visible to it unlocked (it would unlink it, and the line
    we then ACK would go into a deleted file)."""
    owner = Spool(str(tmp_path / "spool")).create()
    other = Spool(str(tmp_path / "spool"))
    real_flock = fcntl.flock
    adopted: list[object] = []

    def flock_after_another_instance_scans(fd: int, op: int) -> None:
        monkeypatch.setattr(spool_mod.fcntl, "flock", real_flock)  # once, and not for `other`
        adopted.append(other.adopt_orphans())
        real_flock(fd, op)

    monkeypatch.setattr(spool_mod.fcntl, "flock", flock_after_another_instance_scans)
    seg = owner.new_segment("20261126T231000Z")

    seg.append(encode_record(b"acked"))
    seg.sync()
    assert adopted == [[]]
    assert os.path.exists(seg.path)
    batch = owner.seal(seg)
    assert batch is not None
    assert decode_file(Path(batch.path)) == [b"acked"]


def test_usage_counts_every_file_in_open_ready_and_dead_but_not_state(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool")).create()
    seg = spool.new_segment("20261126T231000Z")
    seg.append(encode_record(b"a" * 100))
    spool.write_batch("20261126T231000Z-0000000000000001", [b"b" * 200])
    b2 = spool.write_batch("20261126T231000Z-0000000000000002", [b"c" * 300])
    spool.move_to_dead(b2, {"status": 400})
    spool.write_state("ship.json", {"last_success": {"x": "y" * 5000}})
    on_disk = sum(
        os.path.getsize(os.path.join(d, n))
        for d in (spool.open_dir, spool.ready_dir, spool.dead_dir)
        for n in os.listdir(d)
    )
    assert len(os.listdir(spool.dead_dir)) == 2, "the batch and its .why"
    assert spool.usage() == on_disk
    assert on_disk >= len(encode_record(b"a" * 100)) + 210 + 310


def _spawned_and_reaped() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_stillborn_segment_of_a_dead_instance_is_removed(tmp_path):
    """An instance killed between creating `X.seg.new` and renaming it leaves an
    empty file; a later adoption removes it. One whose creator still runs stays,
    locked or not (it may be between its creation and its lock), whatever its age."""
    spool = Spool(str(tmp_path / "spool")).create()
    me = os.getpid()
    dead = os.path.join(spool.open_dir, f"20261126T231000Z-{_spawned_and_reaped()}-aaaa.seg.new")
    open(dead, "wb").close()
    fresh = os.path.join(spool.open_dir, f"20261126T231000Z-{me}-cccc.seg.new")
    open(fresh, "wb").close()
    os.utime(fresh, (1, 1))  # "old" by the file's clock: the creator's pid decides
    live = os.path.join(spool.open_dir, f"20261126T231000Z-{me}-bbbb.seg.new")
    fd = os.open(live, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert spool.adopt_orphans() == []
        assert not os.path.exists(dead)
        assert os.path.exists(live)
        assert os.path.exists(fresh)
    finally:
        os.close(fd)


def test_write_file_atomic_leaves_no_temp_file_when_the_write_fails(tmp_path, monkeypatch):
    """On a full disk the temp file is removed, not left to fill it further."""

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool_mod.os, "fsync", no_space)
    with pytest.raises(OSError):
        spool_mod.write_file_atomic(str(tmp_path / "state.json"), b"{}")
    assert os.listdir(tmp_path) == []


def test_an_unreadable_orphan_segment_does_not_stop_adoption(tmp_path):
    spool = Spool(str(tmp_path / "spool")).create()
    os.mkdir(os.path.join(spool.open_dir, "20261126T231000Z-1-aaaa.seg"))  # cannot be opened O_RDWR
    good = os.path.join(spool.open_dir, "20261126T231000Z-2-bbbb.seg")
    with open(good, "wb") as fh:
        fh.write(encode_record(b"kept"))
    batches = spool.adopt_orphans()
    assert [b.read_lines() for b in batches] == [[b"kept"]]


def test_a_temp_file_of_a_dead_writer_is_removed_and_a_live_ones_kept(tmp_path):
    """write_file_atomic's `NAME.tmp-PID-RAND` never renamed (a crash mid-write) counts
    toward max_spool_bytes; a later adoption removes it when its writer is gone."""
    spool = Spool(str(tmp_path / "spool")).create()
    dead_pid, me = _spawned_and_reaped(), os.getpid()
    stale = [
        os.path.join(
            spool.ready_dir, f"20261126T231000Z-0000000000000001+3.batch.tmp-{dead_pid}-abc123"
        ),
        os.path.join(spool.state_dir, f"ship.json.tmp-{dead_pid}-0a0b0c"),
    ]
    live = os.path.join(
        spool.ready_dir, f"20261126T231000Z-0000000000000002+1.batch.tmp-{me}-def456"
    )
    for path in [*stale, live]:
        with open(path, "wb") as fh:
            fh.write(b"x" * 100)
    before = spool.usage()
    spool.adopt_orphans()
    assert [os.path.exists(p) for p in stale] == [False, False]
    assert os.path.exists(live)
    assert spool.usage() == before - 100  # the ready/ one counted; state/ never does
