"""The function's settings: one frozen dataclass, one loader from the environment.

Names follow the published how-to (``BUCKET_NAME``, ``WEBHOOK_URL``) so that
its deployments keep working. A bad value is a :class:`ConfigError` that names
the variable and the value, answered as a 500 JSON body for that request
rather than a crashed cold start that API Gateway would report as a 502.

The Slack webhook comes one of two ways. ``WEBHOOK_SECRET_ARN`` (what
``lambda/template.yaml`` sets) names a Secrets Manager secret whose
``SecretString`` is the URL; the handler reads it once per container, so the
URL is in no environment variable that anyone who can read the function's
configuration would see. ``WEBHOOK_URL`` (the how-to's deployments) is the URL
itself. When both are set the secret wins and ``WEBHOOK_URL`` is ignored: an
error would refuse every batch (a 500 archives nothing) over a setting that
only concerns alerts, and the secret is the one the stack manages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from errors import ConfigError
from severity import SEVERITY_NAMES, severity_number

DEFAULT_MAX_BATCH_BYTES = 32 * 1024 * 1024
#: More lines than this in one batch → 413 (the device splits the batch).
DEFAULT_MAX_LINES = 500_000
_PREFIX_PART_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=-]*\Z", re.ASCII)
#: A Secrets Manager secret ARN in any partition (what ``!Ref`` of a secret gives).
_SECRET_ARN_RE = re.compile(
    r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+\Z", re.ASCII
)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Settings:
    bucket_name: str
    webhook_url: str
    user_pool_id: str
    identity_pool_id: str
    alert_min_severity: int
    log_prefix: str
    max_batch_bytes: int
    require_identity: bool
    max_lines: int = DEFAULT_MAX_LINES
    #: Secrets Manager ARN of the webhook URL; when set, ``webhook_url`` is ignored.
    webhook_secret_arn: str = ""

    @property
    def alert_min_severity_name(self) -> str:
        return SEVERITY_NAMES[self.alert_min_severity]


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Read and check every variable; the first bad one is reported by name."""

    def get(name: str, default: str = "") -> str:
        return environ.get(name, default).strip()

    bucket = get("BUCKET_NAME")
    if not bucket:
        raise ConfigError("BUCKET_NAME is not set", field="BUCKET_NAME")

    require_identity = _boolean("REQUIRE_IDENTITY", get("REQUIRE_IDENTITY", "true"))
    user_pool_id = get("USER_POOL_ID")
    identity_pool_id = get("IDENTITY_POOL_ID")
    if require_identity:
        for name, value in (("USER_POOL_ID", user_pool_id), ("IDENTITY_POOL_ID", identity_pool_id)):
            if not value:
                raise ConfigError(f"{name} is required while REQUIRE_IDENTITY is on", field=name)

    raw_severity = get("ALERT_MIN_SEVERITY", "err")
    threshold = severity_number(raw_severity)
    if threshold is None:
        raise ConfigError(
            f"ALERT_MIN_SEVERITY={raw_severity!r} is not a syslog severity name or 0-7",
            field="ALERT_MIN_SEVERITY",
        )

    secret_arn = get("WEBHOOK_SECRET_ARN")
    if secret_arn and not _SECRET_ARN_RE.match(secret_arn):
        raise ConfigError(
            f"WEBHOOK_SECRET_ARN={secret_arn!r} is not a Secrets Manager secret ARN",
            field="WEBHOOK_SECRET_ARN",
        )

    return Settings(
        bucket_name=bucket,
        webhook_url=get("WEBHOOK_URL"),
        user_pool_id=user_pool_id,
        identity_pool_id=identity_pool_id,
        alert_min_severity=threshold,
        log_prefix=_prefix(environ.get("LOG_PREFIX", "logs/")),
        max_batch_bytes=_positive_int(
            "MAX_BATCH_BYTES", get("MAX_BATCH_BYTES"), DEFAULT_MAX_BATCH_BYTES
        ),
        require_identity=require_identity,
        max_lines=_positive_int("MAX_LINES", get("MAX_LINES"), DEFAULT_MAX_LINES),
        webhook_secret_arn=secret_arn,
    )


def _boolean(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean (true/false)", field=name)


def _positive_int(name: str, value: str, default: int) -> int:
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number <= 0:
        raise ConfigError(f"{name}={value!r} is not a positive integer", field=name)
    return number


def _prefix(value: str) -> str:
    """``logs``, ``logs/`` and ``/logs/`` all mean ``logs/``; anything odd is refused."""
    parts = [part for part in value.strip().strip("/").split("/")] if value.strip("/ ") else []
    for part in parts:
        if not _PREFIX_PART_RE.match(part):
            raise ConfigError(f"LOG_PREFIX={value!r} has an unsafe path part", field="LOG_PREFIX")
    return "".join(part + "/" for part in parts)
