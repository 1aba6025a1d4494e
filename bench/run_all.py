"""Run every benchmark in bench/ one after the other (`make bench`).

Each prints its own figures; docs/BENCHMARKS.md records them with the machine.
"""

from __future__ import annotations

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHES = ["bench_ingest.py", "bench_rsyslog_settings.py", "bench_ship.py", "bench_lambda.py"]


def main() -> int:
    failed = []
    for name in BENCHES:
        print(f"==> {name}", flush=True)
        rc = subprocess.call([sys.executable, os.path.join(HERE, name)])
        if rc:
            failed.append(f"{name} (exit {rc})")
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
