"""Power loss: the spool as a crash leaves it, then ingest and ship start on it.

A live device is frozen (SIGSTOP of its forwarder) at random moments of a
stream and its spool copied as a power cut would leave it: the open segment
cut at a random byte offset past what had been made durable (fdatasync'd:
answered `OK`, or `DEFER_COMMIT` and then committed), mostly followed by the
first bytes of one more record (the write the power cut interrupted), its
reserved tail kept as zeros or not; sealed batches whole (they are renamed
in only once synced); and stray files of operations under way: an empty
`*.seg.new` of the dead instance, a half-written `counters.json.tmp-*`, a
half-written split half `*.batch.tmp-*`. A second device then runs on that
image (its own rsyslogd, ingest and shipper) and more lines are sent.

Expected in the archive, once each: every line intact before the cut (all
the durable ones among them), and the new lines. The lines past the cut were
never acknowledged as durable: the power cut takes them (with rsyslog's
memory queue). Ingest says what it cut: one log line per torn tail, with
the bytes it cut, and one per stray `*.seg.new` it removed.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

from support.reliability import (
    MARKS,
    SEQ_RE,
    Streamer,
    ingest_pids,
    rng_for,
    send_all,
    tally_run,
    wait_until,
)
from support.rsyslogd import syslog_line

from omprog_forwarder.spool import decode_records, encode_record

TORN_SEQ = 99_999_999  # the half-written record's number: must never be archived

pytestmark = MARKS


def records_with_ends(data: bytes) -> list[tuple[int, int]]:
    """(seq or -1, end offset) of each intact record from the start of `data`."""
    lines, _ = decode_records(data)
    out, pos = [], 0
    for line in lines:
        pos += len(line) + 10  # 8 hex digits, a space, the line, LF
        m = SEQ_RE.search(line.decode("utf-8", "replace"))
        out.append((int(m.group(1)) if m else -1, pos))
    return out


def seqs_of(data: bytes) -> set[int]:
    return {s for s, _ in records_with_ends(data) if s >= 0}


def crash_image(src: Path, dst: Path, durable: set[int], pid: int, rng) -> dict:
    """Copy spool `src` to `dst` as a power cut leaves it; what is in it, and what was cut."""
    for name in ("open", "ready", "dead", "state"):
        (dst / name).mkdir(parents=True, exist_ok=True)
    kept: set[int] = set()
    torn = []
    for p in (src / "ready").iterdir():
        if p.name.endswith(".batch"):
            shutil.copyfile(p, dst / "ready" / p.name)
            kept |= seqs_of(p.read_bytes())
    for p in (src / "open").iterdir():
        if not p.name.endswith(".seg"):
            continue
        data = p.read_bytes()
        records = records_with_ends(data)
        durable_end = max((end for s, end in records if s in durable), default=0)
        intact_end = records[-1][1] if records else 0
        cut = rng.randint(durable_end, intact_end)
        image = data[:cut]
        if rng.random() < 0.8:
            # The record being written when the power went: only its start reached the disk.
            record = encode_record(syslog_line(TORN_SEQ, text="never acknowledged"))
            image += record[: rng.randint(1, len(record) - 1)]
        if rng.random() < 0.5:
            image += b"\0" * (len(data) - len(image))  # the reserved, never written tail
        (dst / "open" / p.name).write_bytes(image)
        survivors = records_with_ends(image)
        kept |= {s for s, _ in survivors if s >= 0}
        good = survivors[-1][1] if survivors else 0
        assert TORN_SEQ not in {s for s, _ in survivors}
        if image[good:].strip(b"\0"):
            # What ingest must report: from the last intact record to the end of the file.
            torn.append((p.name, len(image) - good, len(survivors)))
    window = "19700101T000000Z"
    stray = [
        dst / "open" / f"{window}-{pid}-0badcafe.seg.new",
        dst / "state" / f"counters.json.tmp-{pid}-a1b2c3",
        dst / "ready" / f"{window}-00000000000000ff.1+3.batch.tmp-{pid}-d4e5f6",
    ]
    stray[0].write_bytes(b"")
    stray[1].write_bytes(b'{"sealed_window": 1')
    stray[2].write_bytes(b"00000000 half a rec")
    for p in dst.rglob("*"):
        os.chmod(p, 0o700 if p.is_dir() else 0o600)
    os.chmod(dst, 0o700)
    return {"kept": kept, "torn": torn, "stray": stray}


def test_power_loss_image_is_recovered_and_shipped(stack, chain):
    started = time.monotonic()
    rng = rng_for("power-loss")
    live = chain.device(ship_command="off")  # its spool is only the model for the images
    pipe = chain.pipeline(live).start()
    stream = Streamer(lambda: pipe.port, range(30_000), rate=3000, chunk=100)
    stream.start()
    images = []
    for _ in range(3):
        time.sleep(rng.uniform(1.0, 2.5))  # a random moment of the stream
        pids = wait_until(lambda: ingest_pids(live.spool), 10, 0.01, "the forwarder")
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(0.2)  # let the tap journal the answers already written
            durable = pipe.journal_state().durable
            dev = chain.device()
            image = crash_image(Path(live.spool), Path(dev.spool), durable, pids[0], rng)
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        assert durable <= image["kept"], "the image lost a durable line: a broken test"
        images.append((dev, durable, image))
    stream.stop()
    stream.join_ok(60)
    pipe.stop()

    for n, (dev, durable, image) in enumerate(images):
        t0 = time.monotonic()
        after = chain.pipeline(dev).start()
        new = send_all(after.port, range(100_000 * (n + 1), 100_000 * (n + 1) + 2000))
        wait_until(lambda a=after, s=new: set(s) <= a.journal_state().acked, 60, 0.2)
        after.stop()
        dev.drain()
        log = after.log()
        torn = [(name, cut) for name, cut, _ in image["torn"]]
        said = [(name, cut) for name, cut in torn if f"cut a torn tail of {cut} bytes" in log]
        result = tally_run(
            f"5 power loss image {n + 1}",
            image["kept"] | set(new),
            after,
            dev,
            started=t0 if n else started,
            notes=(
                f"{len(durable)} durable + {len(image['kept']) - len(durable)} intact "
                f"before the cut, {len(image['torn'])} torn tails "
                f"({', '.join(f'{c} bytes' for _, c in torn) or 'cut between records'}), "
                f"{log.count('left empty by an instance that died')} stray .seg.new removed"
            ),
        )
        result.assert_promise()
        assert said == torn, "a torn tail cut without saying so"
        assert f"removed {image['stray'][0].name}" in log
        assert not image["stray"][0].exists()
