"""Dropping a line rsyslog sends again: the uuid index of ingest.

rsyslog resends its in-flight batch after a lost ACK (a restart, a killed
program), and the project's template ends every line with rsyslog's `uuid`.
`RecentSet` holds the uuids of the newest `dedup_window` stored lines, filled
at start-up from the spool (`load_recent`) and then from every line stored,
so a resent line is answered as taken and not stored twice. A line without a
uuid (other templates) is never dropped.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import re
from typing import Callable, Optional

from omprog_forwarder.spool import Spool, decode_records

log = logging.getLogger(__name__)

# The project's template ends with the uuid; anchoring at the end means text in
# `msg` can never pose as one (and lines in other formats never start with `{`).
_UUID_RE = re.compile(rb'"uuid"\s*:\s*"([0-9A-Fa-f]{32})"\s*\}\s*$')
_HEX_DIGITS = b"0123456789ABCDEFabcdef"


def line_uuid(line: bytes) -> Optional[bytes]:
    """The upper-case uuid a line of the JSON template ends with, or None."""
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

    def is_resent(self, line: bytes, uuid: Optional[bytes]) -> bool:
        """A line whose uuid is already stored (checked against its JSON on a hit)."""
        return uuid is not None and uuid in self and holds_uuid(line, uuid)


def load_recent(spool: Spool, recent: RecentSet, count: Callable[[str], None]) -> None:
    """Fill `recent` from the newest files of the spool (open segments and ready/).

    A file that cannot be read is counted (`unreadable_files`), logged and
    skipped: one bad file must not stop ingest.
    """
    stamped = [(b.mtime, b.path) for b in spool.ready_batches()]
    for path in spool.open_segments():
        with contextlib.suppress(FileNotFoundError):
            stamped.append((os.stat(path).st_mtime, path))
    chosen: list[list[bytes]] = []
    total = 0
    for _, path in sorted(stamped, reverse=True):
        if total >= recent.size:
            break
        try:
            with open(path, "rb") as fh:
                lines, _ = decode_records(fh.read())
        except FileNotFoundError:
            continue
        except OSError as exc:
            count("unreadable_files")
            log.error("cannot read %s for the dedup index: %s", path, exc)
            continue
        uuids = [u for u in map(line_uuid, lines) if u]
        chosen.append(uuids)
        total += len(uuids)
    for uuids in reversed(chosen):
        for u in uuids:
            recent.add(u)
    log.debug("dedup index holds %d uuids from %d files", len(recent), len(chosen))
