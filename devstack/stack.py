"""The local stack in one object: moto, the identity pool, the gateway, the handler, Slack.

    with LocalStack() as stack:
        stack.endpoint_url          # the device's endpoint_url (POST /prod/logs)
        stack.operator_environ()    # for `omprog-forwarder provision --stack ...`
        stack.device_environ()      # for a device process (run, ship, check)

Everything comes from `lambda/template.yaml` (devstack/template.py): the
Cognito pools and the bucket are created with the template's settings, and
the handler runs with the function's environment resolved from it. The
gateway (devstack/gateway.py) verifies SigV4 against the credentials the
IdentityBroker issued, builds the REST proxy event with the caller's
identity, and calls the real handler in this process (`handler.handle`, what
`lambda_handler` calls, with clients pointed at moto) under a context whose
remaining time counts down from the template's Timeout. Alerts go to the
local Slack sink (printed by `python -m devstack`), or on to
`SLACK_WEBHOOK_URL` when that is set. The scheduled function (silent
devices, due digests) runs on `run_scheduled()`, or every
`schedule_seconds` in a thread (`python -m devstack` runs it every 300 s,
as the template's EventBridge schedule does).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from typing import Any, Callable, Optional

from devstack.aws import ADMIN_KEYS, IdentityBroker, MotoServer, moto_jwks
from devstack.gateway import Gateway, lambda_proxy
from devstack.slack import SlackSink
from devstack.template import REPO_ROOT, SCHEDULED_FUNCTION, LocalDeployment, deploy

LAMBDA_DIR = os.path.join(REPO_ROOT, "lambda")
DEFAULT_STACK = "omprog-forwarder"
DEFAULT_REGION = "eu-west-1"


def lambda_modules() -> tuple[Any, Any, Any]:
    """The functions' `handler`, `scheduled` and `alerts` modules, imported as the runtime does."""
    if LAMBDA_DIR not in sys.path:
        sys.path.insert(0, LAMBDA_DIR)
    import alerts
    import handler
    import scheduled

    return handler, scheduled, alerts


class LambdaContext:
    """What the Lambda runtime hands the handler: a request id and a deadline."""

    def __init__(self, timeout: float, function_name: str) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = function_name
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class LocalStack:
    """See the module docstring. Ports are chosen by the system unless given."""

    def __init__(
        self,
        *,
        stack: str = DEFAULT_STACK,
        region: str = DEFAULT_REGION,
        parameters: Optional[dict[str, Any]] = None,
        slack_forward: str = "",
        on_alert: Optional[Callable[[dict[str, Any]], None]] = None,
        moto_port: int = 0,
        gateway_port: int = 0,
        clock: Callable[[], float] = time.time,
        lambda_clock: Optional[Callable[[], float]] = None,
        credentials_lifetime: float = 3600.0,
        schedule_seconds: float = 0.0,
    ) -> None:
        self.stack_name = stack
        self.region = region
        self.parameters = dict(parameters or {})
        self.moto = MotoServer(region, moto_port)
        self.broker = IdentityBroker(clock=clock, lifetime=credentials_lifetime)
        self.slack = SlackSink(on_alert=on_alert, forward_to=slack_forward)
        self.clock = clock
        # The functions' wall clock (their state's timestamps): the demo moves it ahead
        # to show a cool-down ending or a device going silent without waiting for it.
        self.lambda_clock = lambda_clock or clock
        self.schedule_seconds = schedule_seconds
        self._scheduler: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        self._gateway_port = gateway_port
        self.gateway: Optional[Gateway] = None
        self.deployment: Optional[LocalDeployment] = None
        self._handler: Any = None
        self._deps: Any = None
        self._scheduled: Any = None
        self._scheduled_deps: Any = None

    # -- lifecycle --------------------------------------------------------

    def start(self) -> LocalStack:
        try:
            self.moto.start()
            self.broker.__enter__()
            self.slack.start()
            stage = self.parameters.get("StageName", "prod")
            self.gateway = Gateway(
                self.broker.lookup,
                region=self.region,
                stage=stage,
                clock=self.clock,
                on_request=lambda_proxy(self._invoke),
            )
            self.gateway.port = self._gateway_port
            self.gateway.start()
            params = {"SlackWebhookUrl": self.slack.url, **self.parameters}
            self.deployment = deploy(
                self.moto,
                stack=self.stack_name,
                endpoint_url=self.gateway.url,
                parameters=params,
            )
            self._wire_functions()
            if self.schedule_seconds > 0:
                self._scheduler = threading.Thread(
                    target=self._every, name="scheduled-function", daemon=True
                )
                self._scheduler.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._scheduler is not None:
            self._scheduler.join(10)
        if self.gateway is not None:
            self.gateway.stop()
        self.slack.stop()
        self.broker.__exit__(None, None, None)
        self.moto.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- the function -------------------------------------------------------

    def _wire_functions(self) -> None:
        handler, scheduled, alerts = lambda_modules()
        clients: dict[str, Any] = {}

        def client(service: str) -> Callable[[], Any]:
            def make() -> Any:
                if service not in clients:
                    clients[service] = self.moto.client(service)
                return clients[service]

            return make

        self._handler = handler
        self._deps = handler.Dependencies(
            s3=client("s3"),
            cognito=client("cognito-idp"),
            secrets=client("secretsmanager"),
            dynamodb=client("dynamodb"),
            transport=alerts.urllib_transport,
            sleep=time.sleep,
            clock=time.monotonic,
            wall=self.lambda_clock,
            environ=self.function_env,
        )
        assert self.deployment is not None
        if SCHEDULED_FUNCTION in self.deployment.functions:
            self._scheduled = scheduled
            self._scheduled_deps = scheduled.Dependencies(
                dynamodb=client("dynamodb"),
                cognito=client("cognito-idp"),
                secrets=client("secretsmanager"),
                transport=alerts.urllib_transport,
                sleep=time.sleep,
                clock=time.monotonic,
                wall=self.lambda_clock,
                environ=self.deployment.functions[SCHEDULED_FUNCTION].env,
            )

    def _invoke(self, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        dep = self.deployment
        assert dep is not None and self._handler is not None
        ctx = LambdaContext(dep.function_timeout, dep.outputs.get("FunctionName", "local"))
        return self._handler.handle(event, ctx, self._deps)

    def run_scheduled(self) -> Any:
        """One run of the scheduled function (EventBridge's every-5-minutes call)."""
        dep = self.deployment
        if dep is None or self._scheduled is None:
            raise RuntimeError("the template has no scheduled function")
        function = dep.functions[SCHEDULED_FUNCTION]
        ctx = LambdaContext(function.timeout, dep.outputs.get("ScheduledFunctionName", "local"))
        event = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}
        return self._scheduled.handle(event, ctx, self._scheduled_deps)

    def _every(self) -> None:
        while not self._stopping.wait(self.schedule_seconds):
            try:
                self.run_scheduled()
            except Exception as exc:  # noqa: BLE001 - a failed run is logged, the next one runs
                print(f"[devstack] scheduled function failed: {exc!r}", file=sys.stderr)

    # -- what callers need ----------------------------------------------------

    @property
    def function_env(self) -> dict[str, str]:
        assert self.deployment is not None
        return self.deployment.function_env

    @property
    def outputs(self) -> dict[str, str]:
        assert self.deployment is not None
        return self.deployment.outputs

    @property
    def endpoint_url(self) -> str:
        return self.outputs["EndpointUrl"]

    @property
    def bucket(self) -> str:
        return self.outputs["BucketName"]

    def client(self, service: str) -> Any:
        return self.moto.client(service)

    def device_environ(self) -> dict[str, str]:
        """A device process's AWS settings: Cognito at moto, no AWS keys at all."""
        return {
            "AWS_ENDPOINT_URL": self.moto.endpoint,
            "COGNITO_JWKS": moto_jwks(),
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_DEFAULT_REGION": self.region,
        }

    def operator_environ(self) -> dict[str, str]:
        """An operator's shell: admin keys (moto takes any), the region, moto's endpoint."""
        return {
            **self.device_environ(),
            "AWS_ACCESS_KEY_ID": ADMIN_KEYS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": ADMIN_KEYS["aws_secret_access_key"],
        }
