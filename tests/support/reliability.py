"""The reliability suite's harness: the whole chain, faults, and the count on the archive.

    rsyslogd -n ──tap──▶ omprog-forwarder run ──▶ spool ──▶ ship ──▶ gateway ──▶ handler ──▶ S3

The promise is about the archive: every line rsyslog accepted is in S3
exactly once. So each scenario runs a real `rsyslogd -n` with the project's
rsyslog.d config (`support.rsyslogd.Rsyslogd`), a device provisioned against
the local stack with `omprog-forwarder provision` (`Device`), numbered lines
sent over imtcp (`Streamer`), the faults it is about, a final `ship`, and
then counts sequence numbers in the objects the real Lambda handler wrote to
moto's S3 (`archived_seqs`).

A line that is not in the archive is put down to whoever lost it (`tally`):

* **rsyslog, before its queue**: not in the side file, which an omfile
  action in rsyslog's main ruleset writes for every line rsyslog accepted
  (plain-TCP syslog loses what sits in a socket buffer when rsyslogd stops);
* **rsyslog, in its action queue**: accepted, but never answered `OK` or
  `DEFER_COMMIT` by the forwarder: the tap (support/omprog_tap.py) between
  rsyslog and the forwarder journals every line it hands over and every
  answer (8.2302 drops a dequeue batch being retried at shutdown);
* **the forwarder**: it answered for the line, and the line is not in the
  archive. That is a bug, whatever the fault.

Everything it starts it also stops (`Pipeline.close`, `reap`), and nothing
here sleeps where it can wait for a condition (`wait_until`).
"""

from __future__ import annotations

import collections
import contextlib
import gzip
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from devstack.processes import cmdlines
from omprog_forwarder.spool import decode_records
from support.rsyslogd import RSYSLOGD, Rsyslogd, forwarder_binary, forwarder_pids, syslog_line

REPO_ROOT = Path(__file__).resolve().parents[2]
TAP = REPO_ROOT / "tests" / "support" / "omprog_tap.py"
SEQ_RE = re.compile(r"seq=(\d{8})")
DEVICE_PREFIX = "pi-rel-"
#: Every reliability module's `pytestmark`.
MARKS = [
    pytest.mark.reliability,
    pytest.mark.rsyslog,
    pytest.mark.slow,
    pytest.mark.skipif(
        RSYSLOGD is None, reason="rsyslogd is not installed (apt-get install rsyslog)"
    ),
]
#: Every scenario's result, printed together at the end of the run (conftest.py).
RESULTS: list[Result] = []


# ---------------------------------------------------------------- waiting


def wait_until(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll until `predicate()` is truthy; its value, or AssertionError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or predicate}")
        time.sleep(interval)


# ---------------------------------------------------------------- processes


def _forwarder_command(cmd: list[bytes], spool: str) -> Optional[bytes]:
    """`run` or `ship` if `cmd` is this checkout's forwarder on `spool` (not the tap)."""
    if spool.encode() not in cmd or any(a.endswith(b"omprog_tap.py") for a in cmd):
        return None
    for i, arg in enumerate(cmd[:-1]):
        if arg == b"omprog_forwarder" and i > 0 and cmd[i - 1] == b"-m":
            return cmd[i + 1]
    return None


def ingest_pids(spool: str) -> list[int]:
    """The `omprog-forwarder run` processes on this spool (what rsyslog started)."""
    return [pid for pid, cmd in cmdlines() if _forwarder_command(cmd, spool) == b"run"]


def shipper_pids(spool: str) -> list[int]:
    """The `omprog-forwarder ship` processes on this spool (spawned by ingest, or ours)."""
    return [pid for pid, cmd in cmdlines() if _forwarder_command(cmd, spool) == b"ship"]


def kill_pids(pids: Iterable[int], sig: int = signal.SIGKILL) -> list[int]:
    killed = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
            killed.append(pid)
    return killed


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] == b"Z"  # a zombie is gone
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


def reap(spool: str, timeout: float = 30.0) -> list[int]:
    """Wait for every process on `spool` to end; SIGKILL what is left. Returns those killed.

    A shipper ends by itself once ready/ is empty; one still running at the end
    of a scenario is a finding, so the caller fails on a non-empty result.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in forwarder_pids(spool) if not _gone(p)]
        if not left:
            return []
        time.sleep(0.1)
    left = [p for p in forwarder_pids(spool) if not _gone(p)]
    killed = kill_pids(left)
    wait_until(lambda: all(_gone(p) for p in killed), 10, what="killed processes to go")
    return killed


# ---------------------------------------------------------------- environment


def clean_environ(extra: Mapping[str, str] = {}) -> dict[str, str]:
    """This process's environment without any AWS, forwarder or faketime setting, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "OMPROG_FORWARDER_", "FAKETIME"))
        and k not in ("COGNITO_JWKS", "LD_PRELOAD")
    }
    env["AWS_CONFIG_FILE"] = os.devnull
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def settings_environ(settings: Mapping[str, Any]) -> dict[str, str]:
    """Forwarder settings as the `OMPROG_FORWARDER_<KEY>` layer (above the config file)."""
    return {f"OMPROG_FORWARDER_{k.upper()}": str(v) for k, v in settings.items()}


# ---------------------------------------------------------------- the device


class Device:
    """A device provisioned against the local stack: its 0600 config, its spool, its env.

    `settings` are forwarder settings given as environment variables (the layer
    above the file), inherited by `run` from rsyslogd and by the `ship` it starts.
    """

    def __init__(self, stack: Any, root: Path, settings: Mapping[str, Any] = {}) -> None:
        self.stack = stack
        self.root = root
        self.device_id = DEVICE_PREFIX + os.urandom(3).hex()
        self.conf = root / f"{self.device_id}.conf"
        self.spool = str(root / "spool")
        self.settings = dict(settings)
        self.ships: list[subprocess.Popen[bytes]] = []
        root.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "omprog_forwarder",
                "provision",
                "--stack",
                stack.stack_name,
                "--device-id",
                self.device_id,
                "--out",
                str(self.conf),
                "--spool-dir",
                self.spool,
            ],
            env=clean_environ(stack.operator_environ()),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        assert (self.conf.stat().st_mode & 0o777) == 0o600

    def environ(self, **more: Any) -> dict[str, str]:
        return clean_environ(
            {**self.stack.device_environ(), **settings_environ({**self.settings, **more})}
        )

    def command(self, *args: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "omprog_forwarder",
            *args,
            "--config",
            str(self.conf),
            "--spool-dir",
            self.spool,
        ]

    def start_ship(self) -> subprocess.Popen[bytes]:
        """`omprog-forwarder ship` in the background (a timer firing); reaped by `reap_ships`."""
        proc = subprocess.Popen(
            self.command("ship"),
            env=self.environ(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.ships.append(proc)
        return proc

    def reap_ships(self) -> None:
        for proc in self.ships:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self.ships.clear()

    def ship(self, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        """`omprog-forwarder ship` by hand (what a timer does), waited for."""
        return subprocess.run(
            self.command("ship"),
            env=self.environ(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    # -- the spool ------------------------------------------------------

    def folder(self, name: str) -> Path:
        return Path(self.spool) / name

    def batches(self, name: str = "ready") -> list[Path]:
        with contextlib.suppress(FileNotFoundError):
            return sorted(p for p in self.folder(name).iterdir() if p.name.endswith(".batch"))
        return []

    def held_lines(self) -> int:
        """Lines still in the spool (ready/, dead/, open/): not shipped."""
        total = 0
        for name in ("ready", "dead", "open"):
            with contextlib.suppress(FileNotFoundError):
                for p in self.folder(name).iterdir():
                    if p.name.endswith((".batch", ".seg")):
                        with contextlib.suppress(FileNotFoundError):
                            total += len(decode_records(p.read_bytes())[0])
        return total

    def half_written(self) -> list[str]:
        """Sealed batches that do not decode to their end, and leftover temporary files."""
        bad = []
        for p in self.batches("ready") + self.batches("dead"):
            with contextlib.suppress(FileNotFoundError):
                data = p.read_bytes()
                if decode_records(data)[1] != len(data):
                    bad.append(f"{p.name}: damaged")
        for name in ("ready", "dead", "state", "open"):
            with contextlib.suppress(FileNotFoundError):
                bad += [
                    f"{name}/{p.name}" for p in self.folder(name).iterdir() if ".tmp-" in p.name
                ]
        return bad

    def counters(self) -> dict[str, int]:
        try:
            return json.loads((self.folder("state") / "counters.json").read_bytes())
        except FileNotFoundError:
            return {}

    def drain(self, timeout: float = 240.0) -> None:
        """Ship until ready/ is empty: wait for a running shipper, else run one by hand."""
        deadline = time.monotonic() + timeout
        while True:
            if shipper_pids(self.spool):
                time.sleep(0.1)
            elif not self.batches("ready"):
                return
            else:
                proc = self.ship(timeout=max(10.0, deadline - time.monotonic()))
                assert proc.returncode in (0, 75), proc.stderr[-3000:]
            if time.monotonic() >= deadline:
                raise AssertionError(f"ready/ still holds {len(self.batches())} batches")


# ---------------------------------------------------------------- rsyslogd + tap


class Pipeline:
    """A private rsyslogd whose omprog program is this device's forwarder, behind the tap.

    `overrides` are rsyslog action parameters (e.g. `queue.workerThreads`);
    `wrapper` is put in front of the forwarder's command (a slow start, or
    `env LD_PRELOAD=...` for faketime) so that only the forwarder and the
    shipper it starts see it. The side file gets every line rsyslog accepted.
    """

    def __init__(
        self,
        device: Device,
        workdir: Path,
        overrides: Optional[Mapping[str, str]] = None,
        wrapper: Sequence[str] = (),
        env: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.device = device
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.journal = workdir / "tap.journal"
        self.side_file = workdir / "accepted.log"
        self.overrides = dict(overrides or {})
        self.env = dict(env) if env is not None else device.environ()
        self.rs: Optional[Rsyslogd] = None
        self.set_wrapper(wrapper)

    def set_wrapper(self, wrapper: Sequence[str]) -> None:
        """The forwarder's command prefix from the next rsyslogd start on."""
        forwarder = forwarder_binary(self.device.spool, str(self.device.conf))
        self.binary = " ".join([sys.executable, str(TAP), str(self.journal), *wrapper, forwarder])

    def start(self) -> Pipeline:
        self.rs = Rsyslogd(
            str(self.workdir),
            self.binary,
            self.overrides,
            env=self.env,
            tee_file=str(self.side_file),
        )
        self.rs.start()
        return self

    @property
    def port(self) -> int:
        return self.rs.port if self.rs is not None and self.rs.proc is not None else 0

    def stop(self) -> None:
        """An orderly stop (SIGTERM); waits for rsyslogd and the forwarders it ran."""
        if self.rs is not None and self.rs.proc is not None:
            self.rs.stop()
        spool = self.device.spool
        wait_until(lambda: not ingest_pids(spool), 30, what="the forwarders to exit after EOF")

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> list[int]:
        """Stop everything this pipeline started, even after a failure; what had to be killed."""
        try:
            if self.rs is not None and self.rs.proc is not None:
                try:
                    self.rs.stop(timeout=60)
                except RuntimeError:
                    pass
        finally:
            killed = reap(self.device.spool, timeout=20)
        return killed

    def log(self) -> str:
        """The forwarders' stderr (rsyslog's output= file) and rsyslog's own messages."""
        out = []
        for name in ("forwarder.log", "rsyslogd-internal.log"):
            with contextlib.suppress(FileNotFoundError):
                out.append((self.workdir / name).read_text(errors="replace"))
        return "\n".join(out)

    def log_count(self, text: str) -> int:
        """How many lines of the forwarders' log contain `text`."""
        return sum(text in line for line in self.log().splitlines())

    # -- what rsyslog did -------------------------------------------------

    def accepted(self) -> collections.Counter[int]:
        """Sequence numbers rsyslog accepted (its main ruleset's side file)."""
        counts: collections.Counter[int] = collections.Counter()
        with contextlib.suppress(FileNotFoundError):
            for m in SEQ_RE.finditer(self.side_file.read_text(errors="replace")):
                counts[int(m.group(1))] += 1
        return counts

    def journal_state(self) -> Journal:
        return Journal.read(self.journal)


@dataclass
class Journal:
    """The tap's record: lines handed to the forwarder, answered for, made durable."""

    handed: set[int] = field(default_factory=set)
    acked: set[int] = field(default_factory=set)  # OK or DEFER_COMMIT
    durable: set[int] = field(default_factory=set)  # OK, or DEFER_COMMIT then COMMIT OK
    refused: int = 0
    # rsyslog handed a line again after it was durable (8.2302's late copy of a
    # batch's first line, docs/rsyslog.md): how often, and the most lines between.
    handed_again: int = 0
    farthest_again: int = 0

    @classmethod
    def read(cls, path: Path) -> Journal:
        j = cls()
        deferred: list[int] = []
        handed_at: dict[int, int] = {}
        with contextlib.suppress(FileNotFoundError):
            for raw in path.read_bytes().splitlines():
                tag, _, seq = raw.partition(b" ")
                if tag == b"C":
                    j.durable.update(deferred)
                    deferred.clear()
                    continue
                n = int(seq)
                if tag == b"H":
                    if n in j.durable:
                        j.handed_again += 1
                        j.farthest_again = max(j.farthest_again, len(handed_at) - handed_at[n])
                    handed_at.setdefault(n, len(handed_at))
                    j.handed.add(n)
                elif tag == b"O":
                    j.acked.add(n)
                    j.durable.add(n)
                elif tag == b"D":
                    j.acked.add(n)
                    deferred.append(n)
                elif tag == b"E":
                    j.refused += 1
        return j


# ---------------------------------------------------------------- sending


class Streamer(threading.Thread):
    """Sends numbered lines over imtcp at a given rate, reconnecting across restarts.

    `sent` holds each line handed whole to the kernel (send(2) took all its
    bytes): what was offered to rsyslog. A line cut by a connection that broke
    is sent again on the next connection, so it is offered once or, when its
    first part did leave, counted as sent and possibly lost at the input.
    """

    def __init__(
        self,
        port: Callable[[], int],
        seqs: Iterable[int],
        rate: float = 0.0,
        chunk: int = 200,
        text: str = "",
    ) -> None:
        super().__init__(name="streamer", daemon=True)
        self.port = port
        self.todo = collections.deque(seqs)
        self.rate = rate
        self.chunk = chunk
        self.text = text
        self.sent: list[int] = []
        self.reconnects = 0
        self.error: Optional[BaseException] = None
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by join_ok
            self.error = exc

    def _connect(self) -> socket.socket:
        while not self._halt.is_set():
            port = self.port()
            if port:
                try:
                    return socket.create_connection(("127.0.0.1", port), timeout=30)
                except OSError:
                    pass
            time.sleep(0.05)
        raise InterruptedError("stopped")

    def _run(self) -> None:
        started = time.monotonic()
        done = 0
        sock = self._connect()
        try:
            while self.todo and not self._halt.is_set():
                seqs = [self.todo.popleft() for _ in range(min(self.chunk, len(self.todo)))]
                lines = [syslog_line(s, text=self.text) + b"\n" for s in seqs]
                data = b"".join(lines)
                off = 0
                try:
                    while off < len(data):
                        off += sock.send(data[off:])
                except OSError:
                    # Whole lines that left are offered; a cut one counts as sent
                    # too (its start left); the rest goes on the next connection.
                    pos, again = 0, []
                    for s, line in zip(seqs, lines):
                        (self.sent if pos < off else again).append(s)
                        pos += len(line)
                    self.todo.extendleft(reversed(again))
                    sock.close()
                    self.reconnects += 1
                    sock = self._connect()
                    continue
                self.sent.extend(seqs)
                done += len(seqs)
                if self.rate:
                    ahead = done / self.rate - (time.monotonic() - started)
                    if ahead > 0:
                        self._halt.wait(ahead)
        finally:
            sock.close()

    def stop(self) -> None:
        self._halt.set()

    def join_ok(self, timeout: float) -> None:
        self.join(timeout)
        assert not self.is_alive(), "the sender did not finish"
        if self.error is not None and not isinstance(self.error, InterruptedError):
            raise self.error


def send_all(port: int, seqs: Iterable[int], text: str = "") -> list[int]:
    """Send `seqs` over one connection as fast as the socket takes them."""
    s = Streamer(lambda: port, seqs, text=text, chunk=1000)
    s.run()
    if s.error is not None:
        raise s.error
    return s.sent


# ---------------------------------------------------------------- the archive


def archived_seqs(stack: Any, device_id: str) -> collections.Counter[int]:
    """Sequence numbers in every archived object of `device_id` (gunzipped JSON Lines)."""
    s3 = stack.client("s3")
    counts: collections.Counter[int] = collections.Counter()
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=stack.bucket):
        for obj in page.get("Contents", []):
            if f"/device={device_id}/" not in obj["Key"]:
                continue
            body = s3.get_object(Bucket=stack.bucket, Key=obj["Key"])["Body"].read()
            for raw in gzip.decompress(body).splitlines():
                rec = json.loads(raw)
                m = SEQ_RE.search(rec.get("msg") or rec.get("raw") or "")
                if m:
                    counts[int(m.group(1))] += 1
    return counts


# ---------------------------------------------------------------- the count


@dataclass
class Result:
    """One scenario's numbers, as printed and as asserted."""

    scenario: str
    sent: int
    archived: int
    duplicated: int
    lost: int
    lost_before_queue: int  # rsyslog: never accepted (not in the side file)
    lost_in_queue: int  # rsyslog: accepted, never answered by the forwarder
    lost_forwarder: int  # answered OK/DEFER_COMMIT by the forwarder, not archived
    unexpected: int  # archived but never sent
    not_shipped: int  # lines still in the spool at the end
    duration: float
    notes: str = ""
    first_lost: list[int] = field(default_factory=list)
    first_duplicated: list[int] = field(default_factory=list)

    @property
    def rsyslog_lost(self) -> int:
        return self.lost_before_queue + self.lost_in_queue

    def line(self) -> str:
        text = (
            f"{self.scenario}: sent {self.sent} / archived {self.archived} / "
            f"duplicated {self.duplicated} / lost {self.lost} "
            f"(rsyslog {self.rsyslog_lost}: {self.lost_before_queue} never accepted, "
            f"{self.lost_in_queue} accepted but never handed over; "
            f"forwarder {self.lost_forwarder}); not shipped {self.not_shipped}; "
            f"{self.duration:.1f} s"
        )
        return text + (f"; {self.notes}" if self.notes else "")

    def assert_promise(self, rsyslog_loss_allowed: bool = False) -> None:
        """Nothing the forwarder answered for is lost, nothing is twice, nothing is left."""
        assert self.lost_forwarder == 0, f"forwarder lost {self.first_lost}: {self.line()}"
        assert self.duplicated == 0, f"duplicated {self.first_duplicated}: {self.line()}"
        assert self.unexpected == 0, self.line()
        assert self.not_shipped == 0, self.line()
        if not rsyslog_loss_allowed:
            assert self.lost == 0, f"lost {self.first_lost}: {self.line()}"


def tally(
    scenario: str,
    sent: Iterable[int],
    archive: collections.Counter[int],
    *,
    accepted: Optional[collections.Counter[int]] = None,
    journal: Optional[Journal] = None,
    device: Optional[Device] = None,
    started: float = 0.0,
    notes: str = "",
    expected: Optional[Iterable[int]] = None,
) -> Result:
    """Count `sent` against the archive and say who lost what (see the module docstring).

    `expected` (default: everything sent) is what must arrive; lines sent but
    not expected (power loss cut them before they were acknowledged) are
    neither lost nor unexpected when absent.
    """
    sent_set = set(sent)
    must = sent_set if expected is None else set(expected)
    missing = sorted(must - set(archive))
    dups = sorted(s for s, c in archive.items() if c > 1)
    accepted_set = set(accepted) if accepted is not None else sent_set
    acked = journal.acked if journal is not None else set()
    before = [s for s in missing if s not in accepted_set and s not in acked]
    forwarder = [s for s in missing if s in acked]
    in_queue = [s for s in missing if s in accepted_set and s not in acked]
    result = Result(
        scenario=scenario,
        sent=len(sent_set),
        archived=len(must & set(archive)),
        duplicated=len(dups),
        lost=len(missing),
        lost_before_queue=len(before),
        lost_in_queue=len(in_queue),
        lost_forwarder=len(forwarder) if journal is not None else len(missing),
        unexpected=len(set(archive) - sent_set),
        not_shipped=device.held_lines() if device is not None else 0,
        duration=time.monotonic() - started if started else 0.0,
        notes=notes,
        first_lost=(forwarder or missing)[:10],
        first_duplicated=dups[:10],
    )
    RESULTS.append(result)
    print(f"[reliability] {result.line()}", flush=True)
    return result


def tally_run(
    scenario: str,
    sent: Iterable[int],
    pipe: Pipeline,
    device: Device,
    *,
    started: float = 0.0,
    notes: str = "",
) -> Result:
    """`tally` of one run: `device`'s archive against what `pipe` accepted and answered."""
    return tally(
        scenario,
        sent,
        archived_seqs(device.stack, device.device_id),
        accepted=pipe.accepted(),
        journal=pipe.journal_state(),
        device=device,
        started=started,
        notes=notes,
    )


def rng_for(name: str, seed: int = 0) -> random.Random:
    """A seeded RNG per scenario (OMPROG_RELIABILITY_SEED changes every scenario's draw)."""
    base = int(os.environ.get("OMPROG_RELIABILITY_SEED", "0"))
    return random.Random(f"{name}:{base + seed}")


# ---------------------------------------------------------------- one scenario's world


class Chain:
    """The devices and pipelines of one scenario, on the module's LocalStack.

    `close` stops every rsyslogd, waits for (or kills) every forwarder and
    shipper on their spools, and puts the gateway back as it was (running,
    the real handler, no scripted answers), so the next scenario starts clean.
    It returns what it had to kill: a non-empty list fails the scenario.
    """

    def __init__(self, stack: Any, root: Path) -> None:
        self.stack = stack
        self.root = root
        self.devices: list[Device] = []
        self.pipelines: list[Pipeline] = []
        self._on_request = stack.gateway.on_request
        self._max_body = stack.gateway.max_body_bytes
        self.killed: list[str] = []

    def device(self, **settings: Any) -> Device:
        dev = Device(self.stack, self.root / f"device{len(self.devices)}", settings)
        self.devices.append(dev)
        return dev

    def pipeline(self, device: Device, **kwargs: Any) -> Pipeline:
        pipe = Pipeline(device, self.root / f"rsyslog{len(self.pipelines)}", **kwargs)
        self.pipelines.append(pipe)
        return pipe

    def close_pipelines(self) -> None:
        """Stop every rsyslogd and wait for (or kill) every process on the spools: before
        a file system under a spool is unmounted, say. What had to be killed is kept."""
        for pipe in self.pipelines:
            self.killed += [f"pid {p} on {pipe.device.spool}" for p in pipe.close()]
        for dev in self.devices:
            self.killed += [f"pid {p} on {dev.spool}" for p in reap(dev.spool, timeout=30)]
            dev.reap_ships()

    def close(self) -> list[str]:
        gw = self.stack.gateway
        try:
            self.close_pipelines()
        finally:
            gw.clear_script()
            gw.on_request = self._on_request
            gw.max_body_bytes = self._max_body
            if not gw.running:
                gw.start()
        return self.killed


# ---------------------------------------------------------------- the gateway's side


class Holder:
    """Wraps the gateway's handler to hold chosen requests, before or after the Lambda ran.

    `plan[i]` says what to do with the i-th request that reaches the handler:
    "before" (held, then dropped with a 504 and never handled: the Lambda
    never ran), "after" (handled, then held: the batch is archived, the
    answer not sent yet), or "" (handled at once). A held request waits until
    `release()`; `held` yields its number as it starts waiting. Every request
    is recorded in `spans` as (start, end, status, duplicate), and the most
    that were in the handler at once in `max_concurrent`.
    """

    def __init__(self, gateway: Any, plan: Sequence[str] = ()) -> None:
        import queue

        self.gateway = gateway
        self.inner = gateway.on_request
        self.plan = list(plan)
        self.count = 0
        self.held: queue.Queue[int] = queue.Queue()
        self._release = threading.Semaphore(0)
        self._lock = threading.Lock()
        self.in_flight = 0
        self.max_concurrent = 0
        self.spans: list[tuple[float, float, int, bool]] = []
        #: When set, every request is answered with it and the Lambda never runs (an outage).
        self.outage: Optional[tuple[int, Mapping[str, str], bytes]] = None
        gateway.on_request = self

    def __call__(self, event: dict[str, Any]) -> tuple[int, Mapping[str, str], bytes]:
        with self._lock:
            i = self.count
            self.count += 1
            self.in_flight += 1
            self.max_concurrent = max(self.max_concurrent, self.in_flight)
        started = time.monotonic()
        out: tuple[int, Mapping[str, str], bytes] = (504, {}, b"")
        try:
            when = self.plan[i] if i < len(self.plan) else ""
            if self.outage is not None:
                out = self.outage
                return out
            if when == "before":
                self._hold(i)
                return out
            out = self.inner(event)
            if when == "after":
                self._hold(i)
            return out
        finally:
            duplicate = b'"duplicate": true' in out[2]
            with self._lock:
                self.in_flight -= 1
                self.spans.append((started, time.monotonic(), out[0], duplicate))

    def _hold(self, i: int) -> None:
        self.held.put(i)
        self._release.acquire(timeout=120)

    def release(self) -> None:
        self._release.release()


class PidWatch(threading.Thread):
    """Samples the forwarder (`run`) processes on a spool: how many ran at once, and which."""

    def __init__(self, spool: str, interval: float = 0.02) -> None:
        super().__init__(name="pidwatch", daemon=True)
        self.spool = spool
        self.interval = interval
        self.seen: set[int] = set()
        self.max_at_once = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            pids = ingest_pids(self.spool)
            self.seen.update(pids)
            self.max_at_once = max(self.max_at_once, len(pids))

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
