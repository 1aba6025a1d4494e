"""Signals never end `run` before EOF.

rsyslog resets the child's dispositions to default (which kills), systemd
sends SIGTERM to the whole group at stop, and `hup.signal` may forward HUP or
USR1: any of these killing ingest mid-batch loses lines on rsyslog 8.2302.
Each test sends the signals to a running subprocess, keeps feeding lines,
then closes stdin: every line stored, exit 0.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from support.ingest_helpers import BEGIN, COMMIT, Ingest, ready_lines


@pytest.mark.parametrize(
    "signals",
    [
        pytest.param([signal.SIGTERM], id="SIGTERM"),
        pytest.param([signal.SIGHUP], id="SIGHUP"),
        pytest.param([signal.SIGUSR1], id="SIGUSR1"),
        pytest.param(
            [signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM], id="all, twice"
        ),
    ],
)
def test_signals_do_not_kill_run_before_eof(tmp_path: Path, signals: list[signal.Signals]) -> None:
    spool = tmp_path / "spool"
    sent = []
    with Ingest(spool) as ingest:
        assert ingest.read_reply() == b"OK"
        for n, sig in enumerate(signals):
            line = b"before %s #%d" % (sig.name.encode(), n)
            assert ingest.send(line) == b"OK"
            sent.append(line)
            os.kill(ingest.pid, sig)
        for n in range(3):
            line = b"after the signals #%d" % n
            assert ingest.send(line) == b"OK"
            sent.append(line)
        assert ingest.proc.poll() is None
        assert ingest.close() == (0, b"")
        stderr = ingest.stderr()
    assert ready_lines(spool) == sent
    for sig in set(signals):
        assert f"received {sig.name}" in stderr, "the signal did arrive"


def test_sigterm_inside_a_transaction_loses_nothing(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with Ingest(spool) as ingest:
        assert ingest.read_reply() == b"OK"
        assert ingest.send(BEGIN) == b"OK"
        assert ingest.send(b"deferred 1") == b"DEFER_COMMIT"
        os.kill(ingest.pid, signal.SIGTERM)
        assert ingest.send(b"deferred 2") == b"DEFER_COMMIT"
        assert ingest.send(COMMIT) == b"OK"
        assert ingest.close() == (0, b"")
    assert ready_lines(spool) == [b"deferred 1", b"deferred 2"]
