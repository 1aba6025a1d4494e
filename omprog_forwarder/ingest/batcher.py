"""The ingest work behind the omprog loop: dedup, append, commit, seal.

One `Batcher` per ingest process. It owns one open segment at a time and seals
it into ready/ when its wall-clock-aligned window ends (timed on the monotonic
clock), when it reaches `max_batch_bytes`, or soon after an urgent line
(rate-limited), but only ever when every line in it is committed. Every
refusal and drop has a named counter and one log line.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import logging
import math
import os
import re
import shlex
import sys
import time
from collections.abc import Sequence
from typing import Callable, Optional

from omprog_forwarder.config import SEVERITY_NAMES, Config
from omprog_forwarder.ingest import protocol
from omprog_forwarder.spool import (
    Batch,
    Segment,
    Spool,
    decode_records,
    encode_record,
    is_enospc,
    window_label,
)

log = logging.getLogger(__name__)

# The project's template ends with the uuid; anchoring at the end means text in
# `msg` can never pose as one (and lines in other formats never start with `{`).
_UUID_RE = re.compile(rb'"uuid"\s*:\s*"([0-9A-Fa-f]{32})"\s*\}\s*$')
_JSON_SEVERITY_RE = re.compile(rb'"severity"\s*:\s*"?([0-7]|[A-Za-z]+)\b')
# The how-to's CustomLogFormat: `2024-12-30 22:50:33 host daemon.err: tag: msg`
# (rsyslog itself keeps the `T` of RFC 3339 between date and time).
_CUSTOM_SEVERITY_RE = re.compile(
    rb"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\S* \S+ [A-Za-z0-9]+\.([A-Za-z]+): "
)
_SEVERITY_BYTES = {name.encode(): num for name, num in SEVERITY_NAMES.items()}
COUNTER_FLUSH_SECONDS = 10.0
USAGE_RESCAN_SECONDS = 1.0
SHIP_LOG_MAX_BYTES = 1024 * 1024
SHIP_PENDING_POLL_SECONDS = 0.5


_HEX_DIGITS = b"0123456789ABCDEFabcdef"


def line_uuid(line: bytes) -> Optional[bytes]:
    if not line.startswith(b"{"):
        return None
    # Fast path: rsyslog's jsonf renders the last field exactly as `"uuid":"<32 hex>"}`.
    if line[-42:-34] == b'"uuid":"' and line.endswith(b'"}'):
        value = line[-34:-2]
        if not value.strip(_HEX_DIGITS):
            return value.upper()
    m = _UUID_RE.search(line)
    return m.group(1).upper() if m else None


def holds_uuid(line: bytes, uuid: bytes) -> bool:
    """Is `line` really a JSON object whose `uuid` is `uuid`? Asked on a dedup hit
    only (rare): the regex alone would let a non-JSON line that merely ends like
    the template (`{junk "uuid":"..."}`) be dropped as a duplicate."""
    try:
        value = json.loads(line.decode("utf-8", "surrogateescape"))
    except (ValueError, RecursionError):
        return False
    return isinstance(value, dict) and str(value.get("uuid", "")).upper().encode() == uuid


def line_severity(line: bytes) -> Optional[int]:
    """The syslog severity of a line in one of our templates, or None."""
    if line.startswith(b"{"):
        # Fast path: jsonf with datatype="number" renders `"severity":3,`.
        at = line.find(b'"severity":')
        if at > 0 and line[at + 12 : at + 13] == b",":
            digit = line[at + 11]
            if 0x30 <= digit <= 0x37:
                return digit - 0x30
        m = _JSON_SEVERITY_RE.search(line)
    else:
        m = _CUSTOM_SEVERITY_RE.match(line)
    if not m:
        return None
    value = m.group(1)
    if value.isdigit():
        return int(value)
    return _SEVERITY_BYTES.get(value.lower())


class RecentSet:
    """The uuids of the most recent `size` stored lines (FIFO eviction).

    Held as 128-bit ints, not bytes: about half the memory per entry, which
    is most of what the ingest process grows by.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._order: collections.deque[int] = collections.deque()
        self._members: set[int] = set()

    def __contains__(self, uuid: bytes) -> bool:
        return int(uuid, 16) in self._members

    def __len__(self) -> int:
        return len(self._members)

    def add(self, uuid: bytes) -> None:
        key = int(uuid, 16)
        members = self._members
        if key not in members:
            members.add(key)
            self._order.append(key)
            if len(members) > self.size:
                members.discard(self._order.popleft())


class Batcher:
    """The `protocol.Handler` of `omprog-forwarder run`."""

    def __init__(
        self,
        cfg: Config,
        spool: Spool,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        run_options: Sequence[str] = (),
    ) -> None:
        self.cfg = cfg
        self.run_options = list(run_options)
        self.spool = spool
        self.clock = clock
        self.wall = wall
        self.seg: Optional[Segment] = None
        self.seg_deadline = math.inf
        self.in_tx = False
        self.uncommitted = 0
        self.urgent_due: Optional[float] = None
        self.last_urgent_seal = -math.inf
        self.recent = RecentSet(cfg.dedup_window)
        self.counters: collections.Counter[str] = collections.Counter()
        self.counters_flushed_at = clock()
        self.usage_base = 0
        self.usage_added = 0
        self.usage_at = -math.inf
        self.shipper_pid: Optional[int] = None
        self.ship_pending = False
        self.stored: Optional[tuple[bytes, Optional[bytes], int, float]] = None
        if self._adopt_orphans():
            self.spawn_shipper()  # sealed batches to ship now, not at our first seal
        self._load_recent()

    # -- start-up -------------------------------------------------------

    def _load_recent(self) -> None:
        """Fill the dedup index from the newest files of the spool (open and ready)."""
        stamped = [(b.mtime, b.path) for b in self.spool.ready_batches()]
        for path in self.spool.open_segments():
            with contextlib.suppress(FileNotFoundError):
                stamped.append((os.stat(path).st_mtime, path))
        chosen: list[list[bytes]] = []
        total = 0
        for _, path in sorted(stamped, reverse=True):
            if total >= self.recent.size:
                break
            try:
                with open(path, "rb") as fh:
                    lines, _ = decode_records(fh.read())
            except FileNotFoundError:
                continue
            except OSError as exc:  # one unreadable file must not stop ingest
                self._count("unreadable_files")
                log.error("cannot read %s for the dedup index: %s", path, exc)
                continue
            uuids = [u for u in map(line_uuid, lines) if u]
            chosen.append(uuids)
            total += len(uuids)
        for uuids in reversed(chosen):
            for u in uuids:
                self.recent.add(u)
        log.debug("dedup index holds %d uuids from %d files", len(self.recent), len(chosen))

    # -- helpers ------------------------------------------------------

    def _count(self, reason: str, n: int = 1) -> None:
        self.counters[reason] += n

    def _spool_usage(self, now: float, extra: int) -> int:
        stale = now - self.usage_at >= USAGE_RESCAN_SECONDS
        near = self.usage_base + self.usage_added + extra > self.cfg.max_spool_bytes
        if stale or (near and now - self.usage_at >= 0.1):
            self.usage_base = self.spool.usage()
            self.usage_added = 0
            self.usage_at = now
        return self.usage_base + self.usage_added

    def _open_segment(self, now: float) -> Segment:
        wall = self.wall()
        window = self.cfg.window_seconds
        start = math.floor(wall / window) * window
        # The deadline runs on the monotonic clock: a wall-clock jump (NTP on a
        # Pi without RTC) neither loses this window nor seals a burst of them.
        self.seg_deadline = now + max(0.0, start + window - wall)
        self.seg = self.spool.new_segment(window_label(start))
        return self.seg

    def _commit(self) -> None:
        if self.seg:
            self.seg.sync()
        self.uncommitted = 0

    def seal(self, reason: str) -> Optional[Batch]:
        seg, self.seg = self.seg, None
        self.seg_deadline = math.inf
        # Any urgent line went out with this segment: its early seal is done.
        self.urgent_due = None
        if seg is None:
            return None
        batch = self.spool.seal(seg)
        if batch is None:
            return None
        self._count(f"sealed_{reason}")
        log.info("sealed %s (%d lines, %d bytes, %s)", batch.name, batch.lines, batch.size, reason)
        self._adopt_orphans()
        self.spawn_shipper()
        return batch

    def _adopt_orphans(self) -> int:
        """Seal dead instances' segments into ready/; how many there were."""
        adopted = self.spool.adopt_orphans()
        for batch in adopted:
            self._count("adopted_segments")
            self._count("adopted_lines", batch.lines)
        return len(adopted)

    def shipper_running(self) -> bool:
        """Reap the shipper we started, if it exited (we never block on it)."""
        if self.shipper_pid is None:
            return False
        try:
            pid, _ = os.waitpid(self.shipper_pid, os.WNOHANG)
        except ChildProcessError:
            pid = self.shipper_pid
        if pid == 0:
            return True
        self.shipper_pid = None
        return False

    def ship_argv(self) -> Optional[list[str]]:
        """The shipper's command line, or None when shipping is off.

        `auto` (the default) runs this package's `ship` with the options this
        `run` got, once an endpoint is configured; `off` or empty disables it;
        anything else is a command line of its own.
        """
        command = self.cfg.ship_command
        if command in ("", "off"):
            return None
        if command == "auto":
            if not self.cfg.endpoint_url:
                return None
            return [sys.executable, "-m", "omprog_forwarder", "ship", *self.run_options]
        return shlex.split(command)

    def spawn_shipper(self) -> None:
        """Start the shipper fully detached; never wait for it."""
        if self.shipper_running():
            # It may already have listed ready/ for the last time: start
            # another once it has exited (on_tick watches for that).
            self.ship_pending = True
            return
        self.ship_pending = False
        try:
            argv = self.ship_argv()
            if argv is None:
                return
            if not argv:
                raise ValueError("empty command")
            log_path = self.spool.state_path("ship.log")
            with contextlib.suppress(FileNotFoundError):
                if os.path.getsize(log_path) > SHIP_LOG_MAX_BYTES:
                    os.replace(log_path, log_path + ".1")
            # New session; stdin and stdout from /dev/null, stderr to a log
            # file: nothing the child writes can reach the protocol pipe.
            # (os.posix_spawn, not subprocess: keeps the ingest process small.)
            actions = [
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                (os.POSIX_SPAWN_OPEN, 2, log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
            ]
            self.shipper_pid = os.posix_spawnp(
                argv[0], argv, dict(os.environ), file_actions=actions, setsid=True
            )
            self._count("shipper_started")
        except (OSError, ValueError) as exc:
            self._count("shipper_start_failed")
            log.error("cannot start ship_command %r: %s", self.cfg.ship_command, exc)

    def flush_counters(self) -> None:
        if self.counters:
            try:
                self.spool.add_counters(dict(self.counters))
                self.counters.clear()
            except OSError as exc:
                log.warning("cannot write counters to state/: %s", exc)
        self.counters_flushed_at = self.clock()

    # -- protocol.Handler -----------------------------------------------

    def on_begin(self) -> bytes:
        # A repeated BEGIN (rsyslog retrying after an error) never rolls back:
        # on 8.2302 the messages already answered DEFER_COMMIT are not resent.
        self.in_tx = True
        return protocol.OK

    def on_commit(self) -> bytes:
        self._commit()
        self.in_tx = False
        return protocol.OK

    def _ack(self) -> bytes:
        if self.in_tx:
            return protocol.DEFER_COMMIT
        self._commit()
        return protocol.OK

    def on_message(self, line: bytes, truncated: int) -> bytes:
        now = self.clock()
        uuid = line_uuid(line)
        if uuid is not None and uuid in self.recent and holds_uuid(line, uuid):
            self._count("duplicate_lines")
            log.info("dropped a resent line (uuid %s already in the spool)", uuid.decode())
            return self._ack()
        record = encode_record(line)
        seg = self.seg
        if seg is not None and self.uncommitted == 0 and seg.lines:
            if now >= self.seg_deadline:
                self.seal("window")
            elif seg.size + len(record) > self.cfg.max_batch_bytes:
                self.seal("size")
        usage = self._spool_usage(now, len(record))
        if usage + len(record) > self.cfg.max_spool_bytes:
            self._count("refused_spool_full")
            log.warning(
                "spool full: %d of %d bytes used; refusing so rsyslog keeps the line queued",
                usage,
                self.cfg.max_spool_bytes,
            )
            return protocol.error_status(
                f"spool full ({usage} of max_spool_bytes {self.cfg.max_spool_bytes}); retry later"
            )
        seg = self.seg or self._open_segment(now)
        try:
            seg.append(record)  # reserves space first: nothing is half-written
        except OSError as exc:
            if not is_enospc(exc) and exc.errno != errno.EFBIG:
                raise
            self._count("refused_disk_full")
            log.warning("disk full writing the spool: %s", exc)
            return protocol.error_status(f"spool disk full ({exc.strerror}); retry later")
        self.usage_added += len(record)
        if self.in_tx:
            self.uncommitted += 1
        self.stored = (line, uuid, truncated, now)
        return self._ack()

    def after_reply(self) -> None:
        """Bookkeeping of the line just stored, done after its status went out:
        rsyslog renders its next message meanwhile (it is on the critical path)."""
        if self.stored is None:
            return
        line, uuid, truncated, now = self.stored
        self.stored = None
        if uuid is not None:
            self.recent.add(uuid)
        if truncated:
            self._count("truncated_lines")
            log.warning(
                "line longer than max_line_bytes %d: stored its first %d bytes, dropped %d",
                self.cfg.max_line_bytes,
                len(line),
                truncated,
            )
        severity = line_severity(line)
        if severity is not None and severity <= self.cfg.urgent_severity:
            due = max(now, self.last_urgent_seal + self.cfg.urgent_min_interval)
            self.urgent_due = due if self.urgent_due is None else min(self.urgent_due, due)

    def on_tick(self) -> Optional[float]:
        now = self.clock()
        if self.shipper_pid is not None and not self.shipper_running() and self.ship_pending:
            self.spawn_shipper()
        seg = self.seg
        if seg is not None and self.uncommitted == 0:
            if now >= self.seg_deadline:
                self.seal("window")
            elif self.urgent_due is not None and now >= self.urgent_due:
                self.seal("urgent")  # seal() clears urgent_due
                self.last_urgent_seal = now
            elif seg.size >= self.cfg.max_batch_bytes:
                self.seal("size")
        if now - self.counters_flushed_at >= COUNTER_FLUSH_SECONDS:
            self.flush_counters()
        waits = [COUNTER_FLUSH_SECONDS - (now - self.counters_flushed_at)]
        if self.ship_pending:
            waits.append(SHIP_PENDING_POLL_SECONDS)
        # Seal timers only matter once the open transaction is committed, and
        # its COMMIT arrives as input: until then, wait for input.
        if self.seg is not None and self.uncommitted == 0:
            waits.append(self.seg_deadline - now)
            if self.urgent_due is not None:
                waits.append(self.urgent_due - now)
        return max(0.0, min(waits))

    def on_eof(self) -> None:
        """rsyslog closed our stdin: make everything durable, seal, record counters.

        Lines answered DEFER_COMMIT whose COMMIT never came are kept too: the
        sync makes them durable, and rsyslog 8.2302 would never resend them.
        """
        if self.uncommitted:
            self._count("eof_uncommitted_lines_kept", self.uncommitted)
        self._commit()
        self.seal("eof")
        self.flush_counters()
