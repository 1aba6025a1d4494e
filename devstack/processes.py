"""The processes of this machine by their command lines (Linux /proc), for cleaning up.

The demo, the tests and the benchmarks start rsyslogd, forwarders and shippers
that run detached; whatever they left is found by a path on its command line
(its own temporary folder, its spool) and stopped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator


def cmdlines() -> Iterator[tuple[int, list[bytes]]]:
    """(pid, argv) of every process this user can see, this one excluded."""
    mine = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == mine:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().split(b"\0")
        except OSError:
            continue
        yield int(entry), cmd


def processes_under(folder: str) -> list[int]:
    """Pids whose command line names `folder` anywhere in an argument."""
    needle = folder.encode()
    return [pid for pid, cmd in cmdlines() if any(needle in arg for arg in cmd)]
