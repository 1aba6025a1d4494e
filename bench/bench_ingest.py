"""Ingest throughput through a real rsyslogd, and ingest's peak RSS after 1 M lines.

Throughput: the project's rsyslog.d action (LinkedList queue, confirmMessages)
fed by an imtcp flood on loopback; the same config runs `omprog-forwarder run`
and a minimal Python omprog program that only answers the protocol (the
ceiling for any Python omprog program). Rounds alternate between the programs
so machine noise hits both; the figure that matters is the ratio.

Memory: `omprog-forwarder run` fed 1 M lines directly over a pipe in
transactions of 128, peak RSS (VmHWM) read before EOF and ru_maxrss after.

    .venv/bin/python bench/bench_ingest.py [--lines 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from support.rsyslogd import RSYSLOGD, Rsyslogd, forwarder_binary, send_lines  # noqa: E402

SENTINEL = "bench-sentinel-end"


def flood_line(i: int, text: str, pri: int = 14) -> bytes:
    return f"<{pri}>Nov 26 23:00:00 benchhost benchapp[4242]: seq={i:09d} {text}".encode()


class SpoolTail:
    """Watches ready/ for the batch that holds the sentinel.

    The sentinel is sent at severity err, so ingest seals its batch at once
    (urgent); the check lists ready/ and reads the tail of new batches only,
    about as cheap as the minimal program's flag file.
    """

    def __init__(self, spool_dir: str) -> None:
        self.ready = os.path.join(spool_dir, "ready")
        self.seen: set[str] = set()

    def done(self) -> bool:
        try:
            names = os.listdir(self.ready)
        except FileNotFoundError:
            return False
        for name in names:
            if name in self.seen:
                continue
            self.seen.add(name)
            with open(os.path.join(self.ready, name), "rb") as fh:
                fh.seek(max(0, os.fstat(fh.fileno()).st_size - 4096))
                if SENTINEL.encode() in fh.read():
                    return True
        return False


def one_run(program: str, lines: int, overrides: dict[str, str]) -> float:
    """Messages per second for one flood of `lines` messages."""
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        spool_dir = os.path.join(tmp, "spool")
        done_file = os.path.join(tmp, "done")
        if program == "forwarder":
            binary = forwarder_binary(spool_dir)
            done = SpoolTail(spool_dir).done
        else:
            script = os.path.join(HERE, "minimal_omprog.py")
            binary = f"{sys.executable} {script} {done_file} {SENTINEL}"
            done = lambda: os.path.exists(done_file)  # noqa: E731
        work = os.path.join(tmp, "rsyslog")
        os.makedirs(work)
        rs = Rsyslogd(work, binary, overrides, internal_log=False)
        with rs:
            text = "x" * 120
            payload = [flood_line(i, text) for i in range(lines)]
            payload.append(flood_line(lines, SENTINEL, pri=11))  # user.err: urgent
            # Warm up: start the program before the clock runs.
            send_lines(rs.port, [flood_line(-1, "warm-up")])
            time.sleep(1.0)
            start = time.perf_counter()
            sender = threading.Thread(target=send_lines, args=(rs.port, payload))
            sender.start()
            deadline = start + 600
            while not done():
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"{program} did not finish: {rs.stderr()}")
                time.sleep(0.02)
            elapsed = time.perf_counter() - start
            sender.join()
        return (lines + 1) / elapsed


def peak_rss(n: int = 1_000_000, tx: int = 128) -> dict[str, float]:
    """Feed n lines straight into `run` (transactions of tx) and read its peak RSS."""
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as tmp:
        proc = subprocess.Popen(
            [sys.executable, "-m", "omprog_forwarder", "run", "--spool-dir", tmp + "/spool"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=dict(os.environ, OMPROG_FORWARDER_MAX_SPOOL_BYTES="4GiB"),
        )
        assert proc.stdout.readline() == b"OK\n"
        base = (
            '{"ts":"2026-11-26T23:00:00.000000+00:00", "host":"pi", "facility":"daemon",'
            ' "severity":6, "app":"bench", "pid":"42", "msg":" line %d %s", "uuid":"%032X"}\n'
        )

        def feed() -> None:
            for start in range(0, n, tx):
                chunk = [b"BEGIN TRANSACTION\n"]
                chunk += [
                    (base % (i, "y" * 80, i)).encode() for i in range(start, min(n, start + tx))
                ]
                chunk.append(b"COMMIT TRANSACTION\n")
                proc.stdin.write(b"".join(chunk))
            proc.stdin.flush()

        feeder = threading.Thread(target=feed)
        t0 = time.perf_counter()
        feeder.start()
        expected = n + 2 * ((n + tx - 1) // tx)
        for _ in range(expected):
            if not proc.stdout.readline():
                raise RuntimeError("forwarder stopped early")
        elapsed = time.perf_counter() - t0
        feeder.join()
        with open(f"/proc/{proc.pid}/status") as fh:
            hwm = next(int(x.split()[1]) for x in fh if x.startswith("VmHWM:"))
        proc.stdin.close()
        proc.wait()
        proc.stdout.close()
        # VmHWM of the child itself: a child's ru_maxrss on Linux also counts
        # the parent's pages it shared between fork and exec.
        return {
            "lines": n,
            "seconds": round(elapsed, 1),
            "lines_per_s_direct": round(n / elapsed),
            "peak_rss_mib": round(hwm / 1024, 1),
        }


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(x.split(":", 1)[1].strip() for x in fh if x.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-sizes", default="16,128,1024", help="dequeueBatchSize values, tx on")
    ap.add_argument("--rss-lines", type=int, default=1_000_000)
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()
    if RSYSLOGD is None:
        print("rsyslogd is not installed", file=sys.stderr)
        return 2
    configs = []
    for size in args.batch_sizes.split(","):
        configs.append(
            (
                f"tx on, batch {size}",
                {"useTransactions": "on", "queue.dequeueBatchSize": size},
                ["forwarder", "minimal"],
            )
        )
    configs.append(
        (
            "tx off, batch 1024",
            {"useTransactions": "off", "queue.dequeueBatchSize": "1024"},
            ["forwarder", "minimal"],
        )
    )
    results: dict[str, dict[str, list[float]]] = {}
    print(f"machine: {machine()}")
    print(f"rsyslogd flood of {args.lines} messages, {args.rounds} alternating rounds")
    for rnd in range(args.rounds):
        for label, overrides, programs in configs:
            order = programs if rnd % 2 == 0 else list(reversed(programs))
            for program in order:
                rate = one_run(program, args.lines, overrides)
                results.setdefault(label, {}).setdefault(program, []).append(rate)
                print(f"  round {rnd + 1} {label:<20} {program:<10} {rate:>9.0f} msg/s", flush=True)
    summary = {}
    print("\nmedian msg/s                forwarder    minimal   ratio   per-round ratios")
    for label, by_program in results.items():
        fwd = statistics.median(by_program["forwarder"])
        ceiling = statistics.median(by_program["minimal"])
        rounds = [f / m for f, m in zip(by_program["forwarder"], by_program["minimal"])]
        summary[label] = {
            "forwarder": round(fwd),
            "minimal": round(ceiling),
            "ratio": round(fwd / ceiling, 3),
            "round_ratios": [round(r, 3) for r in rounds],
        }
        shown = " ".join(f"{r:.2f}" for r in rounds)
        print(f"  {label:<24} {fwd:>10.0f} {ceiling:>10.0f}   {fwd / ceiling:.3f}   {shown}")
    rss = peak_rss(args.rss_lines)
    print(f"\npeak RSS of run after {rss['lines']} lines: {rss}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine(), "throughput": summary, "rss": rss}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
