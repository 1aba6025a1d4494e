"""Command line: `run` (what rsyslog starts), `ship`, `replay`, `status`.

The top of the import graph: it parses the arguments, loads the
configuration and hands each command its values; nothing imports this
module, and nothing below it sees argparse. It is on the ingest path, so it
imports the standard library only; each command's modules are imported
inside that command.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Optional

from omprog_forwarder import __version__, config
from omprog_forwarder.errors import FatalError, ForwarderError


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="INI file with a [forwarder] section")
    common.add_argument("--spool-dir", metavar="DIR", help="spool directory (key spool_dir)")
    common.add_argument(
        "--env-file",
        metavar="FILE",
        help="also read the published how-to's .env names (AWS_REGION, AWS_USERPOOLID, ...)",
    )

    p = argparse.ArgumentParser(
        prog="omprog-forwarder",
        description="Lossless syslog shipping from rsyslog (omprog) to AWS.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    sub.add_parser(
        "run", parents=[common], help="the omprog program rsyslog starts (stdin/stdout protocol)"
    )
    sub.add_parser("ship", parents=[common], help="send the sealed batches in ready/, then exit")
    rp = sub.add_parser(
        "replay", parents=[common], help="move dead batches back to ready/ and ship them"
    )
    rp.add_argument("--dead", action="store_true", help="replay every batch in dead/")
    rp.add_argument("batches", nargs="*", metavar="BATCH", help="batch ids or file names in dead/")
    sp = sub.add_parser("status", parents=[common], help="spool depth, counters, last ship result")
    sp.add_argument("--json", action="store_true", help="print JSON instead of text")
    return p


def load_config(args: argparse.Namespace) -> config.Config:
    """The configuration for these arguments (options > environment > files > defaults)."""
    extra = None
    if getattr(args, "env_file", None):
        from omprog_forwarder.envfile import read_env_file

        extra = read_env_file(args.env_file)
    return config.load(args.config, {"spool_dir": args.spool_dir}, extra_file_values=extra)


def setup_logging(level: str = "INFO") -> None:
    """Diagnostics go to stderr, one write per line (rsyslog's output= file is shared)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("omprog-forwarder[%(process)d] %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def file_options(args: argparse.Namespace) -> list[str]:
    """The file options given, as absolute paths (for the shipper `run` starts)."""
    options = []
    for flag, value in (
        ("--config", args.config),
        ("--env-file", args.env_file),
        ("--spool-dir", args.spool_dir),
    ):
        if value:
            options += [flag, os.path.abspath(value)]
    return options


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging()
    if args.command == "run":
        from omprog_forwarder.ingest.run import refuse_start, run

        try:
            cfg = load_config(args)
        except FatalError as exc:  # rsyslog still gets its one status line
            return refuse_start(str(exc), exc.exit_code)
        logging.getLogger().setLevel(cfg.log_level)
        return run(cfg, ship_options=file_options(args))
    try:
        cfg = load_config(args)
        logging.getLogger().setLevel(cfg.log_level)
        if args.command == "status":
            from omprog_forwarder.status import status

            return status(cfg, as_json=args.json)
        if args.command == "ship":
            from omprog_forwarder.ship.shipper import run_ship

            return run_ship(cfg)
        if args.command == "replay":
            from omprog_forwarder.ship.shipper import run_replay

            return run_replay(cfg, args.batches, all_dead=args.dead)
    except ForwarderError as exc:
        print(f"omprog-forwarder {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    return 2
