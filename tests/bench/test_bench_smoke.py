"""`make bench` end to end in its quick mode: the whole report, every figure a number.

A benchmark's figures depend on the machine, so nothing here asserts a
timing or a target: it pins that `bench/run_all.py --quick` runs every
benchmark, writes every section of the report with a number for each figure
(and a verdict wherever there is a target), draws both plots, references
them, and leaves no process of its own running.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.rsyslogd import RSYSLOGD

REPO = Path(__file__).resolve().parents[2]
# bench/ is not a package: load its report module under a name of its own.
_spec = importlib.util.spec_from_file_location("bench_report", REPO / "bench" / "report.py")
assert _spec is not None and _spec.loader is not None
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.rsyslog,
    pytest.mark.skipif(
        RSYSLOGD is None, reason="rsyslogd is not installed (apt-get install rsyslog)"
    ),
    pytest.mark.skipif(
        shutil.which("logger") is None, reason="logger is not installed (apt-get install bsdutils)"
    ),
]
#: The prefixes of the temporary folders the benchmarks run their processes in.
BENCH_FOLDERS = re.compile(rb"/bench-(ingest|rss|settings|ship|lat|results)-")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def summary_rows(text: str) -> list[list[str]]:
    section = text.split("## Summary\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows[1:]]


def numbers(node: object) -> list[float]:
    if isinstance(node, bool):
        return []
    if isinstance(node, (int, float)):
        return [float(node)]
    if isinstance(node, dict):
        return [x for v in node.values() for x in numbers(v)]
    if isinstance(node, list):
        return [x for v in node for x in numbers(v)]
    return []


def bench_processes() -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if BENCH_FOLDERS.search(cmdline):
            found.append(f"{entry}: {cmdline[:200]!r}")
    return found


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict]:
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "out"
    done = subprocess.run(
        [sys.executable, "bench/run_all.py", "--quick", "--out", str(out)]
        + ["--json", str(tmp / "results.json")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-6000:]
    text = (out / report.REPORT_NAME).read_text(encoding="utf-8")
    results = json.loads((tmp / "results.json").read_text(encoding="utf-8"))
    return out, text, results


def test_every_section_is_there_in_order(quick_run):
    _, text, _ = quick_run
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert [s for s in report.SECTIONS if s not in headings] == []
    positions = [headings.index(s) for s in report.SECTIONS]
    assert positions == sorted(positions)


def test_every_figure_is_a_number_with_a_verdict_where_there_is_a_target(quick_run):
    _, text, _ = quick_run
    rows = summary_rows(text)
    assert len(rows) >= 15
    for figure, value, target, verdict, measured_by in rows:
        assert re.search(r"\d", value), (figure, value)
        assert not re.search(r"\b(nan|inf|None)\b", value), (figure, value)
        assert verdict in ("met", "**not met**", "—"), (figure, verdict)
        assert (verdict == "—") == (target == "—"), (figure, target, verdict)
        assert measured_by.startswith("`bench/"), measured_by
    prose = re.sub(r"`[^`]*`", "", text)  # code may say None (`split(None, 5)`)
    assert not re.search(r"\b(nan|None)\b", prose)


def test_the_report_says_how_to_reproduce_and_where_it_ran(quick_run):
    _, text, results = quick_run
    meta = results["meta"]
    assert meta["commit"] in text and meta["date"] in text
    for key in ("cpu", "kernel", "python", "rsyslog"):
        assert str(meta["machine"][key]) in text
    for bench in meta["benches"].values():
        assert f"```sh\n{bench['command']}\n```" in text


def test_every_result_is_a_finite_number(quick_run):
    _, _, results = quick_run
    values = numbers(results)
    assert values and all(math.isfinite(v) for v in values)


def test_both_plots_are_written_and_referenced(quick_run):
    out, text, _ = quick_run
    for name in (report.LATENCY_PNG, report.THROUGHPUT_PNG):
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000, name
        assert f"]({name})" in text


def test_no_benchmark_process_is_left_running(quick_run):
    assert bench_processes() == []
