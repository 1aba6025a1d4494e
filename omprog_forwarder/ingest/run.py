"""`omprog-forwarder run`: start-up, signals and shutdown around the omprog loop.

The command line (`cli.py`) parses and loads the configuration; this module
receives the values. A failure at any point before the loop still answers
rsyslog with one error status line and a non-zero exit (`refuse_start`), so
rsyslog logs the reason and tries again later.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import BinaryIO, Optional

from omprog_forwarder.config import Config
from omprog_forwarder.errors import FatalError
from omprog_forwarder.ingest import protocol
from omprog_forwarder.ingest.batcher import Batcher
from omprog_forwarder.ingest.launcher import ShipperLauncher
from omprog_forwarder.spool import Spool

log = logging.getLogger(__name__)
STDIN, STDOUT = 0, 1


def _note_signal(signum: int, _frame: object) -> None:
    # rsyslog resets dispositions to default (which kills), and systemd sends
    # SIGTERM to the whole group at stop: dying here would lose the in-flight
    # batch on 8.2302. Keep going; rsyslog closes our stdin when it is done.
    log.info("received %s; continuing until rsyslog closes stdin", signal.Signals(signum).name)


def install_signal_handlers() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, _note_signal)


def run(cfg: Config, ship_options: Sequence[str] = ()) -> int:
    """Start up, answer OK, serve until EOF. Returns the exit code.

    `ship_options` are the file options this `run` was given (absolute
    paths), handed on to the shipper it starts when `ship_command = auto`.
    """
    install_signal_handlers()
    loop_out = os.fdopen(os.dup(STDOUT), "wb", buffering=0)
    try:
        spool = Spool(cfg.spool_dir).create()
        launcher = ShipperLauncher(cfg, spool, ship_options)
        batcher = Batcher(cfg, spool, launcher)
    except FatalError as exc:
        return refuse_start(str(exc), exc.exit_code, loop_out)
    except Exception as exc:  # start-up must always answer rsyslog with a reason
        log.exception("start-up failed")
        return refuse_start(f"start-up failed: {exc}", 1, loop_out)
    # Nothing but protocol words may reach fd 1: point the Python-level stdout
    # at stderr so a stray print() can never corrupt the conversation.
    sys.stdout = sys.stderr
    loop = protocol.OmprogLoop(
        STDIN,
        loop_out.fileno(),
        batcher,
        begin_mark=cfg.begin_transaction_mark.encode(),
        commit_mark=cfg.commit_transaction_mark.encode(),
        max_line_bytes=cfg.max_line_bytes,
    )
    try:
        loop.reply(protocol.OK)
        loop.run()
    except protocol.RsyslogGone:
        log.info("rsyslog closed our stdout; sealing and exiting")
        batcher.on_eof()
    except Exception:
        # Unknown state (an EIO from fdatasync, say): keep what is written,
        # exit non-zero; rsyslog restarts us and resends the unanswered line.
        log.exception("ingest failed; exiting so rsyslog restarts it")
        try:
            batcher.on_eof()
        except Exception:
            log.exception("could not seal on the way out; the next start adopts the segment")
        return 1
    return 0


def refuse_start(reason: str, code: int, out: Optional[BinaryIO] = None) -> int:
    """Answer rsyslog's start-up handshake with an error status; return `code`."""
    log.error("cannot start: %s", reason)
    try:
        if out is None:
            os.write(STDOUT, protocol.error_status(reason) + b"\n")
        else:
            out.write(protocol.error_status(reason) + b"\n")
    except OSError:
        pass
    return code
