"""`omprog-forwarder status`: what is in the spool and how shipping went."""

from __future__ import annotations

import json
import time
from typing import Any

from omprog_forwarder.config import Config
from omprog_forwarder.spool import (
    CLOCK_STATE,
    COUNTERS_STATE,
    SHIP_STATE,
    Spool,
    decode_records,
)


def _held_bytes(path: str) -> int:
    """Bytes of intact records in an open segment. Not its file size: the owner
    reserves space ahead of the records (zeros), so the size says little."""
    try:
        with open(path, "rb") as fh:
            return decode_records(fh.read())[1]
    except FileNotFoundError:
        return 0


def collect(spool: Spool, now: float) -> dict[str, Any]:
    """The status as a dict (the `--json` output). Reads names and sizes, and the
    open segments (a few MiB at most)."""
    ready = spool.ready_batches()
    dead = spool.dead_batches()
    open_segments = spool.open_segments()
    open_bytes = sum(_held_bytes(path) for path in open_segments)
    oldest = min((b.mtime for b in ready), default=None)
    ship = spool.read_state(SHIP_STATE)
    return {
        "spool_dir": spool.root,
        "ready": {
            "batches": len(ready),
            "bytes": sum(b.size for b in ready),
            "lines": sum(b.lines for b in ready),
            "oldest_age_seconds": None if oldest is None else round(max(0.0, now - oldest), 1),
        },
        "open": {"segments": len(open_segments), "bytes": open_bytes},
        "dead": {
            "batches": len(dead),
            "bytes": sum(b.size for b in dead),
            "lines": sum(b.lines for b in dead),
        },
        "counters": spool.read_state(COUNTERS_STATE),
        "last_ship_success": ship.get("last_success"),
        "last_ship_error": ship.get("last_error"),
        "clock_offset_seconds": spool.read_state(CLOCK_STATE).get("offset_seconds"),
    }


def render(info: dict[str, Any]) -> str:
    r, o, d = info["ready"], info["open"], info["dead"]
    age = "-" if r["oldest_age_seconds"] is None else f"{r['oldest_age_seconds']:.0f} s"
    lines = [
        f"spool        {info['spool_dir']}",
        f"ready        {r['batches']} batches, {r['lines']} lines, {r['bytes']} bytes"
        f" (oldest {age})",
        f"open         {o['segments']} segments, {o['bytes']} bytes",
        f"dead         {d['batches']} batches, {d['lines']} lines, {d['bytes']} bytes",
    ]
    for key in ("last_ship_success", "last_ship_error"):
        value = info[key]
        if not value:
            shown = "-"
        elif isinstance(value, dict):
            shown = " ".join(f"{k}={v}" for k, v in sorted(value.items()))
        else:  # ship.json is written by another program: show what is there
            shown = str(value)
        lines.append(f"{key.replace('_', ' '):<12} {shown}")
    offset = info.get("clock_offset_seconds")
    if offset:
        lines.append(f"clock offset {offset} s (learnt from the API: this host's clock is off)")
    counters = info["counters"]
    lines.append("counters     " + ("-" if not counters else ""))
    lines.extend(f"  {k:<28} {v}" for k, v in sorted(counters.items()))
    return "\n".join(lines)


def status(cfg: Config, as_json: bool = False) -> int:
    spool = Spool(cfg.spool_dir)
    info = collect(spool, time.time())
    print(json.dumps(info, indent=2, sort_keys=True) if as_json else render(info))
    return 0
