"""The spool: a maildir-style directory, the contract between ingest and ship.

Invariants (what every process that touches the spool relies on):

1. An open segment has one live owner: the ingest instance that holds its
   flock(). A segment whose flock is free belongs to a dead instance and is
   adopted (sealed into ready/) by the next instance that looks.
2. Everything before a segment's last fdatasync is intact; a torn tail after
   it is cut on adoption, never an acknowledged line.
3. A batch in ready/ is immutable: written whole, synced, then renamed in.
4. A batch's `.why` file is durable in dead/ before the batch moves there.
5. A batch leaves ready/ only after the API answered 2xx, or once both halves
   of its split are durable in ready/, or into dead/ (4.).
6. A state change is an atomic `rename` followed by an fsync of both
   directories. Files and folders are readable by the owner only (0600/0700).

Layout:

    SPOOL/
      open/   WINDOW-PID-RAND.seg      one per running ingest instance, append-only;
              WINDOW-PID-RAND.seg.new  being created (never holds a line)
      ready/  BATCH_ID+LINES.batch     sealed, immutable, waiting to be shipped
      dead/   BATCH_ID+LINES.batch     refused for good by the API, with
              BATCH_ID+LINES.why       a JSON file saying why (status, body, time)
      state/  counters.json            counters of every process (under counters.lock)
              ship.json                the last ship success and error
              clock.json               the clock offset the shipper learnt from the API
              credentials.json         the Cognito tokens and AWS credentials (under
                                       credentials.lock)
              ship.log                 the started shipper's stderr (ship.log.1: older)
              ship.lock                held by the one running shipper
              shipped.keys             the dedup keys of the newest shipped lines, 8
                                       bytes each, appended by the shipper before it
                                       deletes a batch (dedup.note_shipped)

WINDOW is the UTC start of the batching window (`20261126T231000Z`); BATCH_ID is
`WINDOW-<16 hex>` and split halves append `.1` / `.2`, so every id matches
`BATCH_ID_RE` (the same pattern the Lambda holds ids to). LINES is the number
of records, kept in the name so `status` never has to read the batches.

Each record is one input line framed as `CRC32(8 hex) SP LINE LF`. Lines never
contain LF (rsyslog frames messages by it), so the framing is unambiguous and
the file stays greppable; the CRC finds a torn or half-persisted tail after a
crash, which recovery cuts off.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import mmap
import os
import re
import time
import zlib
from collections.abc import Iterator
from typing import Any, Callable, NamedTuple, Optional

from omprog_forwarder.errors import SpoolError

log = logging.getLogger(__name__)

OPEN, READY, DEAD, STATE = "open", "ready", "dead", "state"
SEG_SUFFIX, BATCH_SUFFIX, WHY_SUFFIX = ".seg", ".batch", ".why"
# state/ (see the module docstring)
COUNTERS_STATE, COUNTERS_LOCK = "counters.json", "counters.lock"
SHIP_STATE, CLOCK_STATE, SHIP_LOG, SHIP_LOCK = "ship.json", "clock.json", "ship.log", "ship.lock"
CREDENTIALS_CACHE, CREDENTIALS_LOCK = "credentials.json", "credentials.lock"
SHIPPED_KEYS = "shipped.keys"
#: A batch id, and a device id: one S3 key segment (the Lambda's ID_RE, tests/test_contract.py).
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
BATCH_ID_RE = re.compile(ID_PATTERN + r"\Z", re.ASCII)
_BATCH_NAME_RE = re.compile(r"(?P<id>" + ID_PATTERN + r")\+(?P<lines>\d+)\.batch\Z", re.ASCII)
_WINDOW_RE = re.compile(r"^(\d{8}T\d{6}Z)-")
_TEMP_NAME_RE = re.compile(r"\.tmp-(?P<pid>\d{1,10})-[0-9a-f]+\Z")
_SEG_NAME_RE = re.compile(r"^\d{8}T\d{6}Z-(?P<pid>\d{1,10})-[0-9a-f]+\.seg(?:\.new)?$")
_HEX = b"0123456789abcdef"
SEGMENT_INITIAL_BYTES = 1024 * 1024
RELEASE_CHUNK_BYTES = 256 * 1024


# ---------------------------------------------------------------- records


def encode_record(line: bytes) -> bytes:
    return b"".join((b"%08x " % zlib.crc32(line), line, b"\n"))


def decode_records(data: bytes) -> tuple[list[bytes], int]:
    """All intact records from the start of `data`, and where the intact part ends."""
    lines: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        nl = data.find(b"\n", pos)
        if nl < 0 or nl - pos < 9 or data[pos + 8] != 0x20:
            break
        head = data[pos : pos + 8]
        line = data[pos + 9 : nl]
        if head.strip(_HEX) or int(head, 16) != zlib.crc32(line):
            break
        lines.append(line)
        pos = nl + 1
    return lines, pos


# ---------------------------------------------------------------- names


def window_label(window_start: float) -> str:
    return datetime.datetime.fromtimestamp(window_start, datetime.timezone.utc).strftime(
        "%Y%m%dT%H%M%SZ"
    )


def window_of(name: str) -> Optional[datetime.datetime]:
    """The window start encoded in a segment or batch name, as an aware datetime."""
    m = _WINDOW_RE.match(name)
    if not m:
        return None
    return datetime.datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(
        tzinfo=datetime.timezone.utc
    )


def random_hex(nbytes: int) -> str:
    # os.urandom, not `secrets`: that module pulls in hashlib/OpenSSL (~4 MB RSS).
    return os.urandom(nbytes).hex()


def new_batch_id(window: str) -> str:
    return f"{window}-{random_hex(8)}"


class Batch(NamedTuple):
    """A sealed batch file in ready/ or dead/."""

    path: str
    batch_id: str
    lines: int
    size: int
    mtime: float

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def window(self) -> Optional[datetime.datetime]:
        return window_of(self.batch_id)

    @property
    def why_path(self) -> str:
        """Where this batch's `.why` file is (beside it, in dead/)."""
        return self.path[: -len(BATCH_SUFFIX)] + WHY_SUFFIX

    def read_lines(self) -> list[bytes]:
        """The batch's lines. A damaged record (disk fault) is an error, not a silent cut."""
        with open(self.path, "rb") as fh:
            data = fh.read()
        lines, good = decode_records(data)
        if good != len(data):
            raise SpoolError(f"batch {self.path} is damaged at byte {good} of {len(data)}")
        return lines


def batch_file_name(batch_id: str, lines: int) -> str:
    if not BATCH_ID_RE.match(batch_id):
        raise ValueError(f"bad batch id {batch_id!r}")
    return f"{batch_id}+{lines}{BATCH_SUFFIX}"


def parse_batch_name(name: str) -> Optional[tuple[str, int]]:
    m = _BATCH_NAME_RE.match(name)
    return (m.group("id"), int(m.group("lines"))) if m else None


# ---------------------------------------------------------------- fs helpers


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomic(path: str, data: bytes, mode: int = 0o600) -> None:
    """Write, flush, fsync, rename over, fsync the directory: in that order."""
    tmp = f"{path}.tmp-{os.getpid()}-{random_hex(3)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # a full disk must not fill up further with our leftovers
        raise
    fsync_dir(os.path.dirname(path) or ".")


@contextlib.contextmanager
def locked(path: str) -> Iterator[int]:
    """An exclusive flock on `path` (created 0600), held for the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def try_locked(path: str) -> Iterator[bool]:
    """A non-blocking exclusive flock on `path`: yields whether it was taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


# ---------------------------------------------------------------- segments


class Segment:
    """The open segment of one ingest instance, flock()ed by it while it lives.

    Records are copied into a shared memory map of the file: once copied they
    are in the page cache, so they survive a crash of the process, and no
    system call is spent per line (a write(2) per line costs more than the
    whole omprog round trip). Space is reserved with posix_fallocate first,
    so a full disk is a clean ENOSPC here and never a SIGBUS on a store. The
    tail past `size` reads as zeros, which recovery treats as the end.
    """

    def __init__(self, path: str, fd: int, window: str, size: int = 0, lines: int = 0) -> None:
        self.path = path
        self.fd = fd
        self.window = window
        self.size = size
        self.lines = lines
        self.unsynced = False
        self.mm: Optional[mmap.mmap] = None
        self.dropped_to = 0  # pages below this offset were released from our RSS

    def _reserve(self, need: int) -> None:
        have = len(self.mm) if self.mm is not None else 0
        if self.size + need <= have:
            return
        new = max(self.size + need, have * 2, SEGMENT_INITIAL_BYTES)
        new = -(-new // mmap.PAGESIZE) * mmap.PAGESIZE
        os.posix_fallocate(self.fd, 0, new)
        if self.mm is None:
            self.mm = mmap.mmap(self.fd, new)
        else:
            self.mm.resize(new)

    def append(self, record: bytes) -> None:
        """Copy one record in; raises OSError (ENOSPC) before writing anything."""
        end = self.size + len(record)
        if self.mm is None or end > len(self.mm):
            self._reserve(len(record))
        self.mm[self.size : end] = record  # type: ignore[index]
        self.size = end
        self.lines += 1
        self.unsynced = True

    def sync(self) -> None:
        """fdatasync: writes back the dirty pages of the map (and the file size)."""
        if self.unsynced:
            os.fdatasync(self.fd)
            self.unsynced = False
            self._release_pages()

    def _release_pages(self) -> None:
        # Written, synced pages need not stay mapped: dropping them keeps RSS
        # flat (the data stays in the page cache and in the file).
        upto = (self.size // mmap.PAGESIZE) * mmap.PAGESIZE
        if self.mm is not None and upto - self.dropped_to >= RELEASE_CHUNK_BYTES:
            self.mm.madvise(mmap.MADV_DONTNEED, self.dropped_to, upto - self.dropped_to)
            self.dropped_to = upto

    def finish(self) -> None:
        """Cut the reserved tail and make the file durable: ready to be renamed."""
        if self.mm is not None:
            self.mm.close()
            self.mm = None
        os.ftruncate(self.fd, self.size)
        os.fdatasync(self.fd)
        self.unsynced = False

    def close(self) -> None:
        if self.mm is not None:
            with contextlib.suppress(OSError, ValueError):
                self.mm.close()
            self.mm = None
        with contextlib.suppress(OSError):
            os.close(self.fd)


# ---------------------------------------------------------------- the spool


class Spool:
    """Operations on one spool directory, shared by every process that uses it."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.open_dir = os.path.join(self.root, OPEN)
        self.ready_dir = os.path.join(self.root, READY)
        self.dead_dir = os.path.join(self.root, DEAD)
        self.state_dir = os.path.join(self.root, STATE)

    def create(self) -> Spool:
        """Make the folders (0700). Raises SpoolError naming the path."""
        try:
            for d in (self.root, self.open_dir, self.ready_dir, self.dead_dir, self.state_dir):
                os.makedirs(d, mode=0o700, exist_ok=True)
                if not os.access(d, os.W_OK | os.X_OK):
                    raise SpoolError(f"spool folder {d} is not writable")
        except OSError as exc:
            raise SpoolError(
                f"cannot create spool folder under {self.root}: {exc.strerror}"
            ) from None
        return self

    # -- segments -------------------------------------------------------

    def new_segment(self, window: str) -> Segment:
        name = f"{window}-{os.getpid()}-{random_hex(4)}{SEG_SUFFIX}"
        path = os.path.join(self.open_dir, name)
        # Created under a name open_segments() does not list, locked, then renamed
        # into place: another instance's adopt_orphans() must never find it unlocked
        # (it would unlink it and our ACKed lines would go into a deleted file).
        tmp = path + ".new"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(tmp, path)
            # The new name must be durable before the first line in it is ACKed.
            fsync_dir(self.open_dir)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return Segment(path, fd, window)

    def seal(self, seg: Segment) -> Optional[Batch]:
        """open/ -> ready/. Only called when every line in `seg` is committed."""
        try:
            if seg.lines == 0:
                os.unlink(seg.path)
                return None
            seg.finish()
            batch_id = new_batch_id(seg.window)
            dest = os.path.join(self.ready_dir, batch_file_name(batch_id, seg.lines))
            os.rename(seg.path, dest)
            fsync_dir(self.ready_dir)
            fsync_dir(self.open_dir)
            return Batch(dest, batch_id, seg.lines, seg.size, time.time())
        finally:
            seg.close()

    def open_segments(self) -> list[str]:
        with contextlib.suppress(FileNotFoundError):
            return sorted(
                os.path.join(self.open_dir, n)
                for n in os.listdir(self.open_dir)
                if n.endswith(SEG_SUFFIX)
            )
        return []

    def _remove_stillborn(self) -> None:
        """Remove `*.seg.new` files left by an instance killed inside new_segment().

        Nothing is ever written to a segment before its rename into place, so
        a `.new` file holds no line. Only one whose creator (the pid in its
        name) no longer runs is touched: a live creator may be between the
        file's creation and its lock. The pid, not the file's age, decides,
        because the age would compare the file system's clock with this
        process's, and a clock that jumps (a Pi without RTC) makes that lie.
        """
        try:
            names = [n for n in os.listdir(self.open_dir) if n.endswith(SEG_SUFFIX + ".new")]
        except FileNotFoundError:
            return
        for name in names:
            m = _SEG_NAME_RE.match(name)
            if m is None or _pid_alive(int(m.group("pid"))):
                continue
            path = os.path.join(self.open_dir, name)
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.unlink(path)
                log.info("removed %s, left empty by an instance that died starting it", name)
            except (BlockingIOError, FileNotFoundError):
                pass  # locked by a live owner after all, or already gone
            finally:
                os.close(fd)

    def remove_stale_temps(self) -> int:
        """Remove `NAME.tmp-PID-RAND` files of write_file_atomic whose writer died.

        Such a file is a write that never reached its rename: nothing refers to it
        and it is never shipped, but it counts toward max_spool_bytes. Only files
        whose writer (the pid in the name) no longer runs are touched.
        """
        removed = 0
        for folder in (self.ready_dir, self.dead_dir, self.state_dir):
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                continue
            for name in names:
                m = _TEMP_NAME_RE.search(name)
                if m is None or _pid_alive(int(m.group("pid"))):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, name))
                    removed += 1
                    log.info("removed %s, left by a write that never finished", name)
        return removed

    def adopt_orphans(
        self, on_lines: Optional[Callable[[list[bytes]], None]] = None
    ) -> list[Batch]:
        """Seal the segments whose owner died (their flock is free).

        A torn last record is cut first. Lines a dead instance answered
        DEFER_COMMIT are kept: rsyslog 8.2302 never resends them. A segment
        that cannot be read is logged and left for the operator: one bad
        file must not stop ingest. `on_lines` sees each segment's intact lines
        before it is sealed: once in ready/ a shipper may send and delete it at
        once, and the adopting instance must still know them (they are the
        ones rsyslog resends after the crash).
        """
        self._remove_stillborn()
        self.remove_stale_temps()
        sealed = []
        for path in self.open_segments():
            try:
                batch = self._adopt_one(path, on_lines)
            except OSError as exc:
                log.error("cannot adopt %s (left in place): %s", path, exc)
                continue
            if batch:
                sealed.append(batch)
        return sealed

    def _adopt_one(
        self, path: str, on_lines: Optional[Callable[[list[bytes]], None]] = None
    ) -> Optional[Batch]:
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return None  # its owner sealed it meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                raise FileNotFoundError(path)  # renamed and replaced meanwhile
            data = os.pread(fd, os.fstat(fd).st_size, 0)
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            return None  # alive, or gone
        except OSError:
            os.close(fd)
            raise
        lines, good = decode_records(data)
        if on_lines is not None and lines:
            on_lines(lines)
        if data[good:].strip(b"\0"):
            log.warning(
                "recovered %s: cut a torn tail of %d bytes after %d intact lines",
                os.path.basename(path),
                len(data) - good,
                len(lines),
            )
        m = _WINDOW_RE.match(os.path.basename(path))
        window = m.group(1) if m else window_label(time.time())
        seg = Segment(path, fd, window, size=good, lines=len(lines))
        seg.unsynced = True
        batch = self.seal(seg)  # finish() truncates to `good` and syncs
        if batch:
            log.info("adopted %s from a dead instance as %s", os.path.basename(path), batch.name)
        return batch

    # -- batches ------------------------------------------------------

    def _batches(self, folder: str) -> list[Batch]:
        out = []
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return out
        for e in entries:
            parsed = parse_batch_name(e.name)
            if not parsed:
                continue
            try:
                st = e.stat()
            except FileNotFoundError:
                continue
            out.append(Batch(e.path, parsed[0], parsed[1], st.st_size, st.st_mtime))
        # Oldest first: by window (in the id), then by seal time.
        out.sort(key=lambda b: (b.batch_id[:16], b.mtime, b.batch_id))
        return out

    def ready_batches(self) -> list[Batch]:
        return self._batches(self.ready_dir)

    def dead_batches(self) -> list[Batch]:
        return self._batches(self.dead_dir)

    def write_batch(self, batch_id: str, lines: list[bytes], folder: Optional[str] = None) -> Batch:
        """Create a sealed batch directly (used when a batch is split)."""
        folder = folder or self.ready_dir
        path = os.path.join(folder, batch_file_name(batch_id, len(lines)))
        data = b"".join(encode_record(x) for x in lines)
        write_file_atomic(path, data)
        return Batch(path, batch_id, len(lines), len(data), time.time())

    def delete(self, batch: Batch) -> None:
        os.unlink(batch.path)
        fsync_dir(os.path.dirname(batch.path))

    def move_to_dead(self, batch: Batch, why: dict[str, Any]) -> Batch:
        """ready/ -> dead/, with the reason written (durably) beside it first."""
        dest = os.path.join(self.dead_dir, batch.name)
        dead = Batch(dest, batch.batch_id, batch.lines, batch.size, batch.mtime)
        write_file_atomic(dead.why_path, json.dumps(why, indent=2, sort_keys=True).encode() + b"\n")
        os.rename(batch.path, dest)
        fsync_dir(self.dead_dir)
        fsync_dir(os.path.dirname(batch.path))
        return dead

    def move_to_ready(self, batch: Batch) -> Batch:
        """dead/ -> ready/ (replay), dropping the .why file."""
        dest = os.path.join(self.ready_dir, batch.name)
        os.rename(batch.path, dest)
        fsync_dir(self.ready_dir)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(batch.why_path)
        fsync_dir(self.dead_dir)
        return Batch(dest, batch.batch_id, batch.lines, batch.size, batch.mtime)

    # -- size ---------------------------------------------------------

    def usage(self) -> int:
        """Bytes held in open/, ready/ and dead/ (what max_spool_bytes caps)."""
        total = 0
        for folder in (self.open_dir, self.ready_dir, self.dead_dir):
            try:
                for e in os.scandir(folder):
                    with contextlib.suppress(FileNotFoundError):
                        total += e.stat().st_size
            except FileNotFoundError:
                pass
        return total

    # -- state --------------------------------------------------------

    def state_path(self, name: str) -> str:
        return os.path.join(self.state_dir, name)

    def read_state(self, name: str) -> dict[str, Any]:
        try:
            with open(self.state_path(name), "rb") as fh:
                value = json.loads(fh.read() or b"{}")
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("state file %s unreadable (%s); treating it as empty", name, exc)
            return {}
        return value if isinstance(value, dict) else {}

    def write_state(self, name: str, value: dict[str, Any]) -> None:
        write_file_atomic(self.state_path(name), json.dumps(value, sort_keys=True).encode())

    def add_counters(self, deltas: dict[str, int]) -> None:
        """Add to the spool-wide counters in state/counters.json (locked)."""
        deltas = {k: v for k, v in deltas.items() if v}
        if not deltas:
            return
        with locked(self.state_path(COUNTERS_LOCK)):
            current = self.read_state(COUNTERS_STATE)
            for key, value in deltas.items():
                current[key] = int(current.get(key, 0)) + value
            self.write_state(COUNTERS_STATE, current)


def _pid_alive(pid: int) -> bool:
    """Does process `pid` exist? (EPERM: it does, owned by someone else.)"""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def is_enospc(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)
