"""Helpers for the ingest tests: run `omprog-forwarder run` as rsyslog would,
read a spool back, and drive a `Batcher` in-process on fake clocks.

Subprocesses use `sys.executable` with PYTHONPATH pointing at this checkout and
every `OMPROG_FORWARDER_*` variable of the caller removed, so a developer's
environment cannot change what a test sees.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from omprog_forwarder import config
from omprog_forwarder.ingest import protocol
from omprog_forwarder.ingest.batcher import Batcher
from omprog_forwarder.spool import Spool, decode_records
from support.clock import FakeClock

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures"
DEADLINE = 15.0  # seconds; generous for 2 shared cores, never waited on when things work

PROTOCOL_WORDS = (b"OK", b"DEFER_COMMIT")
BEGIN = b"BEGIN TRANSACTION"
COMMIT = b"COMMIT TRANSACTION"


# ---------------------------------------------------------------- lines


def json_line(msg: str, severity: Any = 6, uuid: Optional[str] = None, app: str = "myapp") -> bytes:
    """A line in the project's JSON template (option.jsonf; uuid is the last field)."""
    fields = [
        '"ts":"2026-11-26T23:14:04.534728+00:00"',
        '"host":"vm"',
        '"facility":"daemon"',
        f'"severity":{json.dumps(severity)}',
        f'"app":{json.dumps(app)}',
        '"pid":"-"',
        f'"msg":{json.dumps(msg)}',
    ]
    if uuid is not None:
        fields.append(f'"uuid":"{uuid}"')
    return ("{" + ", ".join(fields) + "}").encode()


def uuid_hex(n: int) -> str:
    return f"{n:032X}"


# ---------------------------------------------------------------- subprocess


def run_env(settings: Optional[dict[str, Any]] = None) -> dict[str, str]:
    """The caller's environment without OMPROG_FORWARDER_*, plus `settings` as env vars."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(config.ENV_PREFIX)}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    for key, value in (settings or {}).items():
        env[config.ENV_PREFIX + key.upper()] = str(value)
    return env


def cli_args(command: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "omprog_forwarder", command, *args]


@dataclass
class Result:
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def replies(self) -> list[bytes]:
        return self.stdout.split(b"\n")[:-1] if self.stdout.endswith(b"\n") else [self.stdout]


def run_once(
    spool_dir: Optional[Path],
    stdin: bytes,
    *args: str,
    settings: Optional[dict[str, Any]] = None,
    cwd: Optional[Path] = None,
) -> Result:
    """`run` fed `stdin` at once, then EOF (the program answers one line at a time anyway)."""
    argv = cli_args("run", *(["--spool-dir", str(spool_dir)] if spool_dir else []), *args)
    proc = subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        env=run_env(settings),
        cwd=str(cwd) if cwd else None,
        timeout=DEADLINE * 2,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace"))


class Ingest:
    """A running `omprog-forwarder run`, driven line by line like rsyslog with confirms on.

    stderr goes to a file (never a pipe nobody drains). Use as a context manager:
    a process still alive at the end is killed by its pid.
    """

    def __init__(
        self,
        spool_dir: Path,
        *args: str,
        settings: Optional[dict[str, Any]] = None,
        stderr_path: Optional[Path] = None,
    ) -> None:
        self.stderr_path = stderr_path or spool_dir.parent / f"stderr-{time.monotonic_ns()}.log"
        self._err = open(self.stderr_path, "wb")  # noqa: SIM115 (closed in __exit__)
        self.proc = subprocess.Popen(
            cli_args("run", "--spool-dir", str(spool_dir), *args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            env=run_env(settings),
        )
        self._buf = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read_reply(self, timeout: float = DEADLINE) -> bytes:
        """The next status line (without LF); fails the test at the deadline."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no reply within {timeout} s; got so far {self._buf!r}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError(f"stdout closed; partial {self._buf!r}; {self.stderr()}")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def send(self, line: bytes) -> bytes:
        self.proc.stdin.write(line + b"\n")
        self.proc.stdin.flush()
        return self.read_reply()

    def close(self, timeout: float = DEADLINE) -> tuple[int, bytes]:
        """Close stdin (EOF); returns the exit code and anything else written to stdout."""
        self.proc.stdin.close()
        rest = self._buf
        self._buf = b""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"stdout not closed within {timeout} s; got {rest!r}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                rest += chunk
        return self.proc.wait(timeout=max(0.1, deadline - time.monotonic())), rest

    def stderr(self) -> str:
        self._err.flush()
        return self.stderr_path.read_text("utf-8", "replace")

    def __enter__(self) -> Ingest:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=DEADLINE)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream and not stream.closed:
                stream.close()
        self._err.close()


def wait_for(predicate, timeout: float = DEADLINE, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll `predicate` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


# ---------------------------------------------------------------- spool reading


def decode_file(path: Path) -> list[bytes]:
    """Every record of a sealed batch; any byte past the last record fails the test."""
    data = Path(path).read_bytes()
    lines, good = decode_records(data)
    assert good == len(data), f"{path} is damaged at byte {good} of {len(data)}"
    return lines


def decode_segment(path: Path) -> list[bytes]:
    """Every record of an open segment. Its tail past the records may be space the
    owner reserved ahead (zeros, which recovery reads as the end), nothing else."""
    data = Path(path).read_bytes()
    lines, good = decode_records(data)
    assert not data[good:].strip(b"\0"), f"{path} is damaged at byte {good} of {len(data)}"
    return lines


def ready_batches(spool_dir: Path) -> list[tuple[str, list[bytes]]]:
    """(file name, lines) of each sealed batch, oldest first (the shipper's order)."""
    return [(b.name, decode_file(Path(b.path))) for b in Spool(str(spool_dir)).ready_batches()]


def ready_lines(spool_dir: Path) -> list[bytes]:
    return [line for _, lines in ready_batches(spool_dir) for line in lines]


def open_segments(spool_dir: Path) -> list[Path]:
    return [Path(p) for p in Spool(str(spool_dir)).open_segments()]


def counters(spool_dir: Path) -> dict[str, int]:
    return Spool(str(spool_dir)).read_state("counters.json")


# ---------------------------------------------------------------- in-process


# 2026-11-26T23:10:00Z, a multiple of 300 s (and of 60 s)
WINDOW_START = 1795734600.0


class LoopDrivenBatcher(Batcher):
    """A Batcher whose on_message answers as the omprog loop does (a refusal
    becomes its error status) and then runs what the loop runs after the
    reply (`after_reply`), so in-process tests see what the loop leaves."""

    def on_message(self, line: bytes, truncated: int) -> bytes:
        status = protocol.answer_message(super().on_message, line, truncated)
        self.after_reply()
        return status


@dataclass
class Rig:
    """A Batcher on a real spool in tmp, with a fake monotonic clock and a fake wall clock."""

    batcher: Batcher
    spool: Spool
    clock: FakeClock
    wall: FakeClock
    root: Path

    def advance(self, seconds: float) -> None:
        """Time passes for both clocks alike (no wall-clock jump)."""
        self.clock.advance(seconds)
        self.wall.advance(seconds)

    def batches(self) -> list[tuple[str, list[bytes]]]:
        return ready_batches(self.root)

    def stored(self) -> list[bytes]:
        """Lines in ready/ and in the open segment(s), in that order."""
        lines = ready_lines(self.root)
        for seg in open_segments(self.root):
            lines.extend(decode_segment(seg))
        return lines


def make_rig(
    root: Path, wall_offset: float = 0.0, spool: Optional[Spool] = None, **settings: Any
) -> Rig:
    """`settings` are config keys as their file/env text (parsed by the real loader)."""
    cfg = config.load(
        None,
        {"spool_dir": str(root), **{k: str(v) for k, v in settings.items()}},
        environ={},
    )
    spool = spool or Spool(str(root)).create()
    clock = FakeClock(1000.0)
    wall = FakeClock(WINDOW_START + wall_offset)
    return Rig(LoopDrivenBatcher(cfg, spool, clock=clock, wall=wall), spool, clock, wall, root)
