"""Ingest: throughput through a real rsyslogd, CPU time per line, peak RSS after 1 M lines.

    .venv/bin/python bench/bench_ingest.py            # full run (about 7 minutes here)
    .venv/bin/python bench/bench_ingest.py --quick    # smoke run (about 40 s)
    .venv/bin/python bench/bench_ingest.py --json FILE

1. Throughput. The project's rsyslog.d action (LinkedList queue,
   confirmMessages, transactions of dequeueBatchSize) in a private
   `rsyslogd -n` fed RFC 3164 lines over imtcp on loopback. The same config
   runs `omprog-forwarder run` and bench/minimal_omprog.py (only `binary=`
   differs), so the ratio forwarder / minimal is what the forwarder's own
   work costs. Both are timed the same way, from rsyslog's own counters:
   impstats (interval 1 s, JSON) writes the action queue's counters to a file
   through a ruleset of its own (so they never reach the action), and the
   rate is what the action took from its queue (`enqueued - size`) over the
   steady part of the flood, the first and last second dropped. Nothing reads
   the program's output while it runs: that would cost the measured side CPU.

   The sender keeps the queue topped up from the same counters to about three
   seconds of the observed rate. One setting differs from the shipped file,
   for both programs alike: queue.size is 1 000 000 instead of 100 000. It is
   a buffer size, not a cost per message (a LinkedList queue allocates per
   message either way), and without it three seconds of backlog at the rates
   this machine reaches (up to 80 000 msg/s) would pass the high watermark
   (90 % of queue.size), where the disk-assisted part of the queue starts.
   Only intervals between two samples in which the program cannot have
   waited for input count (the backlog at the first sample covers everything
   taken until the second); the disk-assisted part's `enqueued` is reported.
   Each program keeps its own rsyslogd for the whole comparison and the two
   take turns: a round is two floods seconds apart, in alternating order
   (forwarder first, then minimal first, ...), so a drift in machine load
   hits both; each round gives one ratio, and the median of them is the
   figure. Between floods the bench removes the forwarder's sealed batches,
   as its shipper would.

2. CPU per line: the program's own utime + stime (/proc/PID/stat) over the
   flood divided by the lines it took, for both programs (rsyslogd's too, for
   context).

3. Peak RSS: `omprog-forwarder run` fed 1 M JSON-template lines directly over
   a pipe in transactions of 128; its VmHWM read just before EOF.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import NamedTuple, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)  # devstack
sys.path.insert(0, os.path.join(REPO, "tests"))

from support.rsyslogd import RSYSLOGD, Rsyslogd, forwarder_binary  # noqa: E402

ACTION = "omprog-forwarder"
QUEUE = f"{ACTION} queue"
DA_QUEUE = f"{ACTION} queue[DA]"
#: For both programs (see the module docstring): room for three seconds of backlog.
QUEUE_SIZE = 1_000_000
#: The backlog the sender keeps stays well under the high watermark (90 % of QUEUE_SIZE).
MAX_BACKLOG = 400_000
MIN_BACKLOG = 20_000
FIRST_BACKLOG = 50_000
#: Top-ups are spread over this many slices a second.
FEED_SLICES = 10
CLK_TCK = os.sysconf("SC_CLK_TCK")
SHIPPED = "tx on, batch 1024 (shipped)"


def flood_line(i: int, text: str = "x" * 120, pri: int = 14) -> bytes:
    return f"<{pri}>Nov 26 23:00:00 benchhost benchapp[4242]: seq={i:09d} {text}\n".encode()


# ---------------------------------------------------------------- rsyslog's counters


class Sample(NamedTuple):
    """One impstats emission of the action queue: when, and its counters."""

    t: float
    enqueued: int
    size: int
    da_enqueued: int

    @property
    def dequeued(self) -> int:
        return self.enqueued - self.size


class StatsFile:
    """Reads impstats' JSON lines (`TIMESTAMP {json}`) as the file grows."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.samples: list[Sample] = []
        self._da = 0

    def poll(self) -> list[Sample]:
        """New complete samples since the last call (cheap: a few lines a second)."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        new = []
        for raw in lines:
            stamp, _, body = raw.partition(b" ")
            try:
                rec = json.loads(body)
            except ValueError:
                continue
            if rec.get("name") == DA_QUEUE:
                self._da = int(rec.get("enqueued", 0))
            elif rec.get("name") == QUEUE:
                t = datetime.datetime.fromisoformat(stamp.decode()).timestamp()
                new.append(Sample(t, int(rec["enqueued"]), int(rec["size"]), self._da))
        self.samples += new
        return new

    def wait_new(self, timeout: float) -> Optional[Sample]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = self.poll()
            if new:
                return new[-1]
            time.sleep(0.05)
        return None


class StatsRsyslogd(Rsyslogd):
    """The tests' private rsyslogd with impstats added, to a file of its own.

    impstats gets a ruleset of its own: its messages must not reach the
    omprog action, whose queue they measure.
    """

    def __init__(self, workdir: str, binary: str, overrides: dict[str, str], env: dict) -> None:
        super().__init__(workdir, binary, overrides, env=env, internal_log=False)
        self.stats_path = os.path.join(workdir, "impstats.json")
        head = (
            'module(load="impstats" interval="1" format="json" resetCounters="off"'
            ' ruleset="bench_stats")\n'
            'template(name="BenchStats" type="string"'
            ' string="%timegenerated:::date-rfc3339% %msg%\\n")\n'
            'ruleset(name="bench_stats") {\n'
            f'  action(type="omfile" file="{self.stats_path}" template="BenchStats")\n'
            "}\n"
        )
        with open(self.conf_path, encoding="utf-8") as fh:
            body = fh.read()
        with open(self.conf_path, "w", encoding="utf-8") as fh:
            fh.write(head + body)


# ---------------------------------------------------------------- processes


def pids_with(marker: str, exclude: tuple[int, ...] = ()) -> list[int]:
    """Pids whose command line holds `marker` (a path unique to one run)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                if marker.encode() in fh.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        fields = fh.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def wait_for_pid(marker: str, exclude: tuple[int, ...], timeout: float = 15.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = pids_with(marker, exclude)
        if len(pids) == 1:
            return pids[0]
        if len(pids) > 1:
            raise RuntimeError(f"more than one program for {marker}: {pids}")
        time.sleep(0.05)
    raise RuntimeError(f"the omprog program for {marker} did not start")


# ---------------------------------------------------------------- one flood


class Payload:
    """Pre-rendered lines, sent cyclically: no line is formatted during the flood."""

    def __init__(self, n: int = MAX_BACKLOG) -> None:
        self.lines = [flood_line(i) for i in range(n)]
        self.next = 0

    def take(self, count: int) -> bytes:
        out = []
        while count > 0:
            part = self.lines[self.next : self.next + count]
            out.append(b"".join(part))
            count -= len(part)
            self.next = (self.next + len(part)) % len(self.lines)
        return b"".join(out)


def steady_rate(samples: list[Sample], t_first: float, t_drained: float) -> dict:
    """msg/s the action took from its queue, first and last second dropped.

    An interval between two samples counts only if the backlog at its start
    covers all the action took in it: then the program never waited for input.
    """
    inside = [s for s in samples if t_first + 1.0 <= s.t <= t_drained - 1.0]
    intervals = [(x, y) for x, y in zip(inside, inside[1:]) if y.t > x.t]
    busy = [(x, y) for x, y in intervals if x.size >= y.dequeued - x.dequeued]
    if len(busy) < 2:
        raise RuntimeError(
            f"no steady part: {len(busy)} of {len(intervals)} intervals with a backlog between "
            f"{t_first + 1.0:.1f} and {t_drained - 1.0:.1f}"
        )
    lines = sum(y.dequeued - x.dequeued for x, y in busy)
    seconds = sum(y.t - x.t for x, y in busy)
    per_second = [(y.dequeued - x.dequeued) / (y.t - x.t) for x, y in busy]
    return {
        "rate": lines / seconds,
        "window_s": seconds,
        "window_lines": lines,
        "intervals": len(busy),
        "intervals_without_backlog": len(intervals) - len(busy),
        "per_second_min": min(per_second),
        "per_second_max": max(per_second),
        "min_queue_size": min(x.size for x, _ in busy),
    }


class Instance:
    """One program behind its own rsyslogd, started once and flooded many times.

    Both instances run for the whole comparison and take turns (the idle one
    costs an impstats line a second), so a round is two floods a few seconds
    apart rather than two rsyslogd start-ups apart: a drift in the machine's
    load between the two halves of a round stays small.
    """

    def __init__(self, program: str, overrides: dict[str, str], payload: Payload) -> None:
        self.program = program
        self.payload = payload
        self.tmp = tempfile.TemporaryDirectory(prefix=f"bench-ingest-{program}-")
        root = self.tmp.name
        if program == "forwarder":
            self.marker = os.path.join(root, "spool")
            binary = forwarder_binary(self.marker)
        else:
            self.marker = os.path.join(root, "minimal-omprog")
            binary = f"{sys.executable} {os.path.join(HERE, 'minimal_omprog.py')} {self.marker}"
        work = os.path.join(root, "rsyslog")
        os.makedirs(work)
        # Floods would fill the default 512 MiB spool; the minimal program ignores it.
        env = {"OMPROG_FORWARDER_MAX_SPOOL_BYTES": "8GiB"}
        params = {"queue.size": str(QUEUE_SIZE), **overrides}
        self.rs = StatsRsyslogd(work, binary, params, env)
        self.stats = StatsFile(self.rs.stats_path)
        self.sock: Optional[socket.socket] = None
        self.pid = 0
        self.last_rate = 0.0

    def __enter__(self) -> Instance:
        try:
            self.rs.start()
            assert self.rs.proc is not None
            self.sock = socket.create_connection(("127.0.0.1", self.rs.port), timeout=30)
            self.sock.sendall(flood_line(-1, "warm-up"))  # starts the program
            self.pid = wait_for_pid(self.marker, (self.rs.proc.pid,))
            self.idle(30)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        try:
            if self.rs.proc is not None:
                self.rs.stop()
        finally:
            self.tmp.cleanup()

    def idle(self, timeout: float) -> Sample:
        """Wait for a sample with an empty queue: the program has taken everything."""
        deadline = time.monotonic() + timeout
        while True:
            for s in self.stats.poll():
                if s.size == 0 and s.enqueued > 0:
                    return s
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.program} did not take its input: {self.rs.stderr()}")
            time.sleep(0.05)

    def clear_spool(self) -> None:
        """Remove sealed batches between floods, as the shipper would: the forwarder's
        spool-usage scan would otherwise grow round by round."""
        ready = os.path.join(self.marker, "ready")
        if os.path.isdir(ready):
            for name in os.listdir(ready):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(ready, name))

    def flood(self, seconds: float) -> dict:
        """One flood of `seconds`, then the drain; rate, CPU per line."""
        assert self.sock is not None and self.rs.proc is not None
        self.clear_spool()
        base = self.idle(30)
        time.sleep(0.3)  # the last commit of the previous input
        cpu0, rs_cpu0 = cpu_seconds(self.pid), cpu_seconds(self.rs.proc.pid)
        first_sample = len(self.stats.samples)
        t_first = time.time()
        # Start with three seconds of the previous flood's rate: no ramp-up to wait out.
        sent = FIRST_BACKLOG
        if self.last_rate:
            sent = int(min(MAX_BACKLOG, max(MIN_BACKLOG, 3 * self.last_rate)))
        self.sock.sendall(self.payload.take(sent))
        last: Optional[Sample] = None
        rates: list[float] = []
        plan, slices, quiet_since = 0, 0, time.monotonic()
        while time.time() - t_first < seconds:
            new = self.stats.poll()
            if new:
                quiet_since = time.monotonic()
                for sample in new:
                    if last is not None and sample.t > last.t:
                        rates.append((sample.dequeued - last.dequeued) / (sample.t - last.t))
                    last = sample
                assert last is not None
                # Three seconds of the fastest recent rate (a sample is up to a second
                # old when read, the next comes a second later), sent in slices over
                # the coming second so that rsyslog parses its input evenly.
                target = min(MAX_BACKLOG, max([MIN_BACKLOG] + [3 * r for r in rates[-3:]]))
                unseen = base.enqueued + sent - last.enqueued
                plan, slices = max(0, int(target) - last.size - unseen), FEED_SLICES
            elif time.monotonic() - quiet_since > 3:
                raise RuntimeError(f"impstats stopped: {self.rs.stderr()}")
            if plan > 0 and slices > 0:
                n = -(-plan // slices)
                self.sock.sendall(self.payload.take(n))
                sent, plan, slices = sent + n, plan - n, slices - 1
            time.sleep(1.0 / FEED_SLICES)
        total = base.enqueued + sent
        deadline = time.monotonic() + 300
        drained = None
        while drained is None:
            for s in self.stats.poll():
                if s.enqueued >= total and s.size == 0:
                    drained = s
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.program} did not take the flood: {self.rs.stderr()}")
            time.sleep(0.05)
        time.sleep(0.3)  # the last transaction's commit
        if pids_with(self.marker, (self.rs.proc.pid,)) != [self.pid]:
            raise RuntimeError(f"rsyslog restarted {self.program} during the flood")
        cpu = cpu_seconds(self.pid) - cpu0
        rs_cpu = cpu_seconds(self.rs.proc.pid) - rs_cpu0
        samples = self.stats.samples[first_sample:]
        result = steady_rate(samples, t_first, drained.t)
        self.last_rate = result["rate"]
        result.update(
            {
                "lines": sent,
                "flood_s": drained.t - t_first,
                "cpu_s": cpu,
                "cpu_us_per_line": cpu / sent * 1e6,
                "rsyslogd_cpu_us_per_line": rs_cpu / sent * 1e6,
                "da_enqueued": max(s.da_enqueued for s in samples),
            }
        )
        return result


def compare(label: str, overrides: dict, rounds: int, seconds: float, payload: Payload) -> dict:
    """Alternating rounds of the two programs under one config; per-round ratios."""
    out = []
    with (
        Instance("forwarder", overrides, payload) as fwd,
        Instance("minimal", overrides, payload) as mini,
    ):
        instances = {"forwarder": fwd, "minimal": mini}
        for rnd in range(rounds):
            order = ["forwarder", "minimal"] if rnd % 2 == 0 else ["minimal", "forwarder"]
            runs = {}
            for program in order:
                runs[program] = instances[program].flood(seconds)
                r = runs[program]
                print(
                    f"  round {rnd + 1} {label:<28} {program:<9} {r['rate']:>9.0f} msg/s "
                    f"{r['cpu_us_per_line']:6.1f} us/line cpu  ({r['lines']} lines)",
                    file=sys.stderr,
                    flush=True,
                )
            out.append(
                {
                    "round": rnd + 1,
                    "order": order,
                    "forwarder": runs["forwarder"],
                    "minimal": runs["minimal"],
                    "ratio": runs["forwarder"]["rate"] / runs["minimal"]["rate"],
                    "cpu_ratio": runs["forwarder"]["cpu_us_per_line"]
                    / runs["minimal"]["cpu_us_per_line"],
                }
            )

    def med(key: str, program: str) -> float:
        return statistics.median(r[program][key] for r in out)

    return {
        "label": label,
        "overrides": overrides,
        "seconds": seconds,
        "rounds": out,
        "median_ratio": statistics.median(r["ratio"] for r in out),
        "median_cpu_ratio": statistics.median(r["cpu_ratio"] for r in out),
        "forwarder_median_rate": med("rate", "forwarder"),
        "minimal_median_rate": med("rate", "minimal"),
        "forwarder_median_cpu_us": med("cpu_us_per_line", "forwarder"),
        "minimal_median_cpu_us": med("cpu_us_per_line", "minimal"),
        "min_queue_size": min(
            min(r["forwarder"]["min_queue_size"], r["minimal"]["min_queue_size"]) for r in out
        ),
        # Intervals left out because the backlog could have run dry in them.
        "intervals_without_backlog": sum(
            r[p]["intervals_without_backlog"] for r in out for p in ("forwarder", "minimal")
        ),
        "intervals": sum(r[p]["intervals"] for r in out for p in ("forwarder", "minimal")),
        "da_enqueued": max(
            max(r["forwarder"]["da_enqueued"], r["minimal"]["da_enqueued"]) for r in out
        ),
    }


# ---------------------------------------------------------------- peak RSS


def peak_rss(n: int = 1_000_000, tx: int = 128) -> dict[str, float]:
    """Feed n lines straight into `run` (transactions of tx) and read its peak RSS."""
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as tmp:
        proc = subprocess.Popen(
            [sys.executable, "-m", "omprog_forwarder", "run", "--spool-dir", tmp + "/spool"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=dict(os.environ, OMPROG_FORWARDER_MAX_SPOOL_BYTES="4GiB"),
            cwd=REPO,
        )
        try:
            assert proc.stdin is not None and proc.stdout is not None
            if proc.stdout.readline() != b"OK\n":
                raise RuntimeError("the forwarder did not start")
            base = (
                '{"ts":"2026-11-26T23:00:00.000000+00:00", "host":"pi", "facility":"daemon",'
                ' "severity":6, "app":"bench", "pid":"42", "msg":" line %d %s", "uuid":"%032X"}\n'
            )
            stdin = proc.stdin

            def feed() -> None:
                for start in range(0, n, tx):
                    chunk = [b"BEGIN TRANSACTION\n"]
                    chunk += [
                        (base % (i, "y" * 80, i)).encode() for i in range(start, min(n, start + tx))
                    ]
                    chunk.append(b"COMMIT TRANSACTION\n")
                    stdin.write(b"".join(chunk))
                stdin.flush()

            feeder = threading.Thread(target=feed)
            t0 = time.perf_counter()
            feeder.start()
            expected = n + 2 * ((n + tx - 1) // tx)
            for _ in range(expected):
                if not proc.stdout.readline():
                    raise RuntimeError("the forwarder stopped early")
            elapsed = time.perf_counter() - t0
            feeder.join()
            # VmHWM of the child itself: a child's ru_maxrss on Linux also counts
            # the parent's pages it shared between fork and exec.
            with open(f"/proc/{proc.pid}/status") as fh:
                hwm = next(int(x.split()[1]) for x in fh if x.startswith("VmHWM:"))
            proc.stdin.close()
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None and not stream.closed:
                    stream.close()
    return {
        "lines": n,
        "transaction": tx,
        "seconds": elapsed,
        "lines_per_s_direct": n / elapsed,
        "peak_rss_kib": hwm,
        "peak_rss_mib": hwm / 1024,
        "peak_rss_mb": hwm * 1024 / 1e6,
    }


# ---------------------------------------------------------------- main


def stop_on_sigterm() -> None:
    """SIGTERM (bench/run_all.py stopping us) unwinds like Ctrl-C: every `with` stops
    the rsyslogd and programs it started."""

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 rounds of 5 s, no settings sweep")
    ap.add_argument("--rounds", type=int, help="rounds of the shipped config (default 9)")
    ap.add_argument("--seconds", type=float, help="flood length per run (default 8)")
    ap.add_argument(
        "--settings",
        help="other configs to compare, e.g. 'batch:128,batch:4096,txoff' (default those three)",
    )
    ap.add_argument("--rss-lines", type=int, help="lines for the RSS figure (default 1 000 000)")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = ap.parse_args()
    stop_on_sigterm()
    if RSYSLOGD is None:
        print("rsyslogd is not installed (apt-get install rsyslog)", file=sys.stderr)
        return 2
    quick = args.quick
    rounds = args.rounds or (2 if quick else 9)
    seconds = args.seconds or (5.0 if quick else 8.0)
    settings = (
        args.settings
        if args.settings is not None
        else ("" if quick else "batch:128,batch:4096,txoff")
    )
    rss_lines = args.rss_lines or (300_000 if quick else 1_000_000)
    payload = Payload()
    started = time.monotonic()
    print(f"shipped config: {rounds} alternating rounds of {seconds:.0f} s", file=sys.stderr)
    shipped = compare(SHIPPED, {}, rounds, seconds, payload)
    sweep = []
    for item in filter(None, settings.split(",")):
        if item == "txoff":
            label, overrides = "tx off, batch 1024", {"useTransactions": "off"}
        else:
            size = item.split(":", 1)[1]
            label, overrides = f"tx on, batch {size}", {"queue.dequeueBatchSize": size}
        sweep.append(compare(label, overrides, max(1, rounds - 6), max(5.0, seconds - 2), payload))
    print(f"peak RSS after {rss_lines} lines ...", file=sys.stderr)
    rss = peak_rss(rss_lines)
    result = {
        "quick": quick,
        "shipped": shipped,
        "settings": sweep,
        "rss": rss,
        "wall_s": time.monotonic() - started,
    }
    ratios = " ".join(f"{r['ratio']:.2f}" for r in shipped["rounds"])
    print(
        f"shipped config: median ratio {shipped['median_ratio']:.3f} (rounds {ratios}); "
        f"cpu/line forwarder {shipped['forwarder_median_cpu_us']:.1f} us, "
        f"minimal {shipped['minimal_median_cpu_us']:.1f} us"
    )
    for s in sweep:
        print(f"{s['label']}: median ratio {s['median_ratio']:.3f}")
    print(f"peak RSS after {rss['lines']} lines: {rss['peak_rss_mib']:.1f} MiB")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
