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

The alert policy (:class:`AlertPolicy`, docs/ALERTS.md) is shared by both
functions: the ingest function reads ``STATE_TABLE``, ``ALERT_COOLDOWN`` and
``FLEET_THRESHOLD``; the scheduled one (:func:`load_scheduled_settings`) reads
those and ``SILENT_AFTER``. Without ``STATE_TABLE`` (the how-to's deployments)
there is no state and every alerting batch is posted on its own, as before.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

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
#: A DynamoDB table name (what ``!Ref`` of the table gives).
_TABLE_RE = re.compile(r"[A-Za-z0-9_.-]{3,255}\Z", re.ASCII)
_TRUE = {"1", "true", "yes", "on"}

#: The device's default batch window, seconds (omprog_forwarder/config.py ``window_seconds``).
DEVICE_WINDOW_SECONDS = 300
#: Default cool-down after a device's alert: later alerts wait for one digest (docs/ALERTS.md).
DEFAULT_ALERT_COOLDOWN = 600
#: Below a minute a digest is no quieter than the fleet window it shares; above a day
#: a device's digest could wait longer than anyone reads the channel.
MIN_ALERT_COOLDOWN, MAX_ALERT_COOLDOWN = 60, 86_400
#: Default silence before a device is reported: six windows.
DEFAULT_SILENT_AFTER = 1800
#: Two windows: a device that seals one batch a window must not look silent between two.
MIN_SILENT_AFTER = 2 * DEVICE_WINDOW_SECONDS
#: Devices whose alerts are posted on their own in one minute; further ones fold into one
#: fleet message. 2 keeps "100 devices in a minute" at 3 messages (2 + one fleet message).
DEFAULT_FLEET_THRESHOLD = 2
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class AlertPolicy:
    """Storm control and silence detection; ``state_table`` empty means neither."""

    state_table: str = ""
    cooldown: int = DEFAULT_ALERT_COOLDOWN
    silent_after: int = DEFAULT_SILENT_AFTER
    fleet_threshold: int = DEFAULT_FLEET_THRESHOLD


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
    policy: AlertPolicy = field(default_factory=AlertPolicy)

    @property
    def alert_min_severity_name(self) -> str:
        return SEVERITY_NAMES[self.alert_min_severity]


@dataclass(frozen=True)
class ScheduledSettings:
    """The scheduled (silent-device and digest) function's settings."""

    policy: AlertPolicy
    webhook_url: str
    webhook_secret_arn: str
    #: Where deprovisioned (disabled) devices are looked up; empty: no lookup.
    user_pool_id: str
    alert_min_severity: int

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

    threshold = _severity(get("ALERT_MIN_SEVERITY", "err"))
    secret_arn = _secret_arn(get("WEBHOOK_SECRET_ARN"))

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
        policy=load_policy(environ),
    )


def load_policy(environ: Mapping[str, str]) -> AlertPolicy:
    """``STATE_TABLE``, ``ALERT_COOLDOWN``, ``SILENT_AFTER``, ``FLEET_THRESHOLD`` (seconds,
    seconds, seconds, devices); each bad value is refused by name."""

    def get(name: str) -> str:
        return environ.get(name, "").strip()

    table = get("STATE_TABLE")
    if table and not _TABLE_RE.match(table):
        raise ConfigError(
            f"STATE_TABLE={table!r} is not a DynamoDB table name", field="STATE_TABLE"
        )
    cooldown = _bounded_int(
        "ALERT_COOLDOWN",
        get("ALERT_COOLDOWN"),
        DEFAULT_ALERT_COOLDOWN,
        MIN_ALERT_COOLDOWN,
        MAX_ALERT_COOLDOWN,
        "seconds",
    )
    silent_after = _bounded_int(
        "SILENT_AFTER", get("SILENT_AFTER"), DEFAULT_SILENT_AFTER, MIN_SILENT_AFTER, None, "seconds"
    )
    fleet = _bounded_int(
        "FLEET_THRESHOLD", get("FLEET_THRESHOLD"), DEFAULT_FLEET_THRESHOLD, 1, None, "devices"
    )
    return AlertPolicy(table, cooldown, silent_after, fleet)


def load_scheduled_settings(environ: Mapping[str, str]) -> ScheduledSettings:
    """The scheduled function's variables; it has nothing to do without ``STATE_TABLE``."""
    policy = load_policy(environ)
    if not policy.state_table:
        raise ConfigError("STATE_TABLE is not set", field="STATE_TABLE")
    return ScheduledSettings(
        policy=policy,
        webhook_url=environ.get("WEBHOOK_URL", "").strip(),
        webhook_secret_arn=_secret_arn(environ.get("WEBHOOK_SECRET_ARN", "").strip()),
        user_pool_id=environ.get("USER_POOL_ID", "").strip(),
        alert_min_severity=_severity(environ.get("ALERT_MIN_SEVERITY", "err").strip()),
    )


def _severity(value: str) -> int:
    threshold = severity_number(value)
    if threshold is None:
        raise ConfigError(
            f"ALERT_MIN_SEVERITY={value!r} is not a syslog severity name or 0-7",
            field="ALERT_MIN_SEVERITY",
        )
    return threshold


def _secret_arn(value: str) -> str:
    if value and not _SECRET_ARN_RE.match(value):
        raise ConfigError(
            f"WEBHOOK_SECRET_ARN={value!r} is not a Secrets Manager secret ARN",
            field="WEBHOOK_SECRET_ARN",
        )
    return value


def _bounded_int(name: str, value: str, default: int, low: int, high: int | None, unit: str) -> int:
    """An integer in ``[low, high]``; the error says which bound and why it is there."""
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a whole number of {unit}", field=name) from None
    if number < low:
        why = ""
        if name == "SILENT_AFTER":
            why = (
                f" (two {DEVICE_WINDOW_SECONDS} s windows: a device that seals one batch a "
                "window would look silent between two batches)"
            )
        raise ConfigError(f"{name}={value!r} is below the minimum {low} {unit}{why}", field=name)
    if high is not None and number > high:
        raise ConfigError(f"{name}={value!r} is above the maximum {high} {unit}", field=name)
    return number


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
