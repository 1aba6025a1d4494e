"""`make bench`: run every benchmark in bench/ in one go and write docs/BENCHMARKS.md.

    .venv/bin/python bench/run_all.py                 # the full run (about 12 minutes here)
    .venv/bin/python bench/run_all.py --quick         # a smoke run (about 1.5 minutes)
    .venv/bin/python bench/run_all.py --out DIR       # write the report and plots to DIR
    .venv/bin/python bench/run_all.py --json FILE     # also keep every result as JSON
    .venv/bin/python bench/run_all.py --from-json FILE  # only render a kept run again

Each benchmark runs as its own process (so one's memory and threads cannot
colour another's figures) and writes its results as JSON; this script adds
what the report must say about the run itself (the machine, the date, the
commit, the exact command of each benchmark, wall times), draws the two
plots (bench/plots.py) and renders the report (bench/report.py). If any
benchmark fails, nothing is written to the output folder: a report is
either whole or not there.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

#: (result key, script): the order they run in; CPU-sensitive ingest first.
BENCHES = [
    ("ingest", "bench_ingest.py"),
    ("settings", "bench_rsyslog_settings.py"),
    ("ship", "bench_ship.py"),
    ("lambda", "bench_lambda.py"),
    ("latency", "bench_latency.py"),
]


# ---------------------------------------------------------------- the run's facts


def _shown(path: str) -> str:
    """A path as a reader in the repository root would type it."""
    rel = os.path.relpath(path, REPO)
    return path if rel.startswith("..") else rel


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return "not found"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def machine() -> dict[str, Any]:
    """The CPU, cores, memory, kernel, Python and rsyslog this run measured on."""
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next(x.split(":", 1)[1].strip() for x in fh if x.startswith("model name"))
    except (OSError, StopIteration):
        pass
    ram_kib = 0
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            ram_kib = next(int(x.split()[1]) for x in fh if x.startswith("MemTotal:"))
    except (OSError, StopIteration):
        pass
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from support.rsyslogd import RSYSLOGD

    rsyslog = _first_line([RSYSLOGD, "-v"]) if RSYSLOGD else "not installed"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": ram_kib / 1024 / 1024,
        "kernel": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "rsyslog": " ".join(rsyslog.split(" compiled with")[0].split()),
        "tmp_fs": _fs_type(tempfile.gettempdir()),
    }


def _fs_type(path: str) -> str:
    """The file system under `path` (fdatasync costs differ: tmpfs makes it free)."""
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts", encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                mount = parts[1]
                if path.startswith(mount) and len(mount) > len(best):
                    best, kind = mount, parts[2]
    except OSError:
        pass
    return f"{kind} ({path})"


def git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=REPO, timeout=20, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


# ---------------------------------------------------------------- running them


class Runner:
    """Runs one benchmark at a time; a SIGTERM stops the running one cleanly first."""

    def __init__(self) -> None:
        self.proc: Optional[subprocess.Popen[bytes]] = None
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    def run(self, argv: list[str]) -> int:
        # stdout of a benchmark goes to our stderr: this script's stdout is its own summary.
        self.proc = subprocess.Popen(argv, cwd=REPO, stdout=sys.stderr)
        try:
            return self.proc.wait()
        except KeyboardInterrupt:
            # The benchmarks stop what they started on SIGTERM (and on Ctrl-C, which
            # their whole process group got already).
            self.proc.terminate()
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            raise
        finally:
            self.proc = None


def run_benches(quick: bool, workdir: str) -> tuple[dict[str, Any], list[str]]:
    python = _shown(sys.executable)
    runner = Runner()
    results: dict[str, Any] = {}
    benches: dict[str, Any] = {}
    failed = []
    for key, script in BENCHES:
        path = os.path.join(HERE, script)
        extra = ["--quick"] if quick else []
        out = os.path.join(workdir, f"{key}.json")
        shown = " ".join([python, _shown(path), *extra])
        print(f"==> {shown}", file=sys.stderr, flush=True)
        started = time.monotonic()
        rc = runner.run([sys.executable, path, *extra, "--json", out])
        wall = time.monotonic() - started
        print(f"<== {script}: exit {rc} after {wall:.0f} s", file=sys.stderr, flush=True)
        benches[key] = {"script": f"bench/{script}", "command": shown, "wall_s": wall, "rc": rc}
        if rc != 0 or not os.path.exists(out):
            failed.append(f"{script} (exit {rc})")
            continue
        with open(out, encoding="utf-8") as fh:
            results[key] = json.load(fh)
    results["meta"] = {"benches": benches}
    return results, failed


def write_outputs(results: dict[str, Any], out_dir: str) -> str:
    import plots
    import report

    os.makedirs(out_dir, exist_ok=True)
    plots.latency_cdf(results["latency"], os.path.join(out_dir, report.LATENCY_PNG))
    plots.throughput_rounds(
        results["ingest"]["shipped"], os.path.join(out_dir, report.THROUGHPUT_PNG)
    )
    text = report.render(results)
    path = os.path.join(out_dir, report.REPORT_NAME)
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(path + ".tmp", path)
    return path


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="every benchmark's --quick mode")
    ap.add_argument(
        "--out", default=os.path.join(REPO, "docs"), help="folder for the report and plots"
    )
    ap.add_argument(
        "--json",
        metavar="FILE",
        default=os.path.join(REPO, "bench", "out", "results.json"),
        help="where every result is kept, for --from-json (default %(default)s, not committed)",
    )
    ap.add_argument("--from-json", metavar="FILE", help="render FILE (a --json of a run) again")
    args = ap.parse_args(argv)
    if args.from_json:
        with open(args.from_json, encoding="utf-8") as fh:
            results = json.load(fh)
        print(f"written: {write_outputs(results, args.out)}")
        return 0
    started = time.monotonic()
    load_start = os.getloadavg()[0]
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    facts = {
        "date": date,
        "commit": git("rev-parse", "--short=12", "HEAD") or "unknown",
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "machine": machine(),
        "quick": args.quick,
        "command": " ".join(
            [_shown(sys.executable), _shown(os.path.abspath(__file__))]
            + (["--quick"] if args.quick else [])
        ),
        "load_start": load_start,
    }
    with tempfile.TemporaryDirectory(prefix="bench-results-") as workdir:
        try:
            results, failed = run_benches(args.quick, workdir)
        except KeyboardInterrupt:
            print("interrupted: nothing written", file=sys.stderr)
            return 130
    results["meta"].update(facts)
    results["meta"]["wall_s"] = time.monotonic() - started
    results["meta"]["load_end"] = os.getloadavg()[0]
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=1)
    if failed:
        print(f"failed: {', '.join(failed)}; the report was not written", file=sys.stderr)
        return 1
    path = write_outputs(results, args.out)
    took = results["meta"]["wall_s"]
    print(f"written: {path} (and its two plots) after {took / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
