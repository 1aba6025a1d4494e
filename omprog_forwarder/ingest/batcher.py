"""The seal policy behind the omprog loop: append, commit, seal.

One `Batcher` per ingest process. It owns one open segment at a time and seals
it into ready/ when its wall-clock-aligned window ends (timed on the monotonic
clock), when it reaches `max_batch_bytes`, or soon after an urgent line
(rate-limited), but only ever when every line in it is committed. A line it
cannot take now raises a `RecoverableError`, which the protocol loop turns
into an error status. Every refusal and drop has a named counter and one log
line. Dropping resent lines is `dedup.py`'s job, starting the shipper
`launcher.py`'s.
"""

from __future__ import annotations

import collections
import errno
import logging
import math
import re
import time
from typing import Callable, Optional

from omprog_forwarder.config import SEVERITY_BY_NAME, Config
from omprog_forwarder.errors import DiskFullError, SpoolFullError
from omprog_forwarder.ingest import protocol
from omprog_forwarder.ingest.dedup import RecentSet, line_uuid, load_recent
from omprog_forwarder.ingest.launcher import ShipperLauncher
from omprog_forwarder.spool import (
    Batch,
    Segment,
    Spool,
    encode_record,
    is_enospc,
    window_label,
)

log = logging.getLogger(__name__)

_JSON_SEVERITY_RE = re.compile(rb'"severity"\s*:\s*"?([0-7]|[A-Za-z]+)\b')
# The how-to's CustomLogFormat: `2024-12-30 22:50:33 host daemon.err: tag: msg`
# (rsyslog itself keeps the `T` of RFC 3339 between date and time).
_CUSTOM_SEVERITY_RE = re.compile(
    rb"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\S* \S+ [A-Za-z0-9]+\.([A-Za-z]+): "
)
_SEVERITY_BYTES = {name.encode(): num for name, num in SEVERITY_BY_NAME.items()}
COUNTER_FLUSH_SECONDS = 10.0
USAGE_RESCAN_SECONDS = 1.0
#: While lines are refused (spool or disk full), how often to make sure a shipper runs.
MAKE_ROOM_SECONDS = 10.0


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


class Batcher:
    """The `protocol.Handler` of `omprog-forwarder run`: the seal policy.

    Dedup (`dedup.py`) and starting the shipper (`launcher.py`) are its
    collaborators; `launcher` is built by the caller (`run.py`), and gets this
    batcher's counter. `clock` is monotonic (deadlines), `wall` is the wall
    clock (window alignment).
    """

    def __init__(
        self,
        cfg: Config,
        spool: Spool,
        launcher: Optional[ShipperLauncher] = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.spool = spool
        self.clock = clock
        self.wall = wall
        self.seg: Optional[Segment] = None
        self.seg_deadline = math.inf
        self.in_tx = False
        self.uncommitted = 0
        self.urgent_due: Optional[float] = None
        self.last_urgent_seal = -math.inf
        self.room_asked_at = -math.inf
        self.recent = RecentSet(cfg.dedup_window)
        self.counters: collections.Counter[str] = collections.Counter()
        self.counters_flushed_at = clock()
        self.usage_base = 0
        self.usage_added = 0
        self.usage_at = -math.inf
        self.launcher = launcher or ShipperLauncher(cfg, spool)
        self.launcher.count = self._count
        self.stored: Optional[tuple[bytes, Optional[bytes], int, float]] = None
        # The index first, then what dead instances left (their lines are the ones
        # rsyslog resends, so they must be the newest in the index), and only then a
        # shipper, which may delete an adopted batch the moment it is in ready/.
        load_recent(spool, self.recent, self._count)
        if self._adopt_orphans():
            self.launcher.start()  # sealed batches to ship now, not at our first seal

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
        self.launcher.start()
        return batch

    def _adopt_orphans(self) -> int:
        """Seal dead instances' segments into ready/ (their uuids into the dedup index
        first); how many there were."""
        adopted = self.spool.adopt_orphans(on_lines=self._remember)
        for batch in adopted:
            self._count("adopted_segments")
            self._count("adopted_lines", batch.lines)
        return len(adopted)

    def _remember(self, lines: list[bytes]) -> None:
        for uuid in map(line_uuid, lines):
            if uuid is not None:
                self.recent.add(uuid)

    def _make_room(self, now: float) -> None:
        """A line is being refused: see that a shipper runs to empty ready/.

        The shipper is started at seals, and a full spool seals nothing. Once
        the shipper that was running has given up (its ship_max_seconds spent
        in an outage), nothing would ever drain ready/ again: the refusals
        would go on after the API is back, and rsyslog's queue would fill up
        until rsyslog drops lines. At most every MAKE_ROOM_SECONDS, and only
        when there is something in ready/ to send.
        """
        if now - self.room_asked_at < MAKE_ROOM_SECONDS:
            return
        self.room_asked_at = now
        if self.spool.ready_batches():
            self.launcher.start()

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
        """Store one line. Raises SpoolFullError / DiskFullError when it cannot
        be taken now; the protocol loop answers rsyslog with an error status."""
        now = self.clock()
        uuid = line_uuid(line)
        if self.recent.is_resent(line, uuid):
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
            self._make_room(now)
            raise SpoolFullError(
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
            self._make_room(now)
            raise DiskFullError(f"spool disk full ({exc.strerror}); retry later") from None
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
        ship_wait = self.launcher.poll()
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
        if ship_wait is not None:
            waits.append(ship_wait)
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
