"""`make devstack` (python -m devstack): up until Ctrl-C, and the commands it prints work.

The test pastes what it printed into a shell, as a user would: the export
lines, provision, check, and a line through `run`; then it presses Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_printed_commands_provision_check_and_ship_a_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OMPROG_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    stack = subprocess.Popen(
        [sys.executable, "-m", "devstack"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        printed = []
        deadline = time.monotonic() + 60
        assert stack.stdout is not None
        while time.monotonic() < deadline:
            line = stack.stdout.readline()
            if not line or line.startswith("Ctrl-C stops"):
                break
            printed.append(line.rstrip("\n"))
        assert any(line.startswith("endpoint    http://127.0.0.1:") for line in printed), printed
        script = [
            line for line in printed if line.startswith(("export ", "omprog-forwarder ", "printf "))
        ]
        assert [s.split()[0] for s in script].count("export") >= 5
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", "\n".join(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "✓ api" in result.stdout and "✗" not in result.stdout
        assert result.stdout.rstrip().endswith("OK\nOK"), "run answered the line"
        assert (tmp_path / "pi-0001.conf").stat().st_mode & 0o777 == 0o600
        # The line was sealed at EOF and the shipper started: the archive gets it.
        deadline = time.monotonic() + 30
        ready = tmp_path / "spool" / "ready"
        while time.monotonic() < deadline and (not ready.exists() or any(ready.iterdir())):
            time.sleep(0.2)
        assert ready.exists() and not any(ready.iterdir()), "shipped"
    finally:
        stack.send_signal(signal.SIGINT)
        out, err = stack.communicate(timeout=30)
    assert stack.returncode == 0, err
    assert out.rstrip().endswith("stopped.")
