"""`omprog-forwarder run`: start-up, signals and shutdown around the omprog loop."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from omprog_forwarder.errors import ForwarderError
from omprog_forwarder.ingest import protocol
from omprog_forwarder.ingest.batcher import Batcher
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


def run(args: argparse.Namespace) -> int:
    """Start up, answer OK, serve until EOF. Returns the exit code."""
    from omprog_forwarder.cli import load_config

    install_signal_handlers()
    loop_out = os.fdopen(os.dup(STDOUT), "wb", buffering=0)
    try:
        cfg = load_config(args)
        logging.getLogger().setLevel(cfg.log_level)
        spool = Spool(cfg.spool_dir).create()
        batcher = Batcher(cfg, spool, run_options=_options_for_ship(args))
    except ForwarderError as exc:
        return _fail_start(loop_out, str(exc), exc.exit_code)
    except Exception as exc:  # start-up must always answer rsyslog with a reason
        log.exception("start-up failed")
        return _fail_start(loop_out, f"start-up failed: {exc}", 1)
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


def _options_for_ship(args: argparse.Namespace) -> list[str]:
    """The file options of this `run`, as absolute paths, for `ship_command = auto`."""
    options = []
    for flag, value in (
        ("--config", args.config),
        ("--env-file", args.env_file),
        ("--spool-dir", args.spool_dir),
    ):
        if value:
            options += [flag, os.path.abspath(value)]
    return options


def _fail_start(out: object, reason: str, code: int) -> int:
    log.error("cannot start: %s", reason)
    try:
        out.write(protocol.error_status(reason) + b"\n")  # type: ignore[attr-defined]
    except OSError:
        pass
    return code
