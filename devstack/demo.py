"""`make demo`: the whole pipeline on this machine, step by step, then everything stopped.

    python -m devstack.demo [--device-id ID] [--keep] [--no-rsyslog] [--alerts]

1. the local stack (moto, the identity pool, the SigV4 gateway, the real
   Lambda handler, a Slack sink), deployed from lambda/template.yaml;
2. `omprog-forwarder provision --stack ...` writes the device's config;
3. `omprog-forwarder check` tests the device end to end;
4. a real `rsyslogd -n` with the project's rsyslog.d snippet (only the
   binary path, the spool and the queue folder substituted) on a private
   imuxsock socket, in its own work folder;
5. `logger` sends a few lines, one of them `user.err`;
6. the `err` line seals its batch at once, ingest starts `ship`, the batch
   is archived and alerts Slack; the demo waits for both;
7. it prints the S3 keys, the first archived records, the alert as text,
   `omprog-forwarder status`, and one of docs/DEPLOY.md's Athena queries
   answered by DuckDB over the archive;
8. it stops rsyslogd, the forwarder and any shipper, the stack, and removes
   its temporary folder — also on Ctrl-C or when a step fails, and then it
   names the step and shows the tail of the logs that explain it.

Without rsyslogd it says how to install it and runs the same flow by
feeding `omprog-forwarder run` through the omprog protocol directly.
Everything the device side does is the installed console script, run as a
separate process with only the environment a device would have.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any, Callable, Optional

from devstack.athena import Archive, documented_queries, download_archive, format_rows
from devstack.processes import processes_under
from devstack.rsyslog import render_snippet
from devstack.slack import render
from devstack.stack import LocalStack
from devstack.template import REPO_ROOT

DEPLOY_MD = os.path.join(REPO_ROOT, "docs", "DEPLOY.md")
DEMO_QUERY = "Errors per device per day"
#: (severity, app, message) of the demo's lines; the app decides the facility.
FIRST_LINES = [
    ("info", "demo", "hello from the omprog-forwarder demo"),
    ("notice", "dhcpcd", "wlan0: leased 192.0.2.7 for 86400 seconds"),
    ("warning", "demo", "disk 81% full <!channel>"),
    ("err", "demo", "sensor read failed: I/O error"),
]
FACILITY = {"dhcpcd": "daemon"}
SEVERITY = {"crit": 2, "err": 3, "warning": 4, "notice": 5, "info": 6}


class Warp:
    """The functions' wall clock: real time plus an offset the alert story moves ahead."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


WAIT_SECONDS = 60.0


class StepFailed(Exception):
    """A step of the demo failed; the message says why."""


def forwarder_command() -> list[str]:
    """This checkout's console script (the installed `omprog-forwarder`), or `-m`."""
    script = os.path.join(os.path.dirname(sys.executable), "omprog-forwarder")
    if os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-m", "omprog_forwarder"]


class Demo:
    def __init__(
        self, device_id: str, use_rsyslog: bool, out: Any = None, alerts: bool = False
    ) -> None:
        self.device_id = device_id
        self.out = out or sys.stdout
        self.rsyslogd = shutil.which("rsyslogd") if use_rsyslog else None
        self.why_no_rsyslog = (
            "--no-rsyslog was given" if not use_rsyslog else "rsyslogd is not installed"
        )
        self.logger = shutil.which("logger")
        self.work = tempfile.mkdtemp(prefix="omprog-demo-")
        self.conf = os.path.join(self.work, "forwarder.conf")
        self.spool = os.path.join(self.work, "spool")
        self.alerts: list[dict[str, Any]] = []
        self.stack: Optional[LocalStack] = None
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[str] = []
        self.story = alerts
        self.warp = Warp()
        self.step_no = 0
        self.steps = (8 if self.rsyslogd else 7) + (4 if alerts else 0)
        self.started = time.monotonic()

    # -- output ---------------------------------------------------------------

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        self.step_no += 1
        self.current = what
        print(f"[{self.step_no}/{self.steps}] {what} ...", end="", file=self.out, flush=True)
        began = time.monotonic()
        try:
            yield
        except BaseException:
            print(f" FAILED after {time.monotonic() - began:.1f} s", file=self.out, flush=True)
            raise
        print(f" done in {time.monotonic() - began:.1f} s", file=self.out, flush=True)

    def section(self, title: str, body: str) -> None:
        self.say(f"\n--- {title}")
        self.say(body.rstrip())

    # -- helpers --------------------------------------------------------------

    def device_env(self) -> dict[str, str]:
        assert self.stack is not None
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AWS_", "OMPROG_FORWARDER_")) and k != "COGNITO_JWKS"
        }
        env.update(self.stack.device_environ())
        return env

    def cli(self, *args: str, env: Optional[dict[str, str]] = None, log: str = "") -> str:
        """Run one `omprog-forwarder` command; its output, or StepFailed with it."""
        proc = subprocess.run(
            [*forwarder_command(), *args],
            env=env or self.device_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        text = (proc.stdout + proc.stderr).strip()
        if log:
            with open(os.path.join(self.work, log), "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
            self.logs.append(os.path.join(self.work, log))
        if proc.returncode != 0:
            raise StepFailed(f"`omprog-forwarder {args[0]}` exited {proc.returncode}:\n{text}")
        return proc.stdout

    def wait_for(self, what: str, done: Callable[[], bool], seconds: float = WAIT_SECONDS) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if done():
                return
            time.sleep(0.2)
        raise StepFailed(f"no {what} within {seconds:.0f} s")

    def archived_keys(self) -> list[str]:
        assert self.stack is not None
        s3 = self.stack.client("s3")
        listed = s3.list_objects_v2(Bucket=self.stack.bucket).get("Contents", [])
        return sorted(o["Key"] for o in listed)

    def records(self, key: str) -> list[dict[str, Any]]:
        assert self.stack is not None
        body = self.stack.client("s3").get_object(Bucket=self.stack.bucket, Key=key)["Body"]
        return [json.loads(line) for line in gzip.decompress(body.read()).splitlines()]

    # -- the steps ------------------------------------------------------------

    def run(self) -> None:
        self.say(f"working in {self.work}/ (removed at the end)")
        with self.step(
            "starting the local stack (moto, identity pool, SigV4 gateway, Lambda, Slack sink)"
        ):
            self.stack = LocalStack(on_alert=self.alerts.append, lambda_clock=self.warp).start()
        with self.step(f"provisioning device {self.device_id} (omprog-forwarder provision)"):
            env = {**self.device_env(), **self.stack.operator_environ()}
            self.cli(
                "provision",
                "--stack",
                self.stack.stack_name,
                f"--device-id={self.device_id}",
                "--out",
                self.conf,
                "--spool-dir",
                self.spool,
                env=env,
                log="provision.log",
            )
        if self.rsyslogd:
            self.write_rsyslog_conf()
        with self.step("checking the device (omprog-forwarder check)"):
            args = ["check", "--config", self.conf]
            if self.rsyslogd:
                args += ["--rsyslog-conf", self.rsyslog_conf, "--rsyslog-snippet", self.snippet]
            else:
                args += ["--no-rsyslog"]
            checked = self.cli(*args, log="check.log")
        self.section("omprog-forwarder check", checked)
        if self.rsyslogd:
            self.run_with_rsyslog()
        else:
            self.say(
                f"\n{self.why_no_rsyslog} (the real thing: apt-get install rsyslog): feeding "
                "`omprog-forwarder run` through the omprog protocol directly instead."
            )
            self.run_without_rsyslog()
        with self.step("reading the archive, the alert, the status and a DEPLOY.md query"):
            sections = self.results()
        for title, body in sections:
            self.section(title, body)
        if self.story:
            self.alert_story()

    def send(self, lines: list[tuple[str, str, str]]) -> None:
        """The lines into the pipeline: through rsyslogd with logger, or `run` directly."""
        if self.rsyslogd:
            if not self.logger:
                raise StepFailed("logger is not installed (apt-get install bsdutils)")
            for severity, app, msg in lines:
                prio = f"{FACILITY.get(app, 'user')}.{severity}"
                subprocess.run(
                    [self.logger, "-u", self.socket, "-t", app, "-p", prio, msg],
                    check=True,
                    timeout=10,
                )
            return
        now = datetime.datetime.now(datetime.timezone.utc).astimezone()
        records = [
            json.dumps(
                {
                    "ts": now.isoformat(),
                    "host": "demo",
                    "facility": FACILITY.get(app, "user"),
                    "severity": SEVERITY[severity],
                    "app": app,
                    "pid": str(os.getpid()),
                    "msg": " " + msg,
                    "uuid": uuid.uuid4().hex.upper(),
                },
                separators=(",", ":"),
            )
            for severity, app, msg in lines
        ]
        proc = subprocess.run(
            [*forwarder_command(), "run", "--config", self.conf],
            input="".join(x + "\n" for x in records).encode(),
            capture_output=True,
            env=self.device_env(),
            timeout=60,
        )
        replies = proc.stdout.decode().split()
        if proc.returncode != 0 or replies != ["OK"] * (len(records) + 1):
            raise StepFailed(f"run answered {replies}: {proc.stderr.decode()[-2000:]}")

    def alert_story(self) -> None:
        """Storm control and silence, with the functions' clock moved ahead between acts."""
        assert self.stack is not None
        shown = len(self.alerts)

        def new_messages() -> str:
            nonlocal shown
            fresh, shown = self.alerts[shown:], len(self.alerts)
            return "\n\n".join(render(a) for a in fresh) or "(no message)"

        with self.step("three more errors within the cool-down: archived, folded into a digest"):
            keys = len(self.archived_keys())
            self.send(
                [
                    ("err", "demo", "sensor read failed: I/O error"),
                    ("err", "demo", "sensor read failed: I/O error"),
                    ("crit", "kernel", "mmc0: card removed"),
                ]
            )
            self.wait_for("archived batch", lambda: len(self.archived_keys()) > keys)
            time.sleep(0.5)
        self.section("Slack after those three errors", new_messages())
        with self.step("11 minutes later (the functions' clock moved on): the digest"):
            self.warp.advance(11 * 60)
            self.stack.run_scheduled()
            self.wait_for("digest", lambda: len(self.alerts) > shown)
        self.section("the digest", new_messages())
        with self.step(f"35 minutes without a line from {self.device_id}: reported silent"):
            self.warp.advance(35 * 60)
            self.stack.run_scheduled()
            self.wait_for("silent alert", lambda: len(self.alerts) > shown)
        self.section("silent", new_messages())
        with self.step(f"2 minutes later {self.device_id} logs an error again: alert, then back"):
            self.warp.advance(2 * 60)
            keys = len(self.archived_keys())
            self.send([("err", "demo", "sensor read failed again")])
            self.wait_for("archived batch", lambda: len(self.archived_keys()) > keys)
            self.wait_for("alert", lambda: len(self.alerts) > shown)
            self.stack.run_scheduled()
            self.wait_for("back alert", lambda: len(self.alerts) > shown + 1)
        self.section("the new alert, then back", new_messages())

    def write_rsyslog_conf(self) -> None:
        """The project's snippet with its paths substituted, and a main config around it."""
        rs = os.path.join(self.work, "rsyslog")
        os.makedirs(os.path.join(rs, "queue"), exist_ok=True)
        binary = " ".join([*forwarder_command(), "run", "--config", self.conf])
        if " " in self.work or any(" " in p for p in forwarder_command()):
            raise StepFailed("rsyslog 8.2302 cannot quote spaces in binary=; use a path without")
        text = render_snippet(
            {
                "binary": binary,
                "queue.spoolDirectory": os.path.join(rs, "queue"),
                "output": os.path.join(self.work, "forwarder.log"),
            }
        )
        self.snippet = os.path.join(rs, "60-omprog-forwarder.conf")
        with open(self.snippet, "w", encoding="utf-8") as fh:
            fh.write(text)
        self.socket = os.path.join(self.work, "log.sock")
        self.rsyslog_conf = os.path.join(rs, "rsyslog.conf")
        with open(self.rsyslog_conf, "w", encoding="utf-8") as fh:
            fh.write(
                f'global(workDirectory="{rs}" processInternalMessages="on")\n'
                'module(load="imuxsock" SysSock.Use="off")\n'
                f'input(type="imuxsock" Socket="{self.socket}" CreatePath="on")\n'
                f'if $programname == "rsyslogd" then action(type="omfile" '
                f'file="{os.path.join(self.work, "rsyslogd.log")}")\n'
                f'include(file="{self.snippet}")\n'
            )
        self.logs += [os.path.join(self.work, n) for n in ("rsyslogd.log", "forwarder.log")]

    def run_with_rsyslog(self) -> None:
        assert self.rsyslogd is not None
        with self.step("starting rsyslogd -n with the project's rsyslog.d snippet"):
            stderr = open(os.path.join(self.work, "rsyslogd.stderr"), "wb")  # noqa: SIM115
            self.logs.append(stderr.name)
            proc = subprocess.Popen(
                [
                    self.rsyslogd,
                    "-n",
                    "-f",
                    self.rsyslog_conf,
                    "-i",
                    os.path.join(self.work, "rsyslogd.pid"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                env=self.device_env(),
            )
            stderr.close()
            self.procs.append(proc)
            self.wait_for("rsyslog socket", lambda: os.path.exists(self.socket), 15)
        with self.step("sending lines with logger (one of them user.err)"):
            self.send(FIRST_LINES)
        with self.step("waiting for the urgent seal, the ship, the archive and the alert"):
            self.wait_for("archived batch", lambda: bool(self.archived_keys()))
            self.wait_for("Slack alert", lambda: bool(self.alerts))

    def run_without_rsyslog(self) -> None:
        with self.step("feeding omprog-forwarder run over stdin (the omprog protocol)"):
            self.send(FIRST_LINES)
        with self.step("waiting for the ship, the archive and the alert"):
            self.wait_for("archived batch", lambda: bool(self.archived_keys()))
            self.wait_for("Slack alert", lambda: bool(self.alerts))

    def results(self) -> list[tuple[str, str]]:
        keys = self.archived_keys()
        first = self.records(keys[0])[:5]
        out = [
            ("archived in S3 (s3://BUCKET/KEY)", "\n".join(keys)),
            (
                "the first archived records",
                "\n".join(json.dumps(r, ensure_ascii=False) for r in first),
            ),
            ("the Slack alert, as text", "\n\n".join(render(a) for a in self.alerts)),
            ("omprog-forwarder status", self.cli("status", "--config", self.conf)),
        ]
        assert self.stack is not None
        queries = dict(documented_queries(DEPLOY_MD))
        sql = queries[DEMO_QUERY].replace("'pi-0001'", f"'{self.device_id}'")
        root = os.path.join(self.work, "archive")
        download_archive(
            self.stack.client("s3"), self.stack.bucket, self.stack.outputs["LogPrefix"] + "/", root
        )
        names, rows = Archive(root, self.stack.outputs["LogPrefix"]).query(sql)
        title = f'docs/DEPLOY.md, "{DEMO_QUERY}", answered by DuckDB over the archive'
        out.append((title, sql.strip() + "\n\n" + format_rows(names, rows)))
        return out

    # -- the end --------------------------------------------------------------

    def stop(self) -> list[str]:
        """Stop everything started; return what had to be killed."""
        killed = []
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(40)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    killed.append(f"rsyslogd {proc.pid}")
        killed += self._stop_leftovers()
        if self.stack is not None:
            self.stack.stop()
        return killed

    def _stop_leftovers(self) -> list[str]:
        """The forwarder and shippers under our folder: wait a little, then kill."""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and processes_under(self.work):
            time.sleep(0.2)
        killed = []
        for pid in processes_under(self.work):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(f"process {pid}")
        return killed

    def log_tails(self, lines: int = 15) -> str:
        parts = []
        for path in self.logs + [os.path.join(self.spool, "state", "ship.log")]:
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    tail = fh.read().splitlines()[-lines:]
            except FileNotFoundError:
                continue
            if tail:
                parts.append(f"--- tail of {os.path.basename(path)}\n" + "\n".join(tail))
        return "\n".join(parts)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--device-id", default="pi-0001", help="the demo device (default %(default)s)"
    )
    parser.add_argument("--no-rsyslog", action="store_true", help="skip rsyslogd even if installed")
    parser.add_argument(
        "--alerts",
        action="store_true",
        help="then the alert story: a digest, a silent device and its return",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (its path is printed)"
    )
    args = parser.parse_args(argv)
    demo = Demo(args.device_id, use_rsyslog=not args.no_rsyslog, alerts=args.alerts)

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    code = 0
    try:
        demo.run()
    except KeyboardInterrupt:
        code = 130
        print(f"\ninterrupted during: {getattr(demo, 'current', 'start-up')}", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - every failure names its step
        code = 1
        what = getattr(demo, "current", "start-up")
        print(f"\nFAILED at step {demo.step_no}: {what}", file=sys.stderr)
        reason = str(exc) if isinstance(exc, StepFailed) else f"{type(exc).__name__}: {exc}"
        print(reason, file=sys.stderr)
        tails = demo.log_tails()
        if tails:
            print(tails, file=sys.stderr)
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            demo.step_no = demo.steps - 1
            with demo.step("stopping rsyslogd, the forwarder, any shipper and the stack"):
                killed = demo.stop()
            if args.keep:
                demo.say(f"\nkept {demo.work}")
            else:
                shutil.rmtree(demo.work, ignore_errors=True)
            left = processes_under(demo.work)
            took = time.monotonic() - demo.started
            parts = ["stopped everything"]
            if killed:
                parts[0] += f" (had to kill {', '.join(killed)})"
            parts.append("no process left" if not left else f"STILL RUNNING: {left}")
            parts.append("temporary folder kept" if args.keep else "temporary folder removed")
            parts.append(f"{took:.1f} s in all")
            demo.say("\n" + "; ".join(parts))
            if left:
                code = code or 1
    return code


if __name__ == "__main__":
    sys.exit(main())
