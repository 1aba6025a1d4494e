"""The alert policy's world (see tests/alerts/conftest.py): both functions on moto, a
loopback Slack, one fake clock. Here so that the tests import it one way (support.*);
the fixtures that build it stay in the conftest.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

import alerts
import handler
import scheduled

from support.alerting import LoopbackSlack
from support.clock import FakeClock
from support.events import batch, proxy_event

REGION = "eu-west-1"
BUCKET = "omprog-alert-tests"
#: 2026-11-26 23:00:07 UTC: off a minute boundary on purpose (the fleet gate slides).
T0 = datetime(2026, 11, 26, 23, 0, 7, tzinfo=timezone.utc).timestamp()
_tables = itertools.count()


@dataclass
class Aws:
    s3: Any
    idp: Any
    dynamodb: Any
    user_pool_id: str
    identity_pool_id: str
    subs: dict[str, str] = field(default_factory=dict)


def err_line(when: float, msg: str, severity: int = 3, app: str = "myapp") -> str:
    """A line in the project's JSON template (rsyslog.d/), at ``when``."""
    return json.dumps(
        {
            "ts": datetime.fromtimestamp(when, timezone.utc).isoformat(),
            "host": "pi",
            "facility": "daemon",
            "severity": severity,
            "app": app,
            "pid": "42",
            "msg": " " + msg,
            "uuid": None,
        }
    )


def info_line(when: float, msg: str = "all is well") -> str:
    return err_line(when, msg, severity=6, app="cron")


@dataclass
class World:
    aws: Aws
    table: str
    slack: LoopbackSlack
    clock: FakeClock
    dynamodb: Any
    env: dict[str, str]
    schedule_env: dict[str, str]
    sent_alert_lines: dict[str, int] = field(default_factory=dict)
    logs: list[dict[str, Any]] = field(default_factory=list)
    _batches: Iterator[int] = field(default_factory=itertools.count)

    def device(self, name: str, *, enabled: bool = True) -> str:
        """Register (or enable/disable) a device user; returns its sub."""
        idp, pool = self.aws.idp, self.aws.user_pool_id
        if name not in self.aws.subs:
            idp.admin_create_user(UserPoolId=pool, Username=name, MessageAction="SUPPRESS")
            user = idp.admin_get_user(UserPoolId=pool, Username=name)
            self.aws.subs[name] = next(
                a["Value"] for a in user["UserAttributes"] if a["Name"] == "sub"
            )
        if enabled:
            idp.admin_enable_user(UserPoolId=pool, Username=name)
        else:
            idp.admin_disable_user(UserPoolId=pool, Username=name)
        return self.aws.subs[name]

    def ingest_deps(self, dynamodb: Any = None) -> handler.Dependencies:
        return handler.Dependencies(
            s3=lambda: self.aws.s3,
            cognito=lambda: self.aws.idp,
            transport=alerts.urllib_transport,
            sleep=self.clock.sleep,
            clock=self.clock,
            environ=self.env,
            dynamodb=lambda: dynamodb or self.dynamodb,
            wall=self.clock,
        )

    def schedule_deps(self, dynamodb: Any = None) -> scheduled.Dependencies:
        return scheduled.Dependencies(
            dynamodb=lambda: dynamodb or self.dynamodb,
            cognito=lambda: self.aws.idp,
            transport=alerts.urllib_transport,
            sleep=self.clock.sleep,
            clock=self.clock,
            environ=self.schedule_env,
            wall=self.clock,
        )

    def send(
        self,
        device: str,
        lines: list[str],
        *,
        batch_id: Optional[str] = None,
        deps: Optional[handler.Dependencies] = None,
    ) -> tuple[int, dict[str, Any]]:
        """One batch of ``device`` through the ingest handler, as API Gateway calls it."""
        if device not in self.aws.subs:
            self.device(device)
        batch_id = batch_id or f"{self.table}.b{next(self._batches):07d}"
        stamp = datetime.fromtimestamp(self.clock(), timezone.utc).isoformat()
        event = proxy_event(
            batch(lines, device_id=device, batch_id=batch_id, timestamp=stamp),
            user_pool_id=self.aws.user_pool_id,
            sub=self.aws.subs[device],
            identity_pool_id=self.aws.identity_pool_id,
        )
        response = handler.handle(event, None, deps or self.ingest_deps())
        body = json.loads(response["body"])
        if response["statusCode"] == 200 and not body.get("duplicate"):
            self.sent_alert_lines[device] = self.sent_alert_lines.get(device, 0) + body["alerts"]
        return response["statusCode"], body

    def tick(self, deps: Optional[scheduled.Dependencies] = None) -> dict[str, Any]:
        """One run of the scheduled function."""
        return scheduled.handle({"source": "aws.events"}, None, deps or self.schedule_deps())

    def schedule_policy(self) -> Any:
        """The alert policy the functions read from this world's environment."""
        import settings

        return settings.load_policy(self.env)

    def item(self, key: str) -> dict[str, Any]:
        import state

        return state.StateStore(self.dynamodb, self.table).get(key)
