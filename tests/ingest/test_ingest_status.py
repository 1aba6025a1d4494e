"""`omprog-forwarder status [--json]`: what waits in the spool and how shipping went."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from support.ingest_helpers import cli_args, run_env

from omprog_forwarder import status
from omprog_forwarder.spool import Spool, encode_record

NOW = 1795735000.0
SUCCESS = {"at": "2026-11-26T23:10:02+00:00", "batch_id": "20261126T230500Z-00000000000000a1"}
ERROR = {"at": "2026-11-26T23:15:07+00:00", "error": "HTTP 503", "batch_id": "x"}


@pytest.fixture
def spool(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Two ready batches (3 + 2 lines), one dead (1 line), a live open segment (2 lines)."""
    sp = Spool(str(tmp_path / "spool")).create()
    b1 = sp.write_batch("20261126T230500Z-00000000000000a1", [b"a", b"bb", b"ccc"])
    b2 = sp.write_batch("20261126T231000Z-00000000000000a2", [b"dd", b"e"])
    os.utime(b1.path, (NOW - 100, NOW - 100))
    os.utime(b2.path, (NOW - 50, NOW - 50))
    b3 = sp.write_batch("20261126T230000Z-00000000000000a3", [b"dead line"])
    sp.move_to_dead(b3, {"status": 400, "body": "bad request"})
    seg = sp.new_segment("20261126T231500Z")
    seg.append(encode_record(b"open 1"))
    seg.append(encode_record(b"open 2"))
    seg.sync()
    sp.add_counters({"duplicate_lines": 2, "truncated_lines": 1, "refused_spool_full": 4})
    sp.write_state("ship.json", {"last_success": SUCCESS, "last_error": ERROR})
    yield sp
    seg.close()


def test_collect_reports_ready_open_dead_counters_and_last_ship_results(spool: Spool) -> None:
    info = status.collect(spool, NOW)
    ready = [encode_record(x) for x in (b"a", b"bb", b"ccc", b"dd", b"e")]
    assert info["ready"] == {
        "batches": 2,
        "lines": 5,
        "bytes": len(b"".join(ready)),
        "oldest_age_seconds": 100.0,
    }
    assert info["dead"] == {"batches": 1, "lines": 1, "bytes": len(encode_record(b"dead line"))}
    assert info["open"] == {
        "segments": 1,
        "bytes": len(encode_record(b"open 1") + encode_record(b"open 2")),
    }, "bytes of lines held, not space reserved ahead"
    assert info["counters"] == {"duplicate_lines": 2, "truncated_lines": 1, "refused_spool_full": 4}
    assert info["last_ship_success"] == SUCCESS
    assert info["last_ship_error"] == ERROR


def test_render_shows_every_figure(spool: Spool) -> None:
    text = status.render(status.collect(spool, NOW))
    assert "ready        2 batches, 5 lines" in text
    assert "(oldest 100 s)" in text
    assert "dead         1 batches, 1 lines" in text
    assert "open         1 segments" in text
    assert "HTTP 503" in text and SUCCESS["batch_id"] in text
    for name, value in (("duplicate_lines", 2), ("truncated_lines", 1), ("refused_spool_full", 4)):
        assert any(line.split() == [name, str(value)] for line in text.splitlines()), name


def test_an_empty_or_missing_spool_reports_zeros(tmp_path: Path) -> None:
    info = status.collect(Spool(str(tmp_path / "never-created")), NOW)
    assert info["ready"] == {"batches": 0, "bytes": 0, "lines": 0, "oldest_age_seconds": None}
    assert info["open"] == {"segments": 0, "bytes": 0}
    assert info["dead"]["batches"] == 0
    assert info["counters"] == {}
    assert info["last_ship_success"] is None and info["last_ship_error"] is None
    assert "oldest -" in status.render(info)


@pytest.mark.parametrize(
    "ship",
    [
        pytest.param({}, id="never shipped"),
        pytest.param({"last_success": SUCCESS}, id="success only"),
        pytest.param({"last_error": "HTTP 503 at 23:15"}, id="error as a plain string"),
        pytest.param({"last_success": 1795735000.5, "last_error": None}, id="number and null"),
        pytest.param([1, 2], id="not an object at all"),
    ],
)
def test_status_never_breaks_on_the_shape_of_ship_json(tmp_path: Path, ship: Any) -> None:
    sp = Spool(str(tmp_path / "spool")).create()
    Path(sp.state_path("ship.json")).write_text(json.dumps(ship))
    info = status.collect(sp, NOW)
    text = status.render(info)
    if isinstance(ship, dict) and ship.get("last_error"):
        assert "503" in text
    json.dumps(info)


@pytest.mark.parametrize("as_json", [True, False], ids=["--json", "text"])
def test_status_command(spool: Spool, as_json: bool) -> None:
    argv = cli_args("status", "--spool-dir", spool.root, *(["--json"] if as_json else []))
    proc = subprocess.run(argv, capture_output=True, env=run_env(), timeout=30)
    assert proc.returncode == 0, proc.stderr
    if as_json:
        info = json.loads(proc.stdout)
        assert info["ready"]["batches"] == 2 and info["ready"]["lines"] == 5
        assert info["dead"]["batches"] == 1
        assert info["open"]["segments"] == 1
        assert info["counters"]["duplicate_lines"] == 2
        assert info["last_ship_error"] == ERROR
        assert info["ready"]["oldest_age_seconds"] >= time.time() - NOW + 99
    else:
        assert b"ready        2 batches, 5 lines" in proc.stdout


def test_status_shows_the_clock_offset_the_shipper_learnt(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool")).create()
    info = status.collect(spool, time.time())
    assert info["clock_offset_seconds"] is None
    assert "clock offset" not in status.render(info)
    spool.write_state(
        "clock.json", {"offset_seconds": 3600.5, "measured_at": "2026-11-26T23:00:00+00:00"}
    )
    info = status.collect(spool, time.time())
    assert info["clock_offset_seconds"] == 3600.5
    assert "clock offset 3600.5 s" in status.render(info)
