"""Starting the shipper from ingest: detached, never waited on, one at a time.

Ingest starts `ship` when it seals a batch (and at start-up when batches
wait). The child gets a new session, stdin and stdout from /dev/null and
stderr appended to `state/ship.log` (rotated once past 1 MiB), so nothing it
writes can reach the omprog pipe and nothing it does can stall rsyslog. A
seal while the previous shipper still runs sets `pending`: that one may have
listed ready/ for the last time already, so another starts once it exits
(`poll`, called from the loop's timer).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from typing import Callable, Optional

from omprog_forwarder.config import Config
from omprog_forwarder.spool import SHIP_LOG, Spool

log = logging.getLogger(__name__)

SHIP_LOG_MAX_BYTES = 1024 * 1024
#: How often the loop looks whether a running shipper exited, while one is pending.
PENDING_POLL_SECONDS = 0.5


class ShipperLauncher:
    """Starts `ship_command` for one ingest instance and reaps what it started."""

    def __init__(
        self,
        cfg: Config,
        spool: Spool,
        run_options: Sequence[str] = (),
        count: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.cfg = cfg
        self.spool = spool
        self.run_options = list(run_options)
        self.count = count
        self.pid: Optional[int] = None
        self.pending = False

    def running(self) -> bool:
        """Reap the shipper we started, if it exited (we never block on it)."""
        if self.pid is None:
            return False
        try:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid = self.pid
        if pid == 0:
            return True
        self.pid = None
        return False

    def argv(self) -> Optional[list[str]]:
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

    def start(self) -> None:
        """Start the shipper fully detached, or mark one pending if ours still runs."""
        if self.running():
            self.pending = True
            return
        self.pending = False
        try:
            argv = self.argv()
            if argv is None:
                return
            if not argv:
                raise ValueError("empty command")
            log_path = self.spool.state_path(SHIP_LOG)
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
            self.pid = os.posix_spawnp(
                argv[0], argv, dict(os.environ), file_actions=actions, setsid=True
            )
            self.count("shipper_started")
        except (OSError, ValueError) as exc:
            self.count("shipper_start_failed")
            log.error("cannot start ship_command %r: %s", self.cfg.ship_command, exc)

    def poll(self) -> Optional[float]:
        """Start the pending shipper once ours exited; seconds until the next look."""
        if not self.pending:
            return None
        if not self.running():
            self.start()
        return PENDING_POLL_SECONDS if self.pending else None
