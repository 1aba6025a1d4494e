"""The two figures of docs/BENCHMARKS.md, drawn from bench/run_all.py's results.

matplotlib with the Agg backend: files only, no display needed (a CI box or
an SSH session has none).
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

LATENCY_TARGET_S = 15.0


def latency_cdf(latency: dict[str, Any], path: str) -> None:
    """Both cases' latencies as empirical CDFs, with the p99 target."""
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    storm = {
        "on": " (storm control on)",
        "no-state": " (storm control off)",
        "cooldown-0": " (storm control off)",
    }
    cases = (
        ("isolated", "isolated error", "tab:blue"),
        ("steady", "steady stream, one error a second", "tab:orange"),
    )
    for key, label, colour in cases:
        values = sorted(latency[key]["latencies_s"])
        if not values:
            continue
        fraction = [(i + 1) / len(values) for i in range(len(values))]
        ax.step(
            values,
            fraction,
            where="post",
            color=colour,
            label=f"{label}{storm.get(latency[key]['storm_control']['mode'], '')}: "
            f"n={len(values)}, p50 {latency[key]['p50_s']:.2f} s, "
            f"p99 {latency[key]['p99_s']:.2f} s",
        )
    ax.axvline(LATENCY_TARGET_S, color="tab:red", linestyle="--", label="p99 target (15 s)")
    # Log scale: isolated errors take a fraction of a second, the stream up to ten.
    ax.set_xscale("log")
    ticks = [0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30]
    every = [v for k in ("isolated", "steady") for v in latency[k]["latencies_s"]] or [1.0]
    low = max(0.01, min(every) * 0.8)
    high = max(LATENCY_TARGET_S * 1.3, max(every) * 1.2)
    ax.set_xlim(low, high)
    ax.set_xticks([t for t in ticks if low <= t <= high])
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("seconds from `logger -p user.err` to the Slack sink (log scale)")
    ax.set_ylabel("fraction of errors")
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, frameon=False)
    ax.set_title("End-to-end alert latency (cumulative)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def throughput_rounds(shipped: dict[str, Any], path: str) -> None:
    """Per round: msg/s of the forwarder and of the minimal program, and the ratio."""
    rounds = shipped["rounds"]
    xs = list(range(len(rounds)))
    width = 0.38
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(8, 6), dpi=110, sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    fwd = [r["forwarder"]["rate"] for r in rounds]
    mini = [r["minimal"]["rate"] for r in rounds]
    top.bar([x - width / 2 for x in xs], fwd, width, label="omprog-forwarder run")
    top.bar([x + width / 2 for x in xs], mini, width, label="bench/minimal_omprog.py")
    for x, r in zip(xs, rounds):
        top.annotate(
            f"{r['ratio']:.2f}",
            (x, max(r["forwarder"]["rate"], r["minimal"]["rate"])),
            textcoords="offset points",
            xytext=(0, 3),
            ha="center",
            fontsize=8,
        )
    top.set_ylabel("msg/s taken from the action queue")
    top.set_title("Ingest throughput through rsyslogd per round (label: forwarder / minimal)")
    top.legend(loc="lower right", fontsize=8)
    top.grid(True, axis="y", alpha=0.3)
    bottom.bar(
        [x - width / 2 for x in xs], [r["forwarder"]["cpu_us_per_line"] for r in rounds], width
    )
    bottom.bar(
        [x + width / 2 for x in xs], [r["minimal"]["cpu_us_per_line"] for r in rounds], width
    )
    bottom.set_ylabel("program CPU, µs per line")
    bottom.grid(True, axis="y", alpha=0.3)
    bottom.set_xticks(xs)
    bottom.set_xticklabels(
        [
            f"round {r['round']}\n({'F, M' if r['order'][0] == 'forwarder' else 'M, F'})"
            for r in rounds
        ]
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
