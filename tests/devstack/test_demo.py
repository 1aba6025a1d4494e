"""`make demo` (python -m devstack.demo) does what the README says, and leaves nothing behind.

Each case runs the demo as a user would, in its own process, and checks what
it printed: every step, the archived key, the alert, status, the Athena
query; then that its temporary folder is gone and no process of it runs.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devstack.processes import processes_under

REPO = Path(__file__).resolve().parents[2]
RSYSLOGD = any(os.access(os.path.join(d, "rsyslogd"), os.X_OK) for d in ("/usr/sbin", "/sbin"))
WORK_RE = re.compile(r"(/\S*/omprog-demo-[A-Za-z0-9_]+)/")
KEY_RE = re.compile(
    r"^logs/dt=\d{4}-\d\d-\d\d/device=pi-0001/\d{8}T\d{6}Z-[0-9a-f]{16}\.jsonl\.gz$", re.M
)


def demo(*args: str, timeout: float = 170) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OMPROG_"))}
    return subprocess.run(
        [sys.executable, "-m", "devstack.demo", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_left_nothing(output: str) -> None:
    found = WORK_RE.search(output)
    assert found, "the demo names its folder in what it prints"
    work = found.group(1)
    assert not os.path.exists(work)
    assert processes_under(work) == []
    assert "no process left; temporary folder removed" in output


def assert_showed_the_pipeline(out: str, steps: int) -> None:
    for n in range(1, steps + 1):
        assert re.search(rf"^\[{n}/{steps}\] .* done in \d+\.\d s$", out, re.M), f"step {n}:\n{out}"
    assert KEY_RE.search(out), out
    assert "✓ api" in out and "✗" not in out
    assert "== 1 err+ line from pi-0001 ==" in out
    assert "sensor read failed: I/O error" in out
    assert "<!channel>" in out, "the warning line is archived as sent"
    assert "last ship success batch_id=" in out
    assert re.search(r"^pi-0001\s+\d{4}-\d\d-\d\d\s+1$", out, re.M), "one error today"


@pytest.mark.skipif(not RSYSLOGD, reason="rsyslogd is not installed (apt-get install rsyslog)")
def test_the_demo_runs_the_whole_pipeline_through_rsyslogd_in_under_two_minutes() -> None:
    started = time.monotonic()
    proc = demo()
    took = time.monotonic() - started
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "starting rsyslogd -n" in out and "sending lines with logger" in out
    assert_showed_the_pipeline(out, 8)
    assert_left_nothing(out)
    assert took < 120, f"{took:.0f} s"


def test_without_rsyslogd_the_demo_says_so_and_feeds_run_directly() -> None:
    """Forced with --no-rsyslog here; without rsyslogd installed it says that instead."""
    proc = demo("--no-rsyslog")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "--no-rsyslog was given (the real thing: apt-get install rsyslog)" in out
    assert "feeding omprog-forwarder run over stdin" in out
    assert "– rsyslog      not checked" in out
    assert_showed_the_pipeline(out, 7)
    assert_left_nothing(out)


def test_where_rsyslogd_is_missing_the_demo_says_how_to_install_it() -> None:
    """rsyslogd out of PATH (it lives in /usr/sbin): what a machine without it sees."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OMPROG_"))}
    env["PATH"] = os.pathsep.join(
        d for d in env.get("PATH", "").split(os.pathsep) if not d.rstrip("/").endswith("sbin")
    )
    proc = subprocess.run(
        [sys.executable, "-m", "devstack.demo"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rsyslogd is not installed (the real thing: apt-get install rsyslog)" in proc.stdout
    assert_showed_the_pipeline(proc.stdout, 7)
    assert_left_nothing(proc.stdout)


def test_a_failing_step_is_named_with_its_reason_and_everything_is_stopped() -> None:
    proc = demo("--device-id", "Pi-01", "--no-rsyslog")
    assert proc.returncode == 1
    assert "[2/7] provisioning device Pi-01 (omprog-forwarder provision) ... FAILED" in proc.stdout
    assert "FAILED at step 2: provisioning device Pi-01" in proc.stderr
    assert "use lower case ('pi-01')" in proc.stderr
    assert_left_nothing(proc.stdout)


@pytest.mark.skipif(not RSYSLOGD, reason="rsyslogd is not installed (apt-get install rsyslog)")
def test_ctrl_c_stops_everything_it_started() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OMPROG_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack.demo"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = ""
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    while "[5/8]" not in seen and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
    assert "[5/8]" in seen, seen
    work = WORK_RE.search(seen).group(1)
    assert processes_under(work), "rsyslogd and the forwarder are running"
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err
    assert "interrupted during:" in err
    assert_left_nothing(seen + rest)


def test_the_alert_story_shows_a_digest_a_silent_device_and_its_return() -> None:
    """make demo-alerts (here without rsyslogd, which only adds the urgent seals' 10 s)."""
    proc = demo("--alerts", "--no-rsyslog")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert_showed_the_pipeline(out, 11)
    story = out[out.index("[7/11]") :]
    assert "--- Slack after those three errors\n(no message)" in story, "folded, not posted"
    assert "== Digest: 3 err+ lines from pi-0001 ==" in story
    assert "By severity crit 1, err 2" in story
    assert re.search(r"== pi-0001 has sent nothing for \d+ min ==", story)
    assert re.search(r"== pi-0001 is back after \d+ min ==", story)
    assert_left_nothing(out)
