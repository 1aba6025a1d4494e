"""Dropping a line rsyslog sends again: the uuid index of ingest.

rsyslog resends its in-flight batch after a lost ACK (a restart, a killed
program), and 8.2302 hands the first line of a batch again far later when the
program died between transactions (docs/rsyslog.md). The project's template
ends every line with rsyslog's `uuid`. `RecentSet` holds the uuids of at least
the newest `dedup_window` stored lines, filled at start-up from the spool
(`load_recent`: open segments, ready/, and the keys of the lines shipped
last, which the shipper keeps in state/shipped.keys with `note_shipped`) and
then from every line stored, so a resent line is answered as taken and not
stored twice. A line without a uuid (other templates) is never dropped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from array import array
from collections.abc import Iterable
from typing import Callable, Optional

from omprog_forwarder.spool import SHIPPED_KEYS, Spool, decode_records, write_file_atomic

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
    """The uuids of at least the most recent `size` stored lines, in 32 to 64 bytes each.

    rsyslog 8.2302 can hand a line again long after it was answered: when
    the program died between two transactions, the first line of the next
    batch is sent in that batch *and* put back at the tail of the action
    queue (docs/rsyslog.md), so the copy arrives as many lines later as the
    queue held then. The window must therefore be large, and a Python set of
    that many ints (with the FIFO that evicts them) costs about 180 bytes a line.

    A uuid is kept as its low 64 bits (random in rsyslog's uuids; two
    different lines share them with a chance of about `size` / 2**64) in
    one of two open-addressing tables (`array('Q')`, linear probing, never
    more than half full; 0 marks a free slot, so key 0 has a flag of its
    own). New keys go to the young table; when it holds
    `size` keys it becomes the old one and the previous old one is dropped,
    so the newest `size` to `2 * size` keys are always present.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        slots = 1
        while slots < 2 * size:
            slots *= 2
        self._mask = slots - 1
        self._young = self._empty()
        self._old = self._empty()
        self._young_count = 0
        self._old_count = 0
        self._young_zero = self._old_zero = False

    def _empty(self) -> array:
        # Repetition fills the array in place: no table-sized bytes object on the way,
        # which would add a third table to the peak RSS at every rotation.
        return array("Q", [0]) * (self._mask + 1)

    @staticmethod
    def key(uuid: bytes) -> int:
        """The table key of a 32-hex-digit uuid: its low 64 bits."""
        return int(uuid[16:], 16)

    def __contains__(self, uuid: bytes) -> bool:
        key = self.key(uuid)
        if not key:
            return self._young_zero or self._old_zero
        mask = self._mask
        for table in (self._young, self._old):
            i = key & mask
            while True:
                slot = table[i]
                if slot == key:
                    return True
                if not slot:
                    break
                i = (i + 1) & mask
        return False

    def __len__(self) -> int:
        return self._young_count + self._old_count

    def add(self, uuid: bytes) -> None:
        self.add_key(self.key(uuid))

    def add_key(self, key: int) -> None:
        table = self._young
        if key:
            mask = self._mask
            i = key & mask
            while True:
                slot = table[i]
                if slot == key:
                    return
                if not slot:
                    break
                i = (i + 1) & mask
            table[i] = key
        elif self._young_zero:
            return
        else:
            self._young_zero = True
        self._young_count += 1
        if self._young_count >= self.size:
            self._old, self._old_count, self._old_zero = table, self._young_count, self._young_zero
            self._young, self._young_count, self._young_zero = self._empty(), 0, False

    def is_resent(self, line: bytes, uuid: Optional[bytes]) -> bool:
        """A line whose uuid is already stored (checked against its JSON on a hit)."""
        return uuid is not None and uuid in self and holds_uuid(line, uuid)


def load_recent(spool: Spool, recent: RecentSet, count: Callable[[str], None]) -> None:
    """Fill `recent` with the newest lines the spool knows: its open segments and
    ready/ first, then, while there is room, the keys of the lines shipped last.

    rsyslog's late copy of a line (module docstring) can reach an instance
    started after the line was shipped and its batch deleted; state/shipped.keys
    is how that instance still knows it. A file that cannot be read is counted
    (`unreadable_files`), logged and skipped: one bad file must not stop ingest.
    """
    stamped = [(b.mtime, b.path) for b in spool.ready_batches()]
    for path in spool.open_segments():
        with contextlib.suppress(FileNotFoundError):
            stamped.append((os.stat(path).st_mtime, path))
    chosen: list[array] = []
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
        keys = array("Q", [recent.key(u) for u in map(line_uuid, lines) if u])
        del lines
        chosen.append(keys)
        total += len(keys)
    shipped = array("Q")
    if total < recent.size:
        shipped = read_shipped(spool, recent.size - total, count)
    for key in shipped:
        recent.add_key(key)
    for keys in reversed(chosen):
        for key in keys:
            recent.add_key(key)
    log.debug(
        "dedup index holds %d uuids from %d files and %d shipped lines",
        len(recent),
        len(chosen),
        len(shipped),
    )


def read_shipped(spool: Spool, most: int, count: Callable[[str], None]) -> array:
    """The newest `most` keys of state/shipped.keys (oldest first; none if absent)."""
    keys = array("Q")
    try:
        with open(spool.state_path(SHIPPED_KEYS), "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            whole = size - size % keys.itemsize  # without a torn last append
            start = max(0, whole - most * keys.itemsize)
            fh.seek(start)
            keys.frombytes(fh.read(whole - start))
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:  # ValueError: shorter than its size (truncated meanwhile)
        count("unreadable_files")
        log.error("cannot read %s for the dedup index: %s", SHIPPED_KEYS, exc)
        keys = array("Q")
    return keys


def note_shipped(spool: Spool, lines: Iterable[bytes], window: int) -> None:
    """Append the keys of a shipped batch's lines to state/shipped.keys, durably.

    Called by the one shipper (under ship.lock) before it deletes the batch,
    so no key of a deleted batch is missing. The file keeps at least the
    newest `window` keys: past twice that it is cut back to `window`.
    """
    keys = array("Q", [RecentSet.key(u) for u in map(line_uuid, lines) if u])
    if not keys:
        return
    path = spool.state_path(SHIPPED_KEYS)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        size = os.fstat(fd).st_size
        size -= size % keys.itemsize  # cut a torn append, so keys stay aligned
        data = memoryview(keys.tobytes())
        offset = size
        while data:
            written = os.pwrite(fd, data, offset)
            data, offset = data[written:], offset + written
        os.ftruncate(fd, offset)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    if offset > 2 * window * keys.itemsize:
        with open(path, "rb") as fh:
            fh.seek(offset - window * keys.itemsize)
            write_file_atomic(path, fh.read(window * keys.itemsize))
