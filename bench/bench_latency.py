"""End-to-end alert latency: `logger -p user.err` on a device to the Slack sink, default settings.

    .venv/bin/python bench/bench_latency.py            # full run (about 3.5 minutes)
    .venv/bin/python bench/bench_latency.py --quick    # smoke run (about 30 s)
    .venv/bin/python bench/bench_latency.py --json FILE

The whole chain on this machine, the same code path as production from the
device's socket to the Slack webhook: the local stack (devstack.stack.
LocalStack: moto, per-identity credentials, the SigV4-verifying gateway in
front of the real Lambda handler, the Slack sink) runs in this process; each
device is provisioned with the real CLI (`omprog-forwarder provision
--stack ...`) and runs its own real `rsyslogd -n` with the project's
rsyslog.d snippet (only the binary, the queue folder and the log file
substituted) on a private imuxsock socket, the forwarder started by rsyslog
with the provisioned `--config`, every device setting at its default
(5-minute windows, an urgent seal at most every `urgent_min_interval` =
10 s, `ship` spawned at each seal). Every error carries a unique token; the
latency of one error is from just before `logger -u SOCKET -p user.err`
runs to the moment the sink receives the Slack message that holds its token.

* Warm-up: each device runs `omprog-forwarder check` first (a fresh SRP
  login, identity-pool credentials into the 0600 cache, an empty POST), as an
  installed device did long before its next error; the shippers after it
  take the cached credentials, so no figure below includes a login.
* Isolated errors, storm control on: each error is the first alert of its
  device, more than `urgent_min_interval` (and than the cool-down) after
  the same device's previous one, sent round-robin over several devices and
  only once the previous alert arrived and its shipper exited, so nothing
  else runs in the chain meanwhile. Where the template has storm control the
  function runs with it (state table, cool-down, fleet gate), with two values
  changed (`isolated_parameters`): the cool-down at its minimum, so that a
  device's next isolated error is a first alert again sooner, and the fleet
  gate's threshold raised, so that first alerts of several devices within a
  minute are not folded into one fleet message. Neither changes the path a
  first alert takes.
* Steady stream, storm control off: one more device gets info lines at a
  steady rate plus one error a second. An error that arrives within 10 s of
  the last urgent seal waits for the next one, so the figure spans 0-10 s of
  deliberate waiting plus the pipeline. With storm control on, a device's
  errors after its first within ALERT_COOLDOWN (10 minutes by default) go
  into its digest instead; this case measures the device-to-Slack pipeline,
  so storm control is off (`storm_control_off`): ALERT_COOLDOWN = 0 where
  the template allows it, else the function runs without STATE_TABLE (its
  stateless mode, in which every alerting batch is posted).

Each case runs on a local stack of its own. Percentiles are nearest-rank:
with fewer than 100 samples p99 is the maximum.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

from support.rsyslogd import RSYSLOGD, render_project_conf  # noqa: E402

from devstack.demo import forwarder_command  # noqa: E402
from devstack.processes import processes_under  # noqa: E402
from devstack.stack import LocalStack  # noqa: E402
from devstack.template import FUNCTION, load_template  # noqa: E402

LOGGER = shutil.which("logger")
#: Default `urgent_min_interval` (omprog_forwarder/config.py) plus a margin.
ISOLATION_S = 11.0
TAG = "benchlat"
ALERT_TIMEOUT_S = 60.0


# ---------------------------------------------------------------- storm control


def _function_env(template: dict[str, Any]) -> dict[str, Any]:
    env: dict[str, Any] = {}
    glob = template.get("Globals", {}).get("Function", {})
    env.update(glob.get("Environment", {}).get("Variables", {}))
    props = template.get("Resources", {}).get(FUNCTION, {}).get("Properties", {})
    env.update(props.get("Environment", {}).get("Variables", {}))
    return env


def _parameter_for(template: dict[str, Any], variable: str, hint: str) -> Optional[str]:
    """The template parameter that feeds the function's `variable`, if any."""
    params = template.get("Parameters", {})
    ref = _function_env(template).get(variable)
    if isinstance(ref, dict) and ref.get("Ref") in params:
        return str(ref["Ref"])
    named = [p for p in params if hint in p.lower()]
    return named[0] if len(named) == 1 else None


def _number(spec: dict[str, Any], key: str, default: float) -> float:
    try:
        return float(spec.get(key, default))
    except (TypeError, ValueError):
        return default


def _fleet(template: dict[str, Any], out: dict[str, Any]) -> str:
    """Raise the fleet gate's threshold (when the template has one); what was done."""
    fleet = _parameter_for(template, "FLEET_THRESHOLD", "fleet")
    if fleet is None:
        return ""
    out[fleet] = int(_number(template["Parameters"][fleet], "MaxValue", 1_000_000))
    return f"; {fleet} = {out[fleet]} (no fleet message)"


def isolated_parameters(template: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Template parameters for the isolated case, the cool-down used, and what was done."""
    params = template.get("Parameters", {})
    out: dict[str, Any] = {}
    cooldown = _parameter_for(template, "ALERT_COOLDOWN", "cooldown")
    if cooldown is None:
        return out, {
            "mode": "absent",
            "cooldown_s": 0.0,
            "text": "none in this template (no ALERT_COOLDOWN parameter): every alerting "
            "batch is posted at once",
        }
    low = max(0.0, _number(params[cooldown], "MinValue", 0.0))
    out[cooldown] = int(low)
    text = f"on, {cooldown} = {int(low)} (its minimum)" + _fleet(template, out)
    return out, {"mode": "on", "cooldown_s": low, "text": text, "parameters": out}


def storm_control_off(template: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Template parameters that switch the Lambda's storm control off, and what was done.

    devstack/template.py refuses a parameter the template does not have, so
    each is passed only when the template declares it. ALERT_COOLDOWN = 0 when
    the template allows it; without the parameter this Lambda has no storm
    control and posts every alerting batch. If the cool-down cannot be 0
    (MinValue above it), mode "no-state": the caller runs the function
    without STATE_TABLE, which keeps no storm-control state and posts every
    alerting batch.
    """
    params = template.get("Parameters", {})
    cooldown = _parameter_for(template, "ALERT_COOLDOWN", "cooldown")
    if cooldown is None:
        return {}, {
            "mode": "absent",
            "text": "none in this template (no ALERT_COOLDOWN parameter): every alerting "
            "batch is posted at once",
        }
    out: dict[str, Any] = {}
    low = _number(params[cooldown], "MinValue", 0.0)
    if low <= 0:
        out[cooldown] = 0
        text = f"off, {cooldown} = 0 (ALERT_COOLDOWN = 0)"
        mode = "cooldown-0"
    else:
        text = (
            f"off; {cooldown} cannot be 0 (its MinValue is {low:g} s), so the function ran "
            "without STATE_TABLE, its stateless mode: every alerting batch posted at once"
        )
        mode = "no-state"
    text += _fleet(template, out)
    return out, {"mode": mode, "text": text, "parameters": out}


# ---------------------------------------------------------------- what reached Slack


class Arrivals:
    """The sink's `on_alert`: when each token first reached Slack, and how many messages."""

    def __init__(self, run_id: str) -> None:
        self.pattern = re.compile(rf"lat-{run_id}-[a-z]\d{{4}}")
        self.lock = threading.Lock()
        self.first: dict[str, float] = {}
        self.messages = 0
        self.cond = threading.Condition(self.lock)

    def on_alert(self, payload: dict[str, Any]) -> None:
        now = time.time()
        tokens = set(self.pattern.findall(json.dumps(payload)))
        with self.cond:
            self.messages += 1
            for tok in tokens:
                self.first.setdefault(tok, now)
            self.cond.notify_all()

    def wait(self, token: str, timeout: float) -> Optional[float]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while token not in self.first:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            return self.first[token]

    def get(self, token: str) -> Optional[float]:
        with self.lock:
            return self.first.get(token)


# ---------------------------------------------------------------- one device


def device_environ(stack: LocalStack) -> dict[str, str]:
    """A device's environment: this one's minus any AWS or forwarder settings, plus the stack's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "OMPROG_FORWARDER_")) and k != "COGNITO_JWKS"
    }
    env.update(stack.device_environ())
    return env


class Device:
    """A provisioned device with its own rsyslogd on a private imuxsock socket."""

    def __init__(self, stack: LocalStack, root: str, device_id: str) -> None:
        self.stack = stack
        self.id = device_id
        self.dir = os.path.join(root, device_id)
        self.conf = os.path.join(self.dir, "forwarder.conf")
        self.spool = os.path.join(self.dir, "spool")
        self.rs = os.path.join(self.dir, "rsyslog")
        self.socket = os.path.join(self.dir, "log.sock")
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.info: Optional[socket.socket] = None
        os.makedirs(os.path.join(self.rs, "queue"))

    def provision(self) -> None:
        env = {**device_environ(self.stack), **self.stack.operator_environ()}
        argv = [*forwarder_command(), "provision", "--stack", self.stack.stack_name]
        argv += [f"--device-id={self.id}", "--out", self.conf, "--spool-dir", self.spool]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"provision {self.id} failed: {done.stdout}{done.stderr}")

    def check(self) -> float:
        """`omprog-forwarder check`: logs in and caches the credentials; seconds it took."""
        started = time.monotonic()
        argv = [*forwarder_command(), "check", "--config", self.conf, "--no-rsyslog"]
        env = device_environ(self.stack)
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"check {self.id} failed: {done.stdout}{done.stderr}")
        return time.monotonic() - started

    def start(self) -> None:
        binary = " ".join([*forwarder_command(), "run", "--config", self.conf])
        snippet = render_project_conf(
            {
                "binary": binary,
                "queue.spoolDirectory": os.path.join(self.rs, "queue"),
                "output": os.path.join(self.dir, "forwarder.log"),
            }
        )
        conf = os.path.join(self.rs, "rsyslog.conf")
        with open(conf, "w", encoding="utf-8") as fh:
            fh.write(
                f'global(workDirectory="{self.rs}" processInternalMessages="on")\n'
                'module(load="imuxsock" SysSock.Use="off")\n'
                f'input(type="imuxsock" Socket="{self.socket}" CreatePath="on")\n'
                f'if $programname == "rsyslogd" then action(type="omfile" '
                f'file="{os.path.join(self.dir, "rsyslogd.log")}")\n' + snippet
            )
        with open(os.path.join(self.dir, "rsyslogd.stderr"), "wb") as err:
            self.proc = subprocess.Popen(
                [RSYSLOGD or "rsyslogd", "-n", "-f", conf, "-i", os.path.join(self.rs, "pid")],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                env=device_environ(self.stack),
            )
        deadline = time.monotonic() + 15
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rsyslogd of {self.id} did not open {self.socket}")
            time.sleep(0.05)

    def error(self, token: str) -> float:
        """Send one user.err line with `logger`; the time just before it ran."""
        assert LOGGER is not None
        sent = time.time()
        subprocess.run(
            [LOGGER, "-u", self.socket, "-t", TAG, "-p", "user.err", f"{token} sensor read failed"],
            check=True,
            timeout=10,
        )
        return sent

    def info_line(self, n: int) -> None:
        """One background info line, straight onto the socket (no process per line)."""
        if self.info is None:
            self.info = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.info.connect(self.socket)
        stamp = time.strftime("%b %e %H:%M:%S")
        self.info.send(f"<14>{stamp} {TAG}[4242]: background line {n} temp=48.2'C".encode())

    def shipping(self) -> bool:
        """A shipper of this device still runs (ingest spawns one per seal)."""
        return any(self.conf.encode() in _cmdline(p) and b"ship" in _cmdline(p) for p in _pids())

    def stop(self) -> None:
        if self.info is not None:
            self.info.close()
            self.info = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """SIGINT and SIGTERM held until the block ends, then delivered once."""
    pending: list[int] = []
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pending:
            signal.raise_signal(pending[0])


# ---------------------------------------------------------------- the two cases


def percentile(values: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p % of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary(latencies: dict[str, Optional[float]]) -> dict[str, Any]:
    got = [v for v in latencies.values() if v is not None]
    out: dict[str, Any] = {
        "sent": len(latencies),
        "arrived": len(got),
        "missing": len(latencies) - len(got),
        "latencies_s": got,
    }
    if got:
        out.update(
            {
                "p50_s": percentile(got, 50),
                "p99_s": percentile(got, 99),
                "mean_s": statistics.fmean(got),
                "min_s": min(got),
                "max_s": max(got),
            }
        )
    return out


class Phase:
    """One local stack and its devices; everything it started is stopped by `close`."""

    def __init__(self, parameters: dict[str, Any], run_id: str, kind: str) -> None:
        self.run_id = run_id
        self.kind = kind
        self.arrivals = Arrivals(run_id)
        self.root = tempfile.mkdtemp(prefix=f"bench-lat-{kind}-")
        # A stack name of its own: moto keeps every server's resources in one process.
        self.stack = LocalStack(
            stack=f"bench-{kind}-{run_id}", parameters=parameters, on_alert=self.arrivals.on_alert
        )
        self.devices: list[Device] = []
        self.last_error: dict[str, float] = {}
        self.checks: list[float] = []
        self.spacing = ISOLATION_S

    def __enter__(self) -> Phase:
        try:
            self.stack.start()  # stops what it started if it fails
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.killed = self.close()

    def token(self, n: int) -> str:
        return f"lat-{self.run_id}-{self.kind}{n:04d}"

    def add_devices(self, count: int) -> list[Device]:
        """Provision, check and start `count` devices (three at a time: CLI start-up)."""
        new = [
            Device(self.stack, self.root, f"pi-{self.kind}-{len(self.devices) + i + 1:02d}")
            for i in range(count)
        ]
        self.devices += new

        def ready(d: Device) -> float:
            d.provision()
            took = d.check()
            d.start()
            return took

        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            self.checks += list(pool.map(ready, new))
        return new

    def settle(self, device: Device, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while device.shipping() and time.monotonic() < deadline:
            time.sleep(0.05)

    def one(self, device: Device, token: str) -> Optional[float]:
        """One isolated error: spaced from the device's last, alone in the chain."""
        last = self.last_error.get(device.id)
        if last is not None:
            time.sleep(max(0.0, last + self.spacing - time.time()))
        sent = device.error(token)
        self.last_error[device.id] = sent
        arrived = self.arrivals.wait(token, ALERT_TIMEOUT_S)
        self.settle(device)
        return None if arrived is None else arrived - sent

    def isolated(self, devices: list[Device], count: int) -> dict[str, Any]:
        lat: dict[str, Optional[float]] = {}
        for i in range(count):
            tok = self.token(i)
            lat[tok] = self.one(devices[i % len(devices)], tok)
            shown = "missing" if lat[tok] is None else f"{lat[tok]:.2f} s"
            print(f"  isolated {i + 1}/{count}: {shown}", file=sys.stderr, flush=True)
        out = summary(lat)
        out["devices"] = len(devices)
        out["spacing_s"] = self.spacing
        return out

    def steady(self, device: Device, seconds: float, info_rate: float) -> dict[str, Any]:
        sent: dict[str, float] = {}
        start = time.time()
        next_error, next_info, n_info = start, start, 0
        while time.time() < start + seconds:
            now = time.time()
            if now >= next_error:
                tok = self.token(len(sent))
                sent[tok] = device.error(tok)
                next_error += 1.0
            if now >= next_info:
                device.info_line(n_info)
                n_info += 1
                next_info += 1.0 / info_rate
            time.sleep(max(0.0, min(next_error, next_info) - time.time()))
        last = max(sent.values())
        lat: dict[str, Optional[float]] = {}
        for tok, t in sent.items():
            arrived = self.arrivals.wait(tok, max(0.0, last + ALERT_TIMEOUT_S - time.time()))
            lat[tok] = None if arrived is None else arrived - t
        out = summary(lat)
        out.update({"seconds": seconds, "info_lines": n_info, "info_rate": info_rate})
        return out

    def close(self) -> list[str]:
        """Stop every rsyslogd, let the shippers finish, kill what is left, stop the stack.

        A second Ctrl-C or SIGTERM waits until this is done: cleaning up half-way
        is what leaves an rsyslogd running.
        """
        with deferred_interrupts():
            return self._close()

    def _close(self) -> list[str]:
        try:
            for d in self.devices:
                try:
                    d.stop()
                except Exception as exc:  # the next device and the sweep below still run
                    print(f"stopping {d.id}: {exc!r}", file=sys.stderr)
            deadline = time.monotonic() + 20
            while processes_under(self.root) and time.monotonic() < deadline:
                time.sleep(0.2)
            killed = []
            for pid in processes_under(self.root):
                with contextlib.suppress(ProcessLookupError):
                    killed.append(f"{pid}: {_cmdline(pid)[:120]!r}")
                    os.kill(pid, signal.SIGKILL)
            return killed
        finally:
            self.stack.stop()
            shutil.rmtree(self.root, ignore_errors=True)


def run(quick: bool) -> dict[str, Any]:
    if RSYSLOGD is None or LOGGER is None:
        raise SystemExit("rsyslogd and logger are needed (apt-get install rsyslog bsdutils)")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logging.getLogger("omprog_forwarder.lambda").setLevel(logging.WARNING)
    template = load_template()
    n_iso = 4 if quick else 20
    steady_s, info_rate = (15.0, 10.0) if quick else (120.0, 10.0)
    run_id = uuid.uuid4().hex[:8]
    started = time.monotonic()

    params, iso_storm = isolated_parameters(template)
    with Phase(params, run_id, "i") as phase:
        phase.spacing = max(ISOLATION_S, iso_storm["cooldown_s"] + 2.0)
        # Enough devices that waiting out the spacing does not dominate the run.
        per_device = 1 if quick else (2 if phase.spacing > 30 else 5)
        n_dev = max(1, math.ceil(n_iso / per_device))
        print(f"isolated: {n_dev} devices, {n_iso} errors ...", file=sys.stderr, flush=True)
        devices = phase.add_devices(n_dev)
        isolated = phase.isolated(devices, n_iso)
        isolated["storm_control"] = iso_storm
        isolated["slack_messages"] = phase.arrivals.messages
        checks = list(phase.checks)
    killed = phase.killed

    params, off = storm_control_off(template)
    with Phase(params, run_id, "s") as phase:
        if off["mode"] == "no-state":
            phase.stack.function_env.pop("STATE_TABLE", None)
        print(f"steady stream for {steady_s:.0f} s ...", file=sys.stderr, flush=True)
        (device,) = phase.add_devices(1)
        steady = phase.steady(device, steady_s, info_rate)
        steady["storm_control"] = off
        steady["slack_messages"] = phase.arrivals.messages
        checks += phase.checks
    killed += phase.killed
    if killed:
        print(f"had to kill: {killed}", file=sys.stderr)
    return {
        "quick": quick,
        "isolated": isolated,
        "steady": steady,
        "check_s": summary(dict(enumerate(checks))),  # type: ignore[arg-type]
        "killed": killed,
        "settings": {"window_seconds": 300, "urgent_min_interval": 10},
        "wall_s": time.monotonic() - started,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 isolated errors, 15 s of stream")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = ap.parse_args()

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # through the finally blocks: nothing left running

    signal.signal(signal.SIGTERM, on_sigterm)
    result = run(args.quick)
    for case in ("isolated", "steady"):
        r = result[case]
        print(
            f"{case:<9} sent {r['sent']:>3} arrived {r['arrived']:>3} "
            f"p50 {r.get('p50_s', float('nan')):6.2f} s  p99 {r.get('p99_s', float('nan')):6.2f} s"
        )
    print(f"isolated: {result['isolated']['storm_control']['text']}")
    print(f"steady: {result['steady']['storm_control']['text']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
