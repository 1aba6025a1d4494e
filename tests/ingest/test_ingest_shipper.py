"""`ship_command`: started detached when a batch is sealed, never waited for.

The stand-in shipper below writes to its stdout and stderr (which must never
reach rsyslog's pipe), records its session, its pid and where its fds 0 and 1
point, then sleeps until the test kills it.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
from pathlib import Path

import pytest
from support.ingest_helpers import Ingest, json_line, make_rig, wait_for

from omprog_forwarder.ingest import protocol
from omprog_forwarder.spool import Spool, encode_record

SHIPPER = """
import json, os, sys, time
sys.stdout.write("SHIPPER STDOUT\\n" * 100); sys.stdout.flush()
sys.stderr.write("shipper stderr\\n"); sys.stderr.flush()
os.write(1, b"raw fd 1\\n")
info = {"pid": os.getpid(), "sid": os.getsid(0),
        "fd0": os.readlink("/proc/self/fd/0"), "fd1": os.readlink("/proc/self/fd/1")}
tmp = sys.argv[1] + ".tmp"
with open(tmp, "w") as fh:
    json.dump(info, fh)
os.rename(tmp, sys.argv[1])
if len(sys.argv) > 2:
    time.sleep(float(sys.argv[2]))
"""


def shipper_command(tmp_path: Path, marker: Path, sleep: float = 0) -> str:
    script = tmp_path / "fake_ship.py"
    script.write_text(SHIPPER)
    argv = [sys.executable, str(script), str(marker)] + ([str(sleep)] if sleep else [])
    return shlex.join(argv)


def read_marker(marker: Path) -> dict:
    return json.loads(wait_for(lambda: marker.exists() and marker.read_text(), what="shipper"))


def kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_a_sealed_batch_starts_ship_command_detached_and_never_waits_for_it(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    marker = tmp_path / "shipper.json"
    command = shipper_command(tmp_path, marker, sleep=60)
    shipper_pid = None
    try:
        with Ingest(spool, settings={"ship_command": command}) as ingest:
            assert ingest.read_reply() == b"OK"
            assert ingest.send(json_line("disk failing", severity=3)) == b"OK"  # urgent: seals
            info = read_marker(marker)
            shipper_pid = info["pid"]
            assert ingest.send(b"still answering") == b"OK"

            assert info["sid"] != os.getsid(ingest.pid), "a session of its own"
            assert info["sid"] != os.getsid(0)
            assert info["sid"] == info["pid"], "it leads that new session"
            assert info["fd0"] == "/dev/null", "stdin not inherited"
            assert info["fd1"] == "/dev/null", "stdout not inherited"

            code, rest = ingest.close(timeout=10)  # returns although the shipper sleeps on
            assert (code, rest) == (0, b""), "not one byte of the shipper on run's stdout"
        os.kill(shipper_pid, 0)  # still alive: never waited for, never killed by run
        log = spool / "state" / "ship.log"
        assert "shipper stderr" in wait_for(lambda: log.exists() and log.read_text())
    finally:
        if shipper_pid:
            kill_quietly(shipper_pid)


def test_an_empty_ship_command_starts_nothing(tmp_path: Path) -> None:
    rig = make_rig(tmp_path / "spool", ship_command="")
    rig.batcher.on_message(b"x", 0)
    rig.batcher.on_eof()
    assert len(rig.batches()) == 1
    saved = rig.spool.read_state("counters.json")
    assert "shipper_started" not in saved and "shipper_start_failed" not in saved
    assert not os.path.exists(rig.spool.state_path("ship.log"))


@pytest.mark.parametrize(
    "command",
    [
        pytest.param("/nonexistent/omprog-forwarder ship", id="no such program"),
        pytest.param("'unbalanced quote", id="unparsable command line"),
    ],
)
def test_a_ship_command_that_cannot_start_is_counted_and_ingest_keeps_going(
    tmp_path: Path, command: str
) -> None:
    rig = make_rig(tmp_path / "spool", ship_command=command)
    assert rig.batcher.on_message(b"x", 0) == protocol.OK
    rig.batcher.seal("test")
    assert rig.batcher.on_message(b"y", 0) == protocol.OK
    rig.batcher.on_eof()
    assert [lines for _, lines in rig.batches()] == [[b"x"], [b"y"]]
    assert rig.spool.read_state("counters.json")["shipper_start_failed"] >= 1


def test_a_batch_adopted_at_start_up_starts_ship_command_too(tmp_path: Path) -> None:
    """Adoption seals a dead instance's segment into ready/: that is a sealed batch
    to ship now, not whenever the next window happens to end."""
    marker = tmp_path / "shipper.json"
    spool = Spool(str(tmp_path / "spool")).create()
    (Path(spool.open_dir) / "20261126T220500Z-4242-0badf00d.seg").write_bytes(
        encode_record(b"acked before the crash")
    )
    make_rig(tmp_path / "spool", spool=spool, ship_command=shipper_command(tmp_path, marker))
    info = read_marker(marker)
    os.waitpid(info["pid"], 0)  # our child here (in-process): reap it


def test_auto_ship_command_runs_this_package_ship_with_the_same_options(tmp_path: Path) -> None:
    """The default `ship_command = auto` starts `python -m omprog_forwarder ship` with
    run's own --spool-dir once an endpoint is set; the shipper then complains (no
    Cognito settings here) into state/ship.log, which proves it ran on this spool."""
    spool = tmp_path / "spool"
    with Ingest(spool, settings={"endpoint_url": "https://api.invalid/prod/logs"}) as ingest:
        assert ingest.send(b"a line") == b"OK"
        code, _ = ingest.close()
    assert code == 0
    log = spool / "state" / "ship.log"
    text = wait_for(
        lambda: log.exists() and "the shipper needs" in log.read_text() and log.read_text()
    )
    assert "user_pool_id" in text


def test_auto_ship_command_without_an_endpoint_starts_nothing(tmp_path: Path) -> None:
    rig = make_rig(tmp_path / "spool")
    assert rig.batcher.cfg.ship_command == "auto"
    rig.batcher.on_message(b"x", 0)
    rig.batcher.on_eof()
    assert "shipper_started" not in rig.spool.read_state("counters.json")


def test_a_batch_sealed_while_the_shipper_is_exiting_gets_a_new_shipper(tmp_path: Path) -> None:
    """The running shipper may already have listed ready/ for the last time: a seal
    while it runs starts another one once it has exited, so no batch waits for the
    next seal (or forever, on a quiet host)."""
    slow = shlex.join([sys.executable, "-c", "import time; time.sleep(0.5)"])
    rig = make_rig(tmp_path / "spool", ship_command=slow)
    rig.batcher.on_message(b"first", 0)
    rig.batcher.seal("test")
    rig.batcher.on_message(b"second", 0)
    rig.batcher.seal("test")  # the first shipper is still running
    assert rig.batcher.counters["shipper_started"] == 1
    assert rig.batcher.launcher.pending
    wait_for(
        lambda: rig.batcher.on_tick() is not None and rig.batcher.counters["shipper_started"] == 2,
        what="a second shipper",
    )
    assert not rig.batcher.launcher.pending
