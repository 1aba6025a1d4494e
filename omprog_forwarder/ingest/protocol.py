"""The omprog protocol as rsyslog 8.2302 speaks it, and nothing else.

rsyslog writes one message per line on our stdin; with `confirmMessages="on"`
it waits for exactly one status line per input line on our stdout:

    OK              taken (and, outside a transaction, durable)
    DEFER_COMMIT    taken inside a transaction; durable at the commit mark
    anything else   not taken: rsyslog retries the same message (1 s later)

`OK` also opens the conversation (after start-up), and answers the transaction
marks. The loop below owns stdin/stdout; the work is a `Handler`. A handler
that cannot take a message now raises a `RecoverableError`; this loop, and
only it, turns that into the error status rsyslog retries on. stdin is read
as bytes with os.read (no buffered reader, so poll() never misses data that
sits in a buffer), an empty line is a message, and EOF ends the loop.
"""

from __future__ import annotations

import errno
import io
import os
import select
from typing import Callable, Optional, Protocol

from omprog_forwarder.errors import RecoverableError

OK = b"OK"
DEFER_COMMIT = b"DEFER_COMMIT"
_READ_SIZE = 64 * 1024
_MAX_STATUS = 4000  # rsyslog reads at most 4095 bytes of a reply


def error_status(reason: str) -> bytes:
    """An error status rsyslog logs and retries: one line, no leading dot."""
    text = " ".join(reason.split())
    return ("Error: " + text).encode("utf-8", "replace")[:_MAX_STATUS]


def answer_message(on_message: Callable[[bytes, int], bytes], line: bytes, truncated: int) -> bytes:
    """The status line for one message: the handler's word, or the error status
    of the RecoverableError it raised (the one place a refusal becomes one)."""
    try:
        return on_message(line, truncated)
    except RecoverableError as exc:
        return error_status(str(exc))


class Handler(Protocol):
    def on_message(self, line: bytes, truncated: int) -> bytes:
        """The status word for one message; raises RecoverableError to refuse it."""

    def on_begin(self) -> bytes: ...

    def on_commit(self) -> bytes: ...

    def after_reply(self) -> None:
        """Work that need not delay the status line (bookkeeping)."""

    def on_tick(self) -> Optional[float]:
        """Timers; returns seconds until it wants to be called again (None: no timer)."""

    def on_eof(self) -> None: ...


class RsyslogGone(Exception):
    """stdout is closed (EPIPE): rsyslog stopped listening."""


class OmprogLoop:
    """Reads lines from `in_fd`, asks `handler`, writes one status line to `out_fd`."""

    def __init__(
        self,
        in_fd: int,
        out_fd: int,
        handler: Handler,
        begin_mark: bytes,
        commit_mark: bytes,
        max_line_bytes: int,
    ) -> None:
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.handler = handler
        self.begin_mark = begin_mark
        self.commit_mark = commit_mark
        self.max_line_bytes = max_line_bytes

    def reply(self, status: bytes) -> None:
        data = status + b"\n"
        try:
            while data:
                data = data[os.write(self.out_fd, data) :]
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                raise RsyslogGone() from None
            raise

    def _dispatch(self, line: bytes, truncated: int) -> None:
        if line == self.begin_mark and not truncated:
            status = self.handler.on_begin()
        elif line == self.commit_mark and not truncated:
            status = self.handler.on_commit()
        else:
            status = answer_message(self.handler.on_message, line, truncated)
        self.reply(status)
        self.handler.after_reply()

    def run(self) -> None:
        """Until EOF. Raises RsyslogGone if stdout closes first."""
        buf = bytearray()
        dropped = 0  # bytes of the current line beyond max_line_bytes
        # One reusable buffer: no large allocation per read (os.read would
        # allocate and shrink a _READ_SIZE object for every message).
        reader = io.FileIO(self.in_fd, "rb", closefd=False)
        rbuf = bytearray(_READ_SIZE)
        rview = memoryview(rbuf)
        poller = select.poll()
        poller.register(self.in_fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        while True:
            wait = self.handler.on_tick()
            timeout_ms = -1 if wait is None else max(0, int(wait * 1000) + 1)
            if not poller.poll(timeout_ms):
                continue
            n = reader.readinto(rbuf)
            if not n:
                break
            chunk = rview[:n].tobytes()
            start = 0
            while True:
                nl = chunk.find(b"\n", start)
                piece = chunk[start:] if nl < 0 else chunk[start:nl]
                room = self.max_line_bytes - len(buf)
                if len(piece) > room:
                    dropped += len(piece) - room
                    piece = piece[:room]
                if nl < 0:
                    buf += piece  # the rest of this line comes in a later read
                    break
                if buf:
                    buf += piece
                    line = bytes(buf)
                    buf.clear()
                else:
                    line = piece
                self._dispatch(line, dropped)
                dropped = 0
                start = nl + 1
        # A fragment left in `buf` at EOF was never a complete message (rsyslog
        # ends each with LF) and got no reply: rsyslog still holds it.
        self.handler.on_eof()
