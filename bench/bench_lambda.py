"""Benchmark of the Lambda function: parse speed against the how-to's parser, and peak memory.

Run from the repository root::

    .venv/bin/python bench/bench_lambda.py            # full run (about 30 s on 2 cores)
    .venv/bin/python bench/bench_lambda.py --quick    # smaller, for a smoke test
    .venv/bin/python bench/bench_lambda.py --json FILE  # also write the results as JSON

1. **Throughput.** One 100 000-line corpus of mixed formats (the project's
   JSON template, the how-to's CustomLogFormat with ``T`` and with a space,
   rsyslog's file format, RFC 5424, RFC 3164, and 5 % broken lines). The
   baseline is the how-to's parser: ``line.split(None, 5)`` into five fields
   and ``json.dumps`` (guarded so that short lines do not crash it as they
   crash the how-to). The project side is ``parse_line`` + ``encode_record``,
   which is what the handler does per line before gzip. Both run on the same
   lines in one process, interleaved in 5 000-line chunks in alternating
   order, timed in CPU time of this process (``time.process_time``) so that
   other jobs on a shared machine count less; the median of the per-round
   ratios is reported with its range. Gzip of the archive object is timed
   separately (the baseline does not compress).
2. **Memory.** The handler on one batch at ``MAX_BATCH_BYTES`` of decompressed
   JSON body, sent as API Gateway would (gzip, base64), each measurement in a
   fresh child process: peak Python allocations during the call
   (``tracemalloc``, in one child), and peak RSS (``VmHWM`` of
   ``/proc/self/status``, in another child without tracemalloc), for the whole process and as the
   rise over the idle interpreter with the function imported. S3 is a
   discard stub there (moto would keep the object in the same process and
   count it), Slack is off, identity is off.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lambda"))

import archive  # noqa: E402
import parsing  # noqa: E402

HOSTS = ["raspberrypi", "pi-kitchen", "gw01", "sensor-17.lan", "vm"]
APPS = [
    ("sshd", True),
    ("dhcpcd", True),
    ("kernel", False),
    ("systemd", True),
    ("CRON", True),
    ("rsyslogd", False),
    ("myapp", True),
    ("wpa_supplicant", True),
]
FACILITIES = ["kern", "user", "daemon", "auth", "syslog", "cron", "authpriv", "local0"]
SEVERITIES = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"]
SEV_WEIGHTS = [1, 1, 2, 6, 10, 15, 55, 10]
WORDS = [
    "wlan0",
    "eth0",
    "address",
    "lease",
    "renewed",
    "failed",
    "accepted",
    "publickey",
    "for",
    "user",
    "from",
    "port",
    "ssh2",
    "connection",
    "closed",
    "by",
    "session",
    "opened",
    "timeout",
    "retrying",
    "disk",
    "/dev/mmcblk0p2",
    "temperature",
    "throttled",
    "voltage",
    "under-voltage",
    "detected",
    "Started",
    "Stopped",
    "unit",
    "service",
    "error",
]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
NOW = datetime(2026, 11, 26, 23, 10, tzinfo=timezone.utc)
CHUNK = 5000


def make_corpus(n: int, seed: int = 42) -> list[str]:
    """A deterministic mix of every format the function reads, plus broken lines."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        when = NOW - timedelta(seconds=n - i, microseconds=rng.randrange(1_000_000))
        host = rng.choice(HOSTS)
        app, has_pid = rng.choice(APPS)
        pid = str(rng.randrange(100, 40000)) if has_pid else "-"
        fac = rng.choice(FACILITIES)
        sev = rng.choices(range(8), SEV_WEIGHTS)[0]
        msg = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(3, 25)))
        if rng.random() < 0.05:
            msg += ' "quoted" <!channel> & tab#011x'
        tag = f"{app}[{pid}]:" if pid != "-" else f"{app}:"
        kind = rng.random()
        if kind < 0.35:
            lines.append(
                json.dumps(
                    {
                        "ts": when.isoformat(),
                        "host": host,
                        "facility": fac,
                        "severity": sev,
                        "app": app,
                        "pid": pid,
                        "msg": " " + msg,
                        "uuid": f"{rng.getrandbits(128):032X}",
                    },
                    separators=(", ", ":"),
                )
            )
        elif kind < 0.60:
            sep = " " if rng.random() < 0.5 else "T"
            sev_name = (
                rng.choice(["error", "critical", "warn"]) if rng.random() < 0.2 else SEVERITIES[sev]
            )
            lines.append(
                f"{when:%Y-%m-%d}{sep}{when:%H:%M:%S} {host} {fac}.{sev_name}: {tag} {msg}"
            )
        elif kind < 0.75:
            lines.append(f"{when.isoformat()} {host} {tag} {msg}")
        elif kind < 0.85:
            pri = FACILITIES.index(fac) * 8 + sev
            ts = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            sd = f'[meta sequenceId="{i}"]' if rng.random() < 0.3 else "-"
            lines.append(f"<{pri}>1 {ts} {host} {app} {pid} - {sd} {msg}")
        elif kind < 0.95:
            pri = FACILITIES.index(fac) * 8 + sev
            lines.append(
                f"<{pri}>{MONTHS[when.month - 1]} {when.day:2d} {when:%H:%M:%S} {host} {tag} {msg}"
            )
        else:
            broken = rng.choice(
                [msg, msg[:5], "{" + msg, "", f"<999>{msg}", f"2026-13-45 00:00:00 {msg}"]
            )
            lines.append(broken)
    return lines


def howto_line(line: str) -> str:
    """The published how-to's parser, minus its crash on lines with fewer than six fields."""
    parts = line.split(None, 5)
    if len(parts) < 6:
        return json.dumps({"message": line})
    return json.dumps(
        {
            "timestamp": f"{parts[0]} {parts[1]}",
            "hostname": parts[2],
            "component": parts[3],
            "process": parts[4],
            "message": parts[5],
        }
    )


def time_baseline(lines: list[str]) -> float:
    start = time.process_time()
    for line in lines:
        howto_line(line)
    return time.process_time() - start


def time_project(lines: list[str]) -> float:
    parse, encode, ref = parsing.parse_line, archive.encode_record, NOW
    tail = archive.record_tail("pi-kitchen", "20261126T231000Z-1a2b3c4d5e6f7a8b")
    start = time.process_time()
    for line in lines:
        encode(parse(line, ref), tail)
    return time.process_time() - start


def time_encode_batch(lines: list[str]) -> tuple[float, int]:
    start = time.process_time()
    encoded = archive.encode_batch(
        lines, "pi-kitchen", "20261126T231000Z-1a2b3c4d5e6f7a8b", NOW, 3, lambda record: None
    )
    return time.process_time() - start, len(encoded.body)


def throughput(n: int, rounds: int) -> dict[str, float]:
    lines = make_corpus(n)
    time_baseline(lines[:2000])
    time_project(lines[:2000])  # warm caches and the regex engine
    chunks = [lines[i : i + CHUNK] for i in range(0, n, CHUNK)]
    base, ours, ratios = [], [], []
    for _ in range(rounds):
        b = o = 0.0
        for index, chunk in enumerate(chunks):
            # Interleaved chunk by chunk, in alternating order, so that a burst of
            # load from elsewhere on the machine hits both parsers alike.
            if index % 2:
                o += time_project(chunk)
                b += time_baseline(chunk)
            else:
                b += time_baseline(chunk)
                o += time_project(chunk)
        base.append(n / b)
        ours.append(n / o)
        ratios.append(b / o)
    gz_times = [time_encode_batch(lines) for _ in range(max(1, rounds // 2))]
    formats: dict[str, int] = {}
    for line in lines:
        fmt = parsing.parse_line(line, NOW)["format"]
        formats[fmt] = formats.get(fmt, 0) + 1
    return {
        "lines": n,
        "rounds": rounds,
        "baseline_lps": statistics.median(base),
        "project_lps": statistics.median(ours),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "with_gzip_lps": n / statistics.median(t for t, _ in gz_times),
        "corpus_bytes": sum(len(line) + 1 for line in lines),
        "gzip_bytes": gz_times[0][1],
        "formats": formats,
    }


def build_cap_event(max_bytes: int, path: Path) -> dict[str, int]:
    """Write an API Gateway proxy event whose body inflates to just under ``max_bytes``."""
    corpus = make_corpus(20000, seed=7)
    logs: list[str] = []
    size = len(
        '{"device_id": "pi-kitchen", "batch_id": "20261126T231000Z-1a2b3c4d5e6f7a8b", '
        '"timestamp": "2026-11-26T23:10:00+00:00", "logs": []}'
    )
    i = 0
    while True:
        line = corpus[i % len(corpus)]
        cost = len(json.dumps(line)) + 2
        if size + cost > max_bytes:
            break
        logs.append(line)
        size += cost
        i += 1
    body = json.dumps(
        {
            "device_id": "pi-kitchen",
            "batch_id": "20261126T231000Z-1a2b3c4d5e6f7a8b",
            "timestamp": "2026-11-26T23:10:00+00:00",
            "logs": logs,
        }
    ).encode()
    compressed = gzip.compress(body, 6)
    event = {
        "resource": "/logs",
        "path": "/logs",
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/gzip"},
        "requestContext": {"requestId": "bench"},
        "body": base64.b64encode(compressed).decode(),
        "isBase64Encoded": True,
    }
    path.write_text(json.dumps(event))
    return {
        "lines": len(logs),
        "body_bytes": len(body),
        "gzip_bytes": len(compressed),
        "event_bytes": path.stat().st_size,
    }


def peak_rss() -> int:
    """Peak RSS of this process image, bytes.

    ``VmHWM`` rather than ``getrusage().ru_maxrss``: Linux carries ru_maxrss
    over ``fork``/``exec``, so a child would report its parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(event_path: str, mode: str, max_bytes: int) -> None:
    """Run in a fresh process: load the event, then measure one handler call."""
    import handler

    class DiscardS3:
        stored = 0

        def put_object(self, **kwargs: object) -> dict:
            DiscardS3.stored = len(kwargs["Body"])  # type: ignore[arg-type]
            return {}

    idle = peak_rss()
    event = json.loads(Path(event_path).read_text())
    deps = handler.Dependencies(
        s3=DiscardS3,
        cognito=lambda: None,
        transport=None,
        sleep=time.sleep,  # type: ignore[arg-type]
        clock=time.monotonic,
        environ={
            "BUCKET_NAME": "bench",
            "REQUIRE_IDENTITY": "false",
            "WEBHOOK_URL": "",
            "MAX_BATCH_BYTES": str(max_bytes),
        },
    )
    result: dict[str, object] = {}
    if mode == "tracemalloc":
        import tracemalloc

        tracemalloc.start()
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        response = handler.handle(event, None, deps)
        result["tracemalloc_peak"] = tracemalloc.get_traced_memory()[1] - before
        tracemalloc.stop()
    else:
        import psutil

        before = peak_rss()
        start = time.perf_counter()
        response = handler.handle(event, None, deps)
        result["seconds"] = time.perf_counter() - start
        result["maxrss_idle"] = idle
        result["maxrss_before"] = before
        result["maxrss_after"] = peak_rss()
        result["rss_end"] = psutil.Process().memory_info().rss
    result["status"] = response["statusCode"]
    result["stored_bytes"] = DiscardS3.stored
    print(json.dumps(result))


def memory(max_bytes: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "event.json"
        info: dict[str, object] = dict(build_cap_event(max_bytes, path))
        for mode in ("rss", "tracemalloc"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(path), mode, str(max_bytes)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            info.update(json.loads(out.strip().splitlines()[-1]))
    return info


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    version = platform.python_version()
    return f"{model}, {os.cpu_count()} cores, Python {version} ({platform.machine()})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k lines, 3 rounds, 4 MiB batch")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    started = time.monotonic()
    n, rounds, cap = (10_000, 3, 4 * 2**20) if args.quick else (100_000, 7, 32 * 2**20)
    print(f"machine: {machine()}")
    t = throughput(n, rounds)
    print(
        f"corpus: {t['lines']} lines, {t['corpus_bytes'] / 2**20:.1f} MiB, formats {t['formats']}"
    )
    print(f"baseline (split(None, 5) + json.dumps): {t['baseline_lps']:,.0f} lines/s")
    print(f"project  (parse_line + encode_record):  {t['project_lps']:,.0f} lines/s")
    print(
        f"ratio project/baseline: {t['ratio']:.2f} (median of {rounds} alternating rounds; "
        f"min {t['ratio_min']:.2f}, max {t['ratio_max']:.2f}; target >= 0.50)"
    )
    print(
        f"project with gzip (encode_batch): {t['with_gzip_lps']:,.0f} lines/s, "
        f"archive object {t['gzip_bytes'] / 2**20:.1f} MiB"
    )
    m = memory(cap)
    mib = 2**20
    print(
        f"batch at cap: {m['lines']} lines, body {m['body_bytes'] / mib:.1f} MiB, "
        f"gzip {m['gzip_bytes'] / mib:.2f} MiB, event {m['event_bytes'] / mib:.2f} MiB, "
        f"status {m['status']}, archive object {m['stored_bytes'] / mib:.2f} MiB, "
        f"handler time {m['seconds']:.2f} s"
    )
    print(
        "peak Python allocations during the call (tracemalloc): "
        f"{m['tracemalloc_peak'] / mib:.0f} MiB"
    )
    print(
        "peak RSS (VmHWM, no tracemalloc): "
        f"{m['maxrss_after'] / mib:.0f} MiB for the whole process; "
        f"{(m['maxrss_after'] - m['maxrss_idle']) / mib:.0f} MiB over the idle interpreter "
        f"with the function imported ({m['maxrss_idle'] / mib:.0f} MiB), event included"
    )
    if args.json:
        result = {
            "quick": args.quick,
            "cap_bytes": cap,
            "throughput": t,
            "memory": m,
            "wall_s": time.monotonic() - started,
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
