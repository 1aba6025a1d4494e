"""The operator commands as the command line runs them: values in, text out, an exit code.

What a command reports goes to stderr; what it produces (a config with
`--out -`, the device list) goes to stdout, so it can be piped.
"""

from __future__ import annotations

import sys
from typing import Any, Optional, TextIO

from omprog_forwarder.admin.provision import (
    DEVICE_CONF_ON_DEVICE,
    STILL_VALID_NOTE,
    Fleet,
    check_config_target,
    devices_json,
    devices_text,
    write_config,
)
from omprog_forwarder.admin.stack import Deployment, resolve
from omprog_forwarder.config import DEFAULT_SPOOL_DIR


def operator_session(region: Optional[str]) -> Any:
    """The operator's boto3 session (default credential chain; AWS_ENDPOINT_URL honoured)."""
    import boto3

    from omprog_forwarder.ship.auth import quiet_dependencies

    quiet_dependencies()
    return boto3.session.Session(region_name=region or None)


def deployment(session: Any, need_client: bool, **ids: Optional[str]) -> Deployment:
    return resolve(session, need_client=need_client, **ids)


def provision_command(
    ids: dict[str, Optional[str]],
    device_id: str,
    out: Optional[str],
    *,
    rotate: bool = False,
    force: bool = False,
    spool_dir: Optional[str] = None,
    session: Any = None,
    stdout: Optional[TextIO] = None,
    stderr: Optional[TextIO] = None,
) -> int:
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    session = session or operator_session(ids.get("region"))
    dep = deployment(session, True, **ids)
    target = out or f"forwarder-{device_id}.conf"
    if target != "-":
        # Refuse before touching Cognito: a rotation whose config cannot be written
        # would lock the device out.
        check_config_target(target, force or rotate)
    result = Fleet(session, dep).provision(
        device_id, rotate=rotate, spool_dir=spool_dir or DEFAULT_SPOOL_DIR
    )
    what = "rotated" if result.rotated else "provisioned"
    if result.re_enabled:
        print(f"device {device_id} was disabled: enabled it again", file=stderr)
    if target == "-":
        stdout.write(result.config_text)
        print(f"{what} {device_id} in {dep.user_pool_id}; its config is on stdout", file=stderr)
    else:
        write_config(target, result.config_text, force=force or rotate)
        print(
            f"{what} {device_id} in {dep.user_pool_id}; config written to {target} (mode 0600).\n"
            f"Install it on the device as {DEVICE_CONF_ON_DEVICE} (mode 0600, owner root) "
            "and run `omprog-forwarder check --config "
            f"{DEVICE_CONF_ON_DEVICE}` there.",
            file=stderr,
        )
    if result.rotated:
        print(f"its old sessions are signed out. {STILL_VALID_NOTE}", file=stderr)
    return 0


def deprovision_command(
    ids: dict[str, Optional[str]],
    device_id: str,
    *,
    session: Any = None,
    stderr: Optional[TextIO] = None,
) -> int:
    stderr = stderr or sys.stderr
    session = session or operator_session(ids.get("region"))
    dep = deployment(session, False, **ids)
    was_enabled = Fleet(session, dep).deprovision(device_id)
    state = "disabled and signed out" if was_enabled else "was already disabled; signed out again"
    print(f"device {device_id} {state} in {dep.user_pool_id}.\n{STILL_VALID_NOTE}", file=stderr)
    return 0


def devices_command(
    ids: dict[str, Optional[str]],
    *,
    as_json: bool = False,
    session: Any = None,
    stdout: Optional[TextIO] = None,
) -> int:
    stdout = stdout or sys.stdout
    session = session or operator_session(ids.get("region"))
    dep = deployment(session, False, **ids)
    found = Fleet(session, dep).devices()
    print(devices_json(found) if as_json else devices_text(found), file=stdout)
    return 0
