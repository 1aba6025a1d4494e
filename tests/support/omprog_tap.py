"""A transparent tap between rsyslog and the omprog program: what reached it, what it answered.

    binary="python tests/support/omprog_tap.py JOURNAL python -m omprog_forwarder run ..."

The reliability suite must tell a line rsyslog 8.2302 itself lost (never
handed to the forwarder, or handed and never answered) from one the
forwarder lost after answering for it. Neither rsyslog nor the forwarder
records that per line, so this program sits in between: it starts the real
program with pipes, relays every byte both ways unchanged (one reply per
input line, in order, as the protocol requires), and appends to JOURNAL one
word per event of a line that carries `seq=NNNNNNNN`:

    H seq    handed to the program
    O seq    answered OK (durable)
    D seq    answered DEFER_COMMIT (written; durable at the commit)
    E seq    answered anything else (refused: rsyslog keeps it and retries)
    C        a COMMIT TRANSACTION answered OK: every D since the last C is durable

It dies with its program: when the program's stdout ends (a kill -9 of it),
the tap exits at once, so rsyslog sees what it would see without the tap (EOF
on the reply pipe) and starts a new instance. On EOF from rsyslog it closes
the program's stdin and relays the remaining replies before exiting with the
program's exit code. It ignores the signals the forwarder ignores, so a
signal meant for the forwarder's process group does not kill the tap alone.
Standard library only; it imports nothing of the project.
"""

from __future__ import annotations

import collections
import os
import re
import select
import signal
import subprocess
import sys

SEQ_RE = re.compile(rb"seq=(\d{8})")
COMMIT = b"COMMIT TRANSACTION"
READ = 64 * 1024


def main(argv: list[str]) -> int:
    journal_path, command = argv[0], argv[1:]
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    journal = os.open(journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    # The program gets default dispositions (as from rsyslog), not our SIG_IGN.
    child = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        bufsize=0,
        restore_signals=True,
        preexec_fn=_default_signals,
    )
    assert child.stdin is not None and child.stdout is not None
    to_child, from_child = child.stdin.fileno(), child.stdout.fileno()
    pending: collections.deque[bytes] = collections.deque()  # what each next reply answers
    inbuf = outbuf = b""
    started = False  # the first reply is the start-up OK, which answers no line
    stdin_open = True
    poller = select.poll()
    poller.register(0, select.POLLIN)
    poller.register(from_child, select.POLLIN)
    while True:
        events = poller.poll()
        notes: list[bytes] = []
        for fd, _ in events:
            data = os.read(fd, READ)
            if fd == 0:
                if not data:
                    stdin_open = False
                    poller.unregister(0)
                    child.stdin.close()
                    continue
                inbuf += data
                *lines, inbuf = inbuf.split(b"\n")
                for line in lines:
                    m = SEQ_RE.search(line)
                    key = m.group(1) if m else (b"C" if line == COMMIT else b"")
                    pending.append(key)
                    if m:
                        notes.append(b"H " + key + b"\n")
                try:
                    _write_all(to_child, data)
                except BrokenPipeError:
                    pass  # it died; its stdout ends next and we exit there
                continue
            if not data:
                _flush(journal, notes)
                os.close(journal)
                return _exit_like(child.wait())
            try:
                _write_all(1, data)
            except BrokenPipeError:
                _flush(journal, notes)
                if stdin_open:
                    child.stdin.close()
                return _exit_like(child.wait())
            outbuf += data
            *replies, outbuf = outbuf.split(b"\n")
            for reply in replies:
                if not started:
                    started = True
                    continue
                key = pending.popleft() if pending else b""
                word = reply.lstrip(b".")
                if key == b"C":
                    if word == b"OK":
                        notes.append(b"C\n")
                elif key:
                    tag = {b"OK": b"O", b"DEFER_COMMIT": b"D"}.get(word, b"E")
                    notes.append(tag + b" " + key + b"\n")
        _flush(journal, notes)


def _exit_like(code: int) -> int:
    """The program's exit status as ours; killed by a signal, die of the same signal,
    so rsyslog logs what it would log without the tap ("terminated by signal 9")."""
    if code < 0:
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # their disposition is fixed
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def _default_signals() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_DFL)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _flush(journal: int, notes: list[bytes]) -> None:
    if notes:
        _write_all(journal, b"".join(notes))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
