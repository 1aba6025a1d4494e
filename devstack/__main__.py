"""`make devstack` / `python -m devstack`: the local stack, up until Ctrl-C.

Prints the endpoint, the stack name and the `export` lines a shell needs to
provision a device and run one by hand, then every Slack alert as text as it
arrives. `SLACK_WEBHOOK_URL` set: alerts are also forwarded to that webhook.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import tempfile
import threading
from typing import Any, Optional

from devstack.slack import render
from devstack.stack import DEFAULT_REGION, DEFAULT_STACK, LocalStack


def exports(stack: LocalStack, jwks_path: str) -> str:
    env = stack.operator_environ()
    env.pop("COGNITO_JWKS")
    lines = [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
    lines.append(f'export COGNITO_JWKS="$(cat {shlex.quote(jwks_path)})"')
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__.split("\n")[0])
    parser.add_argument("--stack", default=DEFAULT_STACK, help="stack name (default %(default)s)")
    parser.add_argument("--region", default=DEFAULT_REGION, help="region (default %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="the gateway's port (default: any)")
    parser.add_argument("--moto-port", type=int, default=0, help="moto's port (default: any)")
    args = parser.parse_args(argv)

    lock = threading.Lock()

    def show(payload: dict[str, Any]) -> None:
        with lock:
            print(f"\n[slack] {render(payload)}\n", flush=True)

    forward = os.environ.get("SLACK_WEBHOOK_URL", "")
    stack = LocalStack(
        stack=args.stack,
        region=args.region,
        on_alert=show,
        slack_forward=forward,
        moto_port=args.moto_port,
        gateway_port=args.port,
        schedule_seconds=300.0,  # the template's EventBridge rate(5 minutes)
    )
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stopping.set())
    signal.signal(signal.SIGINT, lambda *a: stopping.set())
    with tempfile.TemporaryDirectory(prefix="omprog-devstack-") as work, stack:
        jwks = os.path.join(work, "jwks.json")
        with open(jwks, "w", encoding="utf-8") as fh:
            fh.write(stack.device_environ()["COGNITO_JWKS"])
        print(f"local stack {stack.stack_name} is up ({', '.join(stack.deployment.created)})")
        print(f"endpoint    {stack.endpoint_url}   (POST, SigV4 for execute-api)")
        print(f"aws (moto)  {stack.moto.endpoint}")
        print(f"slack sink  {stack.slack.url}" + (f" -> {forward}" if forward else ""))
        print("scheduled   silent devices and due digests every 300 s")
        print("\nIn another shell:\n")
        print(exports(stack, jwks))
        print(
            f"omprog-forwarder provision --stack {stack.stack_name} --device-id pi-0001 "
            "--out pi-0001.conf --spool-dir ./spool\n"
            "omprog-forwarder check --config pi-0001.conf --no-rsyslog\n"
            "printf '%s\\n' 'Dec  1 10:00:00 pi demo: hello' | "
            "omprog-forwarder run --config pi-0001.conf\n"
        )
        print("Ctrl-C stops the stack.", flush=True)
        stopping.wait()
    print("stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
