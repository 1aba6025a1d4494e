"""SIGKILL at many points of a stream; after restart every ACKed line is there exactly once.

A small driver plays rsyslog 8.2302's part: it sends one line, waits for the
status word, and after a crash starts a new instance on the same spool and
resends from the first line that got no answer (in transactions, 8.2302 does
not resend lines answered DEFER_COMMIT; newer rsyslog resends the whole
transaction, which ingest must then drop by uuid).
"""

from __future__ import annotations

import collections
import glob
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from omprog_forwarder.spool import decode_records, encode_record


def make_line(i: int) -> bytes:
    rec = {"ts": "2026-11-26T23:00:00+00:00", "host": "pi", "severity": 6, "msg": f"line {i}"}
    text = json.dumps(rec)[:-1] + f', "uuid":"{i:032X}"}}'
    return text.encode()


class Instance:
    def __init__(self, spool_dir: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "omprog_forwarder", "run", "--spool-dir", spool_dir],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.reply() == b"OK"

    def send(self, line: bytes) -> None:
        self.proc.stdin.write(line + b"\n")
        self.proc.stdin.flush()

    def reply(self) -> bytes:
        return self.proc.stdout.readline().rstrip(b"\n")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()

    def close(self) -> int:
        self.proc.stdin.close()
        rc = self.proc.wait(30)
        self.proc.stdout.close()
        return rc


def stored_lines(spool_dir: str) -> list[bytes]:
    out: list[bytes] = []
    for path in glob.glob(os.path.join(spool_dir, "ready", "*")):
        with open(path, "rb") as fh:
            lines, good = decode_records(fh.read())
        assert good == os.path.getsize(path), f"damaged sealed batch {path}"
        out.extend(lines)
    return out


def assert_no_segment_left(spool_dir: str) -> None:
    """Every segment was sealed. A kill inside segment creation may leave an empty
    `*.seg.new` (removed by a later start, its creator being dead): no line in it."""
    open_dir = os.path.join(spool_dir, "open")
    for name in os.listdir(open_dir):
        assert name.endswith(".seg.new"), f"unsealed segment {name}"
        assert os.path.getsize(os.path.join(open_dir, name)) == 0


def run_stream(spool_dir: str, n: int, tx_size: int, kills: list[int], rng, resend_tx: bool):
    """Feed n lines; SIGKILL at each stream position in `kills` (possibly mid-reply)."""
    inst = Instance(spool_dir)
    acked: set[int] = set()
    i = 0
    kill_at = collections.deque(sorted(kills))
    in_tx = False
    tx_start = 0
    while i < n:
        if tx_size and not in_tx:
            inst.send(b"BEGIN TRANSACTION")
            assert inst.reply() == b"OK"
            in_tx, tx_start, tx_members = True, i, []
        line = make_line(i)
        inst.send(line)
        if kill_at and kill_at[0] == i:
            kill_at.popleft()
            # Kill somewhere between "line sent" and "reply read": at once,
            # or after the forwarder had a moment to write or fsync.
            time.sleep(rng.choice([0, 0, 0.0001, 0.0005, 0.002]))
            inst.kill()
            inst = Instance(spool_dir)
            if in_tx:
                in_tx = False
                if resend_tx:
                    i = tx_start  # newer rsyslog: the whole transaction again
                else:
                    # 8.2302 never resends lines answered DEFER_COMMIT: they
                    # must survive in the dead instance's segment.
                    acked.update(tx_members)
            continue  # resend line i (it got no answer)
        status = inst.reply()
        if tx_size:
            assert status == b"DEFER_COMMIT", status
            tx_members.append(i)
            if len(tx_members) == tx_size or i == n - 1:
                inst.send(b"COMMIT TRANSACTION")
                assert inst.reply() == b"OK"
                acked.update(range(tx_start, i + 1))
                in_tx = False
        else:
            assert status == b"OK", status
            acked.add(i)
        i += 1
    assert inst.close() == 0
    return acked


@pytest.mark.parametrize(
    "tx_size,resend_tx",
    [(0, False), (7, False), (7, True)],
    ids=["no-transactions", "transactions-8.2302", "transactions-resend-whole"],
)
@pytest.mark.parametrize("seed", range(6))
def test_kill9_then_restart_keeps_every_acked_line_once(tmp_path, seed, tx_size, resend_tx):
    rng = random.Random(seed * 100 + tx_size + resend_tx)
    n = 300
    kills = rng.sample(range(n), 4)
    spool_dir = str(tmp_path / "spool")
    acked = run_stream(spool_dir, n, tx_size, kills, rng, resend_tx)
    assert acked == set(range(n))
    counts = collections.Counter(stored_lines(spool_dir))
    missing = [i for i in range(n) if counts[make_line(i)] == 0]
    dups = [i for i in range(n) if counts[make_line(i)] > 1]
    assert not missing, f"lost after kill -9 at {kills}: {missing[:10]}"
    assert not dups, f"duplicated after kill -9 at {kills}: {dups[:10]}"
    assert sum(counts.values()) == n
    assert_no_segment_left(spool_dir)


def test_torn_tail_of_a_dead_segment_is_cut_on_restart(tmp_path):
    spool_dir = str(tmp_path / "spool")
    inst = Instance(spool_dir)
    for i in range(5):
        inst.send(make_line(i))
        assert inst.reply() == b"OK"
    [seg] = glob.glob(os.path.join(spool_dir, "open", "*.seg"))
    inst.kill()
    with open(seg, "ab") as fh:  # what a crash mid-write can leave behind
        fh.write(encode_record(make_line(5))[:20])
    inst = Instance(spool_dir)
    assert inst.close() == 0
    assert sorted(stored_lines(spool_dir)) == sorted(make_line(i) for i in range(5))


def test_sigkill_while_rsyslog_is_streaming(tmp_path):
    """Kill at an arbitrary instant of a fast pipelined stream, many times."""
    spool_dir = str(tmp_path / "spool")
    n = 2000
    rng = random.Random(7)
    acked: set[int] = set()
    start = 0
    for _round in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-m", "omprog_forwarder", "run", "--spool-dir", spool_dir],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdout.readline() == b"OK\n"
        # Pipelined writes (more than rsyslog would have in flight) so the
        # kill lands while the forwarder is mid-line, mid-write or mid-fsync.
        proc.stdin.write(b"".join(make_line(i) + b"\n" for i in range(start, n)))
        proc.stdin.flush()
        replies = 0
        stop_after = rng.randrange(1, 200)
        while replies < stop_after and proc.stdout.readline() == b"OK\n":
            replies += 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        acked.update(range(start, start + replies))
        start += replies  # the next instance gets everything not answered
        proc.stdin.close()
        proc.stdout.close()
    inst = Instance(spool_dir)
    for i in range(start, n):
        inst.send(make_line(i))
        assert inst.reply() == b"OK"
    assert inst.close() == 0
    counts = collections.Counter(stored_lines(spool_dir))
    for i in sorted(acked):
        assert counts[make_line(i)] == 1, f"line {i} stored {counts[make_line(i)]} times"
    assert all(counts[make_line(i)] == 1 for i in range(n))
