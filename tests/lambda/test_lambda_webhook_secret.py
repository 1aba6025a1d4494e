"""The Slack webhook read from Secrets Manager (``WEBHOOK_SECRET_ARN``), as the template deploys it.

moto's Secrets Manager runs in-process inside the module's ``mock_aws`` (conftest's
``_aws_world``); the function is the real handler with its ``secrets`` factory
pointed at it. What is pinned: the URL comes from the secret, is read once per
container, and a secret that cannot be read fails the alert only (200,
``alert_status: failed``) with neither the URL nor the service's message in the
log line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import handler
import pytest
from botocore.exceptions import ClientError
from errors import ConfigError
from settings import load_settings
from support.events import batch, proxy_event

ERR_LINE = "2026-11-26 23:09:00 h daemon.err: a: boom"


@pytest.fixture(autouse=True)
def _no_cached_webhook(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cold container also has no webhook URL read yet."""
    monkeypatch.setattr(handler, "_webhook_urls", {})
    monkeypatch.setattr(handler, "_webhook_url_ignored_logged", False)


class Counting:
    """A client wrapper that counts ``get_secret_value`` calls."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls = 0

    def get_secret_value(self, **kwargs: Any) -> Any:
        self.calls += 1
        return self.client.get_secret_value(**kwargs)


@pytest.fixture
def secrets(_aws_world: Any) -> Iterator[Counting]:
    """moto Secrets Manager, counted, wired into nothing yet."""
    import boto3

    yield Counting(boto3.client("secretsmanager", region_name="eu-west-1"))


def make_secret(secrets: Counting, name: str, value: str) -> str:
    return secrets.client.create_secret(Name=name, SecretString=value)["ARN"]


def device_event(rig: Any, lines: list[str], batch_id: str = "b1") -> dict[str, Any]:
    return proxy_event(
        batch(lines, batch_id=batch_id),
        user_pool_id=rig.cognito.user_pool_id,
        sub=rig.cognito.subs["pi-kitchen-01"],
        identity_pool_id=rig.cognito.identity_pool_id,
    )


def batch_logs(caplog: Any) -> list[dict[str, Any]]:
    return [
        json.loads(r.getMessage())
        for r in caplog.records
        if r.name == handler.LOGGER.name and '"event": "batch"' in r.getMessage()
    ]


def use_secret(rig: Any, secrets: Any, arn: str) -> None:
    """Deploy as the template does: the secret's ARN, no WEBHOOK_URL."""
    del rig.env["WEBHOOK_URL"]
    rig.env["WEBHOOK_SECRET_ARN"] = arn
    rig.deps.secrets = lambda: secrets


def test_the_url_is_read_from_the_secret_and_never_logged(
    rig: Any, secrets: Counting, caplog: Any
) -> None:
    arn = make_secret(secrets, "webhook-read", rig.slack.url)
    use_secret(rig, secrets, arn)
    caplog.set_level(logging.INFO, logger=handler.LOGGER.name)
    status, body = rig.call(device_event(rig, [ERR_LINE]))
    assert (status, body["alert_status"]) == (200, "sent")
    assert len(rig.slack.payloads) == 1 and secrets.calls == 1
    assert rig.slack.url not in caplog.text and "/services/" not in caplog.text


def test_the_secret_is_read_once_per_container(rig: Any, secrets: Counting) -> None:
    arn = make_secret(secrets, "webhook-once", rig.slack.url)
    use_secret(rig, secrets, arn)
    for n in range(3):
        status, body = rig.call(device_event(rig, [f"{ERR_LINE} {n}"], batch_id=f"b{n}"))
        assert (status, body["alert_status"]) == (200, "sent")
    assert secrets.calls == 1 and len(rig.slack.payloads) == 3


def test_a_batch_without_alerts_does_not_read_the_secret(rig: Any, secrets: Counting) -> None:
    arn = make_secret(secrets, "webhook-lazy", rig.slack.url)
    use_secret(rig, secrets, arn)
    status, body = rig.call(device_event(rig, ["2026-11-26 23:09:00 h daemon.info: a: fine"]))
    assert (status, body["alert_status"]) == (200, "none") and secrets.calls == 0


def test_a_webhook_slack_calls_gone_is_read_again(rig: Any, secrets: Counting) -> None:
    arn = make_secret(secrets, "webhook-rotated", rig.slack.url)
    use_secret(rig, secrets, arn)
    rig.slack.script = [(404, {}, b"no_service")]
    assert rig.call(device_event(rig, [ERR_LINE], batch_id="b1"))[1]["alert_status"] == "failed"
    assert rig.call(device_event(rig, [ERR_LINE], batch_id="b2"))[1]["alert_status"] == "sent"
    assert secrets.calls == 2


def test_the_secret_wins_over_webhook_url(rig: Any, secrets: Counting, caplog: Any) -> None:
    arn = make_secret(secrets, "webhook-wins", rig.slack.url)
    use_secret(rig, secrets, arn)
    rig.env["WEBHOOK_URL"] = "https://hooks.invalid/services/T/B/never-used"
    caplog.set_level(logging.INFO, logger=handler.LOGGER.name)
    for n in range(2):
        assert rig.call(device_event(rig, [ERR_LINE], batch_id=f"b{n}"))[1]["alert_status"] == (
            "sent"
        )
    ignored = [r for r in caplog.records if "webhook_url_ignored" in r.getMessage()]
    assert len(ignored) == 1 and ignored[0].levelno == logging.WARNING
    assert "never-used" not in caplog.text


class Denied:
    """A Secrets Manager whose answer is AccessDenied, its message quoting what it may."""

    def __init__(self, leak: str) -> None:
        self.leak = leak
        self.calls = 0

    def get_secret_value(self, **kwargs: Any) -> Any:
        self.calls += 1
        raise ClientError(
            {"Error": {"Code": "AccessDeniedException", "Message": f"denied: {self.leak}"}},
            "GetSecretValue",
        )


class Broken:
    """A Secrets Manager client that cannot even be built (no region, no network)."""

    def get_secret_value(self, **kwargs: Any) -> Any:
        raise RuntimeError("endpoint https://hooks.slack.com/services/T/B/SECRET unreachable")


@pytest.mark.parametrize(
    ("make_client", "reason"),
    [
        pytest.param(
            lambda s: s,
            "webhook secret unreadable: ResourceNotFoundException",
            id="missing-secret-on-moto",
        ),
        pytest.param(
            lambda s: Denied("https://hooks.slack.com/services/T/B/SECRET"),
            "webhook secret unreadable: AccessDeniedException",
            id="access-denied",
        ),
        pytest.param(
            lambda s: Broken(), "webhook secret unreadable: RuntimeError", id="unexpected-exception"
        ),
    ],
)
def test_an_unreadable_secret_fails_the_alert_not_the_batch(
    rig: Any, secrets: Counting, caplog: Any, make_client: Any, reason: str
) -> None:
    missing = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:not-there-AbCdEf"
    use_secret(rig, make_client(secrets), missing)
    caplog.set_level(logging.INFO, logger=handler.LOGGER.name)
    status, body = rig.call(device_event(rig, [ERR_LINE]))
    assert (status, body["alert_status"], body["accepted"]) == (200, "failed", 1)
    assert rig.s3.list_objects_v2(Bucket="omprog-test-logs")["KeyCount"] == 1
    assert rig.slack.requests == []
    (log,) = batch_logs(caplog)
    assert (log["status"], log["alert_status"], log["slack_reason"]) == (200, "failed", reason)
    assert "SECRET" not in caplog.text and "hooks.slack.com" not in caplog.text
    assert handler.COUNTERS["webhook_secret_errors"] == 1


def test_a_failed_read_is_tried_again_by_the_next_batch(rig: Any, secrets: Counting) -> None:
    denied = Denied("x")
    arn = make_secret(secrets, "webhook-retry", rig.slack.url)
    use_secret(rig, denied, arn)
    assert rig.call(device_event(rig, [ERR_LINE], batch_id="b1"))[1]["alert_status"] == "failed"
    rig.deps.secrets = lambda: secrets
    assert rig.call(device_event(rig, [ERR_LINE], batch_id="b2"))[1]["alert_status"] == "sent"
    assert (denied.calls, secrets.calls) == (1, 1)


def test_a_binary_secret_is_no_url(rig: Any, secrets: Counting) -> None:
    arn = secrets.client.create_secret(Name="webhook-binary", SecretBinary=b"\x00\x01")["ARN"]
    use_secret(rig, secrets, arn)
    status, body = rig.call(device_event(rig, [ERR_LINE]))
    assert (status, body["alert_status"]) == (200, "failed")


@pytest.mark.parametrize(
    "value",
    [
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:omprog-webhook-AbCdEf",
        "arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:a/b_c+d=e.f@g-h",
        "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:x",
        "  arn:aws:secretsmanager:eu-west-1:123456789012:secret:padded  ",
    ],
)
def test_secret_arn_setting_accepts_secret_arns(value: str) -> None:
    settings = load_settings(
        {"BUCKET_NAME": "b", "REQUIRE_IDENTITY": "false", "WEBHOOK_SECRET_ARN": value}
    )
    assert settings.webhook_secret_arn == value.strip()


@pytest.mark.parametrize(
    "value",
    [
        "https://hooks.slack.com/services/T/B/X",
        "omprog-webhook",
        "arn:aws:ssm:eu-west-1:123456789012:parameter/webhook",
        "arn:aws:secretsmanager:eu-west-1:1234:secret:short-account",
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:",
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:a b",
    ],
)
def test_secret_arn_setting_refuses_anything_else_by_name(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(
            {"BUCKET_NAME": "b", "REQUIRE_IDENTITY": "false", "WEBHOOK_SECRET_ARN": value}
        )
    assert info.value.field == "WEBHOOK_SECRET_ARN"
    assert info.value.message.startswith("WEBHOOK_SECRET_ARN=")


def test_no_secret_arn_keeps_webhook_url() -> None:
    settings = load_settings(
        {"BUCKET_NAME": "b", "REQUIRE_IDENTITY": "false", "WEBHOOK_URL": "https://x.invalid/h"}
    )
    assert (settings.webhook_secret_arn, settings.webhook_url) == ("", "https://x.invalid/h")


def test_a_bad_secret_arn_is_a_500_naming_the_variable(rig: Any) -> None:
    rig.env["WEBHOOK_SECRET_ARN"] = "not-an-arn"
    status, body = rig.call(device_event(rig, [ERR_LINE]))
    assert (status, body["error"], body["field"]) == (
        500,
        "configuration_error",
        "WEBHOOK_SECRET_ARN",
    )


def test_default_dependencies_build_no_secrets_client() -> None:
    deps = handler.default_dependencies()
    assert callable(deps.secrets) and handler._clients == {}
