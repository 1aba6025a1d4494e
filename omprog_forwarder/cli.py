"""Command line: device commands (`run`, `ship`, `replay`, `status`, `check`) and
operator commands (`provision`, `deprovision`, `devices`).

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
    cp = sub.add_parser(
        "check", parents=[common], help="test this device: config, spool, rsyslog, login, API"
    )
    cp.add_argument(
        "--rsyslog-conf",
        metavar="FILE",
        default="/etc/rsyslog.conf",
        help="rsyslog's main config, for rsyslogd -N1 (default %(default)s)",
    )
    cp.add_argument(
        "--no-rsyslog",
        action="store_true",
        help="this device feeds `run` without rsyslog: skip the rsyslog step",
    )
    cp.add_argument(
        "--rsyslog-snippet",
        metavar="FILE",
        default="/etc/rsyslog.d/60-omprog-forwarder.conf",
        help="where the project's rsyslog.d snippet is installed (default %(default)s)",
    )

    # Operator commands: run with the operator's AWS credentials, not on a device.
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--stack", metavar="NAME", help="the CloudFormation stack of the deployment")
    where.add_argument("--region", metavar="REGION", help="its AWS region (default: boto3's)")
    where.add_argument("--user-pool-id", metavar="ID", help="instead of (or over) --stack")
    where.add_argument("--client-id", metavar="ID", help="the app client (with --user-pool-id)")
    where.add_argument("--identity-pool-id", metavar="ID", help="(with --user-pool-id)")
    where.add_argument("--endpoint-url", metavar="URL", help="the API's .../logs URL")
    pp = sub.add_parser(
        "provision", parents=[where], help="create a device's Cognito user and its config file"
    )
    pp.add_argument("--device-id", required=True, metavar="ID", help="the new device's id")
    pp.add_argument(
        "--out",
        metavar="FILE",
        help="where to write the config (mode 0600; `-` for stdout; "
        "default forwarder-ID.conf here)",
    )
    pp.add_argument("--force", action="store_true", help="replace an existing --out file")
    pp.add_argument(
        "--rotate",
        action="store_true",
        help="the device exists: give it a new password and sign out its sessions",
    )
    pp.add_argument(
        "--spool-dir",
        metavar="DIR",
        help=f"the spool_dir written into the config (default {config.DEFAULT_SPOOL_DIR})",
    )
    dp = sub.add_parser(
        "deprovision", parents=[where], help="disable a device's user and sign it out"
    )
    dp.add_argument("--device-id", required=True, metavar="ID")
    lp = sub.add_parser("devices", parents=[where], help="the provisioned devices")
    lp.add_argument("--json", action="store_true", help="print JSON instead of text")
    return p


OPERATOR_COMMANDS = ("provision", "deprovision", "devices")


def deployment_ids(args: argparse.Namespace) -> dict[str, Optional[str]]:
    """The deployment the operator named (a stack, explicit ids, or both)."""
    return {
        "stack": args.stack,
        "region": args.region,
        "user_pool_id": args.user_pool_id,
        "client_id": args.client_id,
        "identity_pool_id": args.identity_pool_id,
        "endpoint_url": args.endpoint_url,
    }


def operator_command(args: argparse.Namespace) -> int:
    from omprog_forwarder.admin import commands

    ids = deployment_ids(args)
    if args.command == "provision":
        return commands.provision_command(
            ids,
            args.device_id,
            args.out,
            rotate=args.rotate,
            force=args.force,
            spool_dir=args.spool_dir,
        )
    if args.command == "deprovision":
        return commands.deprovision_command(ids, args.device_id)
    return commands.devices_command(ids, as_json=args.json)


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


def check_command(args: argparse.Namespace) -> int:
    from omprog_forwarder.ship.check import FAIL_MARK, Check

    try:
        cfg = load_config(args)
    except FatalError as exc:  # a config that does not load is the first failed step
        print(f"{FAIL_MARK} {'config':<12} {exc}", flush=True)
        return 1
    logging.getLogger().setLevel(cfg.log_level)
    check = Check(
        cfg,
        args.config,
        rsyslog_conf=args.rsyslog_conf,
        rsyslog_snippet=args.rsyslog_snippet,
        use_rsyslog=not args.no_rsyslog,
    )
    return check.run()


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
        if args.command in OPERATOR_COMMANDS:
            return operator_command(args)
        if args.command == "check":
            return check_command(args)
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
