"""The omprog conversation of `omprog-forwarder run`, as rsyslog 8.2302 holds it.

Most tests run the real program as a subprocess (`python -m omprog_forwarder run`)
and feed it the stdin fixtures in tests/fixtures/, comparing stdout byte for byte
with the replies recorded beside them. The framing property at the end drives
`OmprogLoop` in-process over a real pipe.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.ingest_helpers import (
    BEGIN,
    COMMIT,
    FIXTURES,
    PROTOCOL_WORDS,
    Ingest,
    counters,
    decode_segment,
    json_line,
    open_segments,
    ready_lines,
    run_once,
    uuid_hex,
)

from omprog_forwarder.ingest import protocol
from omprog_forwarder.spool import Spool

MARKS = (BEGIN, COMMIT)


def input_lines(data: bytes) -> list[bytes]:
    assert data.endswith(b"\n")
    return data[:-1].split(b"\n")


STDIN_FIXTURES = [
    pytest.param(
        "stdin-plain.txt", "stdin-plain.replies", id="plain: JSON template and syslog formats"
    ),
    pytest.param(
        "stdin-transactions.txt",
        "stdin-transactions.replies",
        id="transactions: DEFER_COMMIT inside, OK to marks, repeated BEGIN never rolls back",
    ),
    pytest.param(
        "stdin-hostile.bin",
        "stdin-hostile.replies",
        id="hostile: invalid UTF-8, empty lines, #012, tab, CR, near-miss marks",
    ),
    pytest.param(
        "rsyslog-8.2302-json-template.jsonl", None, id="recorded rsyslog 8.2302 JSON lines"
    ),
    pytest.param("rsyslog-8.2302-customlogformat.log", None, id="recorded CustomLogFormat lines"),
]


@pytest.mark.parametrize(("stdin_name", "replies_name"), STDIN_FIXTURES)
def test_fixture_gets_exactly_the_recorded_replies_and_every_line_is_stored_byte_exact(
    tmp_path: Path, stdin_name: str, replies_name: str
) -> None:
    data = (FIXTURES / stdin_name).read_bytes()
    lines = input_lines(data)
    if replies_name:
        expected = (FIXTURES / replies_name).read_bytes()
    else:
        expected = b"OK\n" * (1 + len(lines))

    result = run_once(tmp_path / "spool", data)

    assert result.returncode == 0, result.stderr
    assert result.stdout == expected, result.stderr
    assert len(result.replies) == 1 + len(lines), "one reply per input line, plus the start-up OK"
    assert ready_lines(tmp_path / "spool") == [x for x in lines if x not in MARKS]
    assert open_segments(tmp_path / "spool") == [], "EOF seals everything into ready/"


def test_stdout_carries_protocol_words_only_and_diagnostics_go_to_stderr(tmp_path: Path) -> None:
    # A too-long line and a duplicate both log a diagnostic; none of it may reach stdout.
    line = json_line("dup", uuid=uuid_hex(7))
    result = run_once(
        tmp_path / "spool",
        b"x" * 600 + b"\n" + line + b"\n" + line + b"\n",
        settings={"max_line_bytes": 500, "log_level": "debug"},
    )
    assert result.returncode == 0
    assert result.replies == [b"OK"] * 4
    assert set(result.replies) <= set(PROTOCOL_WORDS)
    assert "max_line_bytes" in result.stderr
    assert "resent line" in result.stderr


def test_lines_up_to_1_mib_are_accepted_byte_exact(tmp_path: Path) -> None:
    big = bytes(range(256)).replace(b"\n", b"#") * 4096  # exactly 1 MiB, every byte value but LF
    assert len(big) == 1024 * 1024
    result = run_once(tmp_path / "spool", big + b"\nnext\n")
    assert result.replies == [b"OK", b"OK", b"OK"]
    assert ready_lines(tmp_path / "spool") == [big, b"next"]
    assert "truncated" not in result.stderr.lower()


@pytest.mark.parametrize(
    ("line", "stored"),
    [
        pytest.param(b"a" * 1000, b"a" * 1000, id="exactly max_line_bytes: kept whole"),
        pytest.param(b"b" * 1001, b"b" * 1000, id="one byte over: truncated to max_line_bytes"),
        pytest.param(b"c" * 300_000, b"c" * 1000, id="300 kB over: truncated across reads"),
        pytest.param(
            BEGIN + b"x" * 2000,
            BEGIN + b"x" * (1000 - len(BEGIN)),
            id="a mark followed by junk is a message, not a mark",
        ),
    ],
)
def test_line_longer_than_max_line_bytes_is_stored_truncated_counted_and_the_next_line_is_fine(
    tmp_path: Path, line: bytes, stored: bytes
) -> None:
    spool = tmp_path / "spool"
    result = run_once(spool, line + b"\nnext line\n", settings={"max_line_bytes": 1000})
    assert result.returncode == 0, result.stderr
    assert result.replies == [b"OK", b"OK", b"OK"], "one reply for the long line, one for the next"
    assert ready_lines(spool) == [stored, b"next line"]
    expected = 1 if len(line) > 1000 else None
    assert counters(spool).get("truncated_lines") == expected


def test_each_line_is_in_the_segment_before_its_ok_and_before_its_defer_commit(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    with Ingest(spool) as ingest:
        assert ingest.read_reply() == b"OK"
        assert ingest.send(b"first") == b"OK"
        (seg,) = open_segments(spool)
        assert decode_segment(seg) == [b"first"]
        assert ingest.send(BEGIN) == b"OK"
        assert ingest.send(b"deferred") == b"DEFER_COMMIT"
        assert decode_segment(seg) == [b"first", b"deferred"]
        assert ingest.send(COMMIT) == b"OK"
        assert ready_lines(spool) == [], "nothing is sealed before its window ends"
        assert ingest.close() == (0, b"")
    assert ready_lines(spool) == [b"first", b"deferred"]


def test_an_empty_line_is_a_message_not_eof(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with Ingest(spool) as ingest:
        assert ingest.read_reply() == b"OK"
        assert ingest.send(b"") == b"OK"
        assert ingest.send(b"") == b"OK"
        assert ingest.proc.poll() is None, "still running after empty lines"
        assert ingest.send(b"after") == b"OK"
        assert ingest.close() == (0, b"")
    assert ready_lines(spool) == [b"", b"", b"after"]


def test_eof_makes_everything_durable_seals_it_into_ready_and_exits_0(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    result = run_once(spool, b"one\n" + BEGIN + b"\ntwo\n")  # EOF inside a transaction
    assert result.returncode == 0
    assert result.replies == [b"OK", b"OK", b"OK", b"DEFER_COMMIT"]
    assert ready_lines(spool) == [b"one", b"two"]
    assert open_segments(spool) == []
    assert counters(spool)["sealed_eof"] == 1


# ---------------------------------------------------------------- start-up


def _write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


START_FAILURES = [
    pytest.param(
        lambda d: ["--config", str(_write(d / "f.ini", "[forwarder]\nwindow_seconds = abc\n"))],
        {},
        ["window_seconds", "'abc'"],
        id="window_seconds=abc in the file",
    ),
    pytest.param(
        lambda d: [],
        {"max_batch_bytes": "-1"},
        ["max_batch_bytes", "'-1'"],
        id="max_batch_bytes=-1 in the environment",
    ),
    pytest.param(
        lambda d: ["--config", str(_write(d / "f.ini", "[forwarder]\ncolour = blue\n"))],
        {},
        ["colour"],
        id="unknown key in the file",
    ),
    pytest.param(
        lambda d: ["--config", str(_write(d / "f.ini", "[forwarder]\npassword = s3cret\n", 0o644))],
        {},
        ["f.ini", "0644"],
        id="world-readable file holding a password",
    ),
    pytest.param(
        lambda d: ["--config", str(d / "missing.ini")],
        {},
        ["missing.ini"],
        id="config file missing",
    ),
    pytest.param(
        lambda d: ["--spool-dir", str(_write(d / "not-a-dir", "x"))],
        {},
        ["not-a-dir"],
        id="spool_dir is a regular file",
    ),
]


@pytest.mark.parametrize(("make_args", "env", "fragments"), START_FAILURES)
def test_failed_initialisation_writes_one_line_saying_why_and_exits_non_zero(
    tmp_path: Path, make_args, env: dict[str, str], fragments: list[str]
) -> None:
    args = make_args(tmp_path)
    spool = None if "--spool-dir" in args else tmp_path / "spool"
    result = run_once(spool, b"never read\n", *args, settings=env)

    assert result.returncode != 0
    assert result.stdout.endswith(b"\n") and result.stdout.count(b"\n") == 1, result.stdout
    reason = result.stdout[:-1]
    assert reason not in (b"OK", b"DEFER_COMMIT")
    assert not reason.startswith(b"."), "rsyslog strips leading dots"
    assert len(reason) < 4095
    for fragment in fragments:
        assert fragment.encode() in reason, (fragment, reason)
    assert not (tmp_path / "spool" / "ready").exists() or ready_lines(tmp_path / "spool") == []


def test_ok_comes_after_the_spool_is_open_with_owner_only_folders_and_files(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    old = os.umask(0)  # a permissive umask must not widen anything
    try:
        ingest = Ingest(spool)
    finally:
        os.umask(old)
    with ingest:
        assert ingest.read_reply() == b"OK"
        for sub in ("", "open", "ready", "dead", "state"):
            assert stat.S_IMODE((spool / sub).stat().st_mode) == 0o700, sub
        assert ingest.send(b"line") == b"OK"
        assert ingest.close() == (0, b"")
    files = [p for sub in ("ready", "state") for p in (spool / sub).iterdir()]
    assert any(p.suffix == ".batch" for p in files)
    assert any(p.name == "counters.json" for p in files)
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p.name


# ---------------------------------------------------------------- framing, in-process


class Recorder:
    """A protocol.Handler that only records what the loop hands it."""

    def __init__(self) -> None:
        self.events: list[tuple[str, bytes, int]] = []
        self.eof = 0

    def on_message(self, line: bytes, truncated: int) -> bytes:
        self.events.append(("msg", line, truncated))
        return protocol.OK

    def on_begin(self) -> bytes:
        self.events.append(("begin", b"", 0))
        return protocol.OK

    def on_commit(self) -> bytes:
        self.events.append(("commit", b"", 0))
        return protocol.OK

    def after_reply(self) -> None:
        pass

    def on_tick(self) -> float:
        return 60.0

    def on_eof(self) -> None:
        self.eof += 1


line_st = st.one_of(
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
    st.sampled_from([b"", BEGIN, COMMIT, BEGIN + b" ", b"\r", b"\xff\xfe"]),
)


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(line_st, max_size=30),
    read_size=st.integers(min_value=1, max_value=64),
    max_line=st.integers(min_value=1, max_value=50),
)
def test_framing_is_independent_of_how_reads_split_the_stream(
    lines: list[bytes], read_size: int, max_line: int
) -> None:
    """Whatever the read size: every line once, in order, truncated to max_line_bytes,
    marks only when exact and whole, one reply per line, EOF only at the end."""
    expected = []
    for line in lines:
        kept, cut = line[:max_line], max(0, len(line) - max_line)
        if kept == BEGIN and not cut:
            expected.append(("begin", b"", 0))
        elif kept == COMMIT and not cut:
            expected.append(("commit", b"", 0))
        else:
            expected.append(("msg", kept, cut))

    rin, win = os.pipe()
    rout, wout = os.pipe()
    try:
        os.write(win, b"".join(x + b"\n" for x in lines))  # < 64 KiB: fits the pipe
        os.close(win)
        win = -1
        handler = Recorder()
        loop = protocol.OmprogLoop(rin, wout, handler, BEGIN, COMMIT, max_line)
        original = protocol._READ_SIZE
        protocol._READ_SIZE = read_size
        try:
            loop.run()
        finally:
            protocol._READ_SIZE = original
        os.close(wout)
        wout = -1
        out = b""
        while chunk := os.read(rout, 65536):
            out += chunk
    finally:
        for fd in (rin, win, rout, wout):
            if fd >= 0:
                os.close(fd)

    assert handler.events == expected
    assert handler.eof == 1
    assert out == b"OK\n" * len(lines)


def test_a_fragment_without_lf_at_eof_gets_no_reply_and_is_not_stored(tmp_path: Path) -> None:
    """rsyslog always ends a message with LF; a fragment was never handed over."""
    result = run_once(tmp_path / "spool", b"whole\nfragment")
    assert result.replies == [b"OK", b"OK"]
    assert ready_lines(tmp_path / "spool") == [b"whole"]


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        pytest.param("spool full", b"Error: spool full", id="plain reason"),
        pytest.param("two\nlines\r\nhere", b"Error: two lines here", id="embedded newlines joined"),
        pytest.param("...dots", b"Error: ...dots", id="never starts with a dot"),
        pytest.param("x" * 10_000, b"Error: " + b"x" * (4000 - 7), id="capped under 4095 bytes"),
        pytest.param("caf\udcff", b"Error: caf?", id="unencodable text replaced"),
    ],
)
def test_error_status_is_one_line_not_ok_and_not_starting_with_a_dot(
    reason: str, expected: bytes
) -> None:
    status = protocol.error_status(reason)
    assert status == expected
    assert b"\n" not in status and b"\r" not in status


def test_spool_full_is_an_error_status_line_and_the_retry_after_freeing_space_is_ok(
    tmp_path: Path,
) -> None:
    spool_dir = tmp_path / "spool"
    spool = Spool(str(spool_dir)).create()
    spool.write_batch("20261126T230500Z-00000000000000aa", [b"z" * 1023] * 1100)  # > 1 MiB
    with Ingest(spool_dir, settings={"max_spool_bytes": "1MiB"}) as ingest:
        assert ingest.read_reply() == b"OK", "a full spool is no reason to fail start-up"
        reply = ingest.send(b"the line")
        assert reply.startswith(b"Error: spool full") and b"max_spool_bytes" in reply
        assert open_segments(spool_dir) == [], "nothing written, not even half"

        for batch in spool.ready_batches():  # the shipper delivered it
            spool.delete(batch)
        # rsyslog resends the refused line (1 s apart); poll the same way, faster
        deadline = time.monotonic() + 10
        while (reply := ingest.send(b"the line")) != b"OK":
            assert reply.startswith(b"Error: spool full")
            assert time.monotonic() < deadline, "still refused after the space was freed"
            time.sleep(0.1)
        assert ingest.close() == (0, b"")
    assert ready_lines(spool_dir) == [b"the line"]
    assert counters(spool_dir)["refused_spool_full"] >= 1
