"""Reliability of the rsyslog action settings on 8.2302, measured: lost and duplicated lines.

For each (useTransactions, queue.dequeueBatchSize) it runs the two disruptive
scenarios of the end-to-end tests and counts, by sequence number, what was
lost and what was duplicated in the sealed batches:

  restart  rsyslogd stopped (SIGTERM) while its action queue holds lines,
           then started again and fed more lines
  kill     the forwarder SIGKILLed mid-stream, rsyslog restarts it

    .venv/bin/python bench/bench_rsyslog_settings.py [--quick] [--lines 20000] [--json FILE]
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import signal
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # devstack
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from support.rsyslogd import (  # noqa: E402
    Rsyslogd,
    forwarder_binary,
    forwarder_pids,
    send_lines,
    syslog_line,
)

from omprog_forwarder.spool import decode_records  # noqa: E402

SEQ_RE = re.compile(r"seq=(\d{8})")


def seqs(spool_dir: str, folders=("ready", "open")) -> collections.Counter:
    out: collections.Counter = collections.Counter()
    for folder in folders:
        for path in glob.glob(os.path.join(spool_dir, folder, "*")):
            try:
                with open(path, "rb") as fh:
                    lines, _ = decode_records(fh.read())
            except FileNotFoundError:
                continue  # sealed meanwhile: counted on the next look
            for line in lines:
                rec = json.loads(line)
                if rec.get("app") == "fwdtest":
                    out[int(SEQ_RE.search(rec["msg"]).group(1))] += 1
    return out


def wait_total(spool_dir: str, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(seqs(spool_dir)) < n:
        time.sleep(0.2)


def verdict(spool_dir: str, n: int) -> dict[str, int]:
    got = seqs(spool_dir, ("ready",))
    return {
        "lost": sum(1 for i in range(n) if got[i] == 0),
        "duplicated": sum(c - 1 for c in got.values() if c > 1),
    }


def scenario_restart(tmp: str, n: int, overrides: dict[str, str]) -> dict[str, int]:
    spool_dir = os.path.join(tmp, "spool")
    work = os.path.join(tmp, "rsyslog")
    os.makedirs(work)
    slow = os.path.join(tmp, "slow-start.sh")
    with open(slow, "w") as fh:
        fh.write(f"#!/bin/sh\nsleep 3\nexec {forwarder_binary(spool_dir)}\n")
    os.chmod(slow, 0o755)
    with Rsyslogd(work, slow, overrides) as rs:
        send_lines(rs.port, (syslog_line(i) for i in range(n // 2)))
        time.sleep(1.0)
    with Rsyslogd(work, forwarder_binary(spool_dir), overrides) as rs:
        send_lines(rs.port, (syslog_line(i) for i in range(n // 2, n)))
        wait_total(spool_dir, n, 60)
    return verdict(spool_dir, n)


def scenario_kill(tmp: str, n: int, overrides: dict[str, str]) -> dict[str, int]:
    spool_dir = os.path.join(tmp, "spool")
    work = os.path.join(tmp, "rsyslog")
    os.makedirs(work)
    rs = Rsyslogd(work, forwarder_binary(spool_dir), overrides)
    with rs:
        send_lines(rs.port, (syslog_line(i) for i in range(n)))
        deadline = time.monotonic() + 30
        while len(seqs(spool_dir)) < n // 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        for pid in forwarder_pids(spool_dir):
            os.kill(pid, signal.SIGKILL)
        wait_total(spool_dir, n, 90)
    return verdict(spool_dir, n)


def stop_on_sigterm() -> None:
    """SIGTERM (bench/run_all.py stopping us) unwinds like Ctrl-C: every `with` stops
    the rsyslogd and programs it started."""

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the shipped setting only, 5000 lines")
    ap.add_argument("--lines", type=int, help="lines per case (default 20000)")
    ap.add_argument("--batch-sizes", help="dequeueBatchSize values (default 1,128,1024)")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = ap.parse_args()
    stop_on_sigterm()
    lines = args.lines or (5000 if args.quick else 20000)
    sizes = args.batch_sizes or ("1024" if args.quick else "1,128,1024")
    modes = ("on",) if args.quick else ("on", "off")
    started = time.monotonic()
    rows = []
    print(f"{'useTransactions':<16}{'batch':>6}  {'scenario':<8} {'lost':>6} {'dup':>6}")
    for tx in modes:
        for size in sizes.split(","):
            overrides = {"useTransactions": tx, "queue.dequeueBatchSize": size}
            row = {"useTransactions": tx, "dequeueBatchSize": int(size)}
            for name, scenario in (("restart", scenario_restart), ("kill", scenario_kill)):
                with tempfile.TemporaryDirectory(prefix="bench-settings-") as tmp:
                    r = scenario(tmp, lines, overrides)
                row[name] = r
                print(
                    f"{tx:<16}{size:>6}  {name:<8} {r['lost']:>6} {r['duplicated']:>6}", flush=True
                )
            rows.append(row)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(
                {"lines": lines, "rows": rows, "wall_s": time.monotonic() - started}, fh, indent=1
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
