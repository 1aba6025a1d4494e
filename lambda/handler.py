"""AWS Lambda entry point: a thin sequence over the pure modules beside it.

``lambda_handler`` → settings → :mod:`request` (decode, bound, validate) →
:mod:`identity` (who is calling) → :mod:`archive` (parse, encode, write once)
→ :mod:`state` (the device was seen) → :mod:`delivery` (storm control) →
:mod:`alerts` (Slack). Every side effect (S3, Cognito, DynamoDB, Secrets
Manager, HTTP, clocks, sleep, environment) comes in through
:class:`Dependencies`, created lazily, so tests run the same code against moto
and a loopback Slack.

With ``STATE_TABLE`` set, an alerting batch goes through storm control
(docs/ALERTS.md): posted at once, added to the device's digest, or folded
into a fleet message. When the state cannot be used (DynamoDB fails or is
slow), the batch is alerted on its own, as without a table: the log line
says ``"alert_mode": "degraded"`` with the reason, and ``state_errors``
counts it. A batch that is a duplicate touches no state.

The webhook URL, when it lives in Secrets Manager (``WEBHOOK_SECRET_ARN``), is
fetched on the first batch that has something to alert and kept for the
container's life; a URL Slack answers as gone (403, 404, 410) is forgotten so
that a rotated secret is read again. Failing to read it fails the alert, never
the batch, and neither the URL nor the service's error text reaches a log line.

Every outcome is a deliberate status with a JSON body: API Gateway would turn
an escaped exception into a 502 that neither a device nor an operator can act
on. Once the batch is in S3 the answer is 200 whatever the alert step does.
The how-to's own event shapes without a ``batch_id`` are answered exactly as
the how-to's Lambda answered them (``{"statusCode": 200, "body": "\"This is
DEVICE. We accepted your logs\""}``); every other 200 is the project's JSON
object. The function never writes log *lines* to its own logs (they can hold
secrets and would double the cost); it writes one structured JSON line per
request with ids, counts, outcome and duration.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import alerts
import archive
import delivery
import identity
import request
from errors import RequestError
from settings import Settings, load_settings
from state import StateError, StateStore

LOGGER = logging.getLogger("omprog_forwarder.lambda")
LOGGER.setLevel(logging.INFO)

#: Per-container counters, reported in every log line (they survive warm starts).
COUNTERS: dict[str, int] = {}
#: Upper bound of time spent on Slack for one batch, seconds.
SLACK_BUDGET = 10.0
#: Time kept back for answering after Slack, seconds.
SAFETY_MARGIN = 1.5

_clients: dict[str, Any] = {}
_alerts_off_logged = False
_webhook_url_ignored_logged = False
#: Secret ARN → the webhook URL read from it, kept across warm invocations.
_webhook_urls: dict[str, str] = {}
#: Slack's answers that mean the webhook itself is gone (revoked, deleted, rotated).
_WEBHOOK_GONE = frozenset((403, 404, 410))


@dataclass
class Dependencies:
    """Everything the handler touches outside its own memory."""

    s3: Callable[[], Any]
    cognito: Callable[[], Any]
    transport: alerts.Transport
    sleep: Callable[[float], None]
    clock: Callable[[], float]
    environ: Mapping[str, str]
    #: Secrets Manager, for the webhook URL; a default so that callers without alerts
    #: from a secret need not name it.
    secrets: Callable[[], Any] = field(default=lambda: _client("secretsmanager"))
    #: DynamoDB, for the alert state (only used when STATE_TABLE is set).
    dynamodb: Callable[[], Any] = field(default=lambda: _client("dynamodb"))
    #: Wall-clock time (epoch seconds): the state is shared between containers, so
    #: ``clock`` (monotonic, per machine) cannot stamp it.
    wall: Callable[[], float] = field(default=time.time)


#: Client settings per service: DynamoDB is asked several times per alerting batch and
#: must never hold up the answer, so it gets short timeouts and one retry.
_CLIENT_CONFIG: dict[str, dict[str, Any]] = {
    "dynamodb": {"connect_timeout": 1, "read_timeout": 2, "max_attempts": 2},
}


def _client(service: str) -> Any:
    """A boto3 client per container, built on first use (never at import)."""
    client = _clients.get(service)
    if client is None:
        import boto3
        from botocore.config import Config

        options = _CLIENT_CONFIG.get(service, {})
        client = boto3.client(
            service,
            config=Config(
                connect_timeout=options.get("connect_timeout", 3),
                read_timeout=options.get("read_timeout", 10),
                retries={"max_attempts": options.get("max_attempts", 3), "mode": "standard"},
            ),
        )
        _clients[service] = client
    return client


def default_dependencies() -> Dependencies:
    return Dependencies(
        s3=lambda: _client("s3"),
        cognito=lambda: _client("cognito-idp"),
        transport=alerts.urllib_transport,
        sleep=time.sleep,
        clock=time.monotonic,
        environ=os.environ,
        secrets=lambda: _client("secretsmanager"),
        dynamodb=lambda: _client("dynamodb"),
        wall=time.time,
    )


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """The Lambda entry point named in the deployment."""
    return handle(event, context, default_dependencies())


def handle(event: Any, context: Any, deps: Dependencies) -> dict[str, Any]:
    """Answer one invocation; never raises."""
    started = deps.clock()
    log: dict[str, Any] = {"event": "batch", "request_id": _request_id(event, context)}
    try:
        status, body = _handle(event, context, deps, log)
    except RequestError as exc:
        status, body = exc.status, exc.body()
        log.update(error=exc.code, field=exc.field, reason=exc.message)
    except Exception as exc:  # noqa: BLE001 - the last line of defence against a 502
        status = 500
        body = {
            "error": "internal_error",
            "message": "the function failed; the batch was not archived",
        }
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        # Type and place only: an exception's message may quote log text.
        log.update(
            error="internal_error",
            exception=type(exc).__name__,
            where=f"{os.path.basename(frame.filename)}:{frame.lineno}",
        )
    _count(f"status_{status}")
    log["status"] = status
    log["duration_ms"] = round((deps.clock() - started) * 1000, 1)
    log["counters"] = dict(COUNTERS)
    LOGGER.info(json.dumps(log, sort_keys=True, default=str))
    if isinstance(body, str):
        # The how-to's sentence, answered exactly as its Lambda did (see _howto_answer).
        return {"statusCode": status, "body": json.dumps(body)}
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(body),
    }


def _handle(
    event: Any, context: Any, deps: Dependencies, log: dict[str, Any]
) -> tuple[int, dict[str, Any] | str]:
    settings = load_settings(deps.environ)
    kind = request.event_kind(event)
    log["kind"] = kind
    batch = request.read_batch(event, kind, settings.max_batch_bytes, settings.max_lines)
    device = identity.resolve_device(
        event,
        batch.device_id,
        require_identity=settings.require_identity,
        user_pool_id=settings.user_pool_id,
        identity_pool_id=settings.identity_pool_id,
        cognito=deps.cognito,
        clock=deps.clock,
    )
    status, body = _archive_and_alert(batch, device, settings, context, deps, log)
    if status == 200 and kind == request.KIND_MAPPING and batch.batch_id is None:
        log["howto_answer"] = True
        return status, _howto_answer(device)
    return status, body


def _archive_and_alert(
    batch: request.Batch,
    device: str,
    settings: Settings,
    context: Any,
    deps: Dependencies,
    log: dict[str, Any],
) -> tuple[int, dict[str, Any]]:
    batch_id = batch.batch_id or request.derive_batch_id(device, batch)
    log.update(
        device=device,
        batch=batch_id,
        lines=len(batch.logs),
        body_bytes=batch.body_bytes,
        batch_id_derived=batch.batch_id is None,
    )
    if not batch.logs:
        # An empty batch (the device's `check`) still says the device is alive.
        _record_seen(settings, deps, device, batch_id, 0, 0, log)
        return 200, _accepted(device, 0, None, 0, duplicate=False, alert_status="none")

    key = archive.object_key(settings.log_prefix, batch.timestamp, device, batch_id)
    collector = alerts.AlertCollector()
    encoded = archive.encode_batch(
        batch.logs, device, batch_id, batch.timestamp, settings.alert_min_severity, collector.add
    )
    log.update(
        key=key,
        unparsed=encoded.unparsed,
        parser_errors=encoded.parser_errors,
        formats=encoded.formats,
        stored_bytes=len(encoded.body),
        alert_lines=collector.lines,
    )
    created = archive.put_once(
        deps.s3(),
        settings.bucket_name,
        key,
        encoded.body,
        {"device-id": device, "batch-id": batch_id, "lines": str(encoded.lines)},
    )
    if not created:
        _count("duplicates")
        log.update(duplicate=True, alert_status="skipped_duplicate")
        return 200, _accepted(
            device, encoded.lines, key, 0, duplicate=True, alert_status="skipped_duplicate"
        )
    # The batch is archived: from here on nothing may answer anything but 200, or the
    # device would resend a batch that is stored, meet the duplicate and never alert.
    try:
        _count("lines_archived", encoded.lines)
        seen = _record_seen(settings, deps, device, batch_id, encoded.lines, collector.lines, log)
        result = _alert(settings, collector, device, batch_id, key, context, deps, log, seen)
    except Exception as exc:  # noqa: BLE001 - an alert failure must not fail an archived batch
        _count("alert_errors")
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        # Type and place only, as for any unexpected exception: the message may quote log text.
        log.update(
            alert_exception=type(exc).__name__,
            alert_where=f"{os.path.basename(frame.filename)}:{frame.lineno}",
        )
        result = alerts.SendResult("failed", reason=f"alert step failed: {type(exc).__name__}")
    if result.status not in ("pending", "fleet", "duplicate"):  # those are alert_* counters
        _count(f"slack_{result.status}")
    log.update(
        duplicate=False,
        alert_status=result.status,
        slack_attempts=result.attempts,
        slack_http_status=result.http_status,
        slack_reason=result.reason or None,
    )
    return 200, _accepted(
        device, encoded.lines, key, collector.lines, duplicate=False, alert_status=result.status
    )


#: Marks "the state step failed": ``_record_seen`` returns it instead of the old item.
_NO_STATE: dict[str, Any] = {"__no_state__": True}


def _store(settings: Settings, deps: Dependencies) -> StateStore:
    return StateStore(deps.dynamodb(), settings.policy.state_table, clock=deps.clock)


def _record_seen(
    settings: Settings,
    deps: Dependencies,
    device: str,
    batch_id: str,
    lines: int,
    alert_lines: int,
    log: dict[str, Any],
) -> Optional[dict[str, Any]]:
    """The device was seen; returns its item as it was (``None`` without a state table,
    ``_NO_STATE`` when the write failed). A failure only costs the alert policy."""
    if not settings.policy.state_table:
        return None
    try:
        store = _store(settings, deps)
        before = store.record_seen(device, batch_id, lines, alert_lines, deps.wall())
        if before.get("silent") and not before.get("back_at"):
            store.mark_back(device, deps.wall())
        return before
    except Exception as exc:  # noqa: BLE001 - StateError, or a bug: the archive stands
        _count("state_errors")
        log.update(state_error=_state_reason(exc), state_step="record_seen")
        return _NO_STATE


def _state_reason(exc: Exception) -> str:
    return exc.reason if isinstance(exc, StateError) else f"bug: {type(exc).__name__}"


def _alert(
    settings: Settings,
    collector: alerts.AlertCollector,
    device: str,
    batch_id: str,
    key: str,
    context: Any,
    deps: Dependencies,
    log: Optional[dict[str, Any]] = None,
    seen: Optional[dict[str, Any]] = None,
) -> alerts.SendResult:
    """Send the batch's alert, or hand it to storm control; whatever happens, the batch
    is already archived."""
    global _alerts_off_logged
    log = {} if log is None else log
    if not collector.lines:
        return alerts.SendResult("none")
    url, failure = webhook_url(settings, deps)
    if failure is not None:
        return failure
    if not url:
        if not _alerts_off_logged:
            _alerts_off_logged = True
            LOGGER.warning(json.dumps({"event": "alerts_off", "reason": "WEBHOOK_URL is empty"}))
        return alerts.SendResult("off", reason="WEBHOOK_URL is empty")
    location = f"s3://{settings.bucket_name}/{key}"

    def single() -> dict[str, Any]:
        return alerts.build_message(
            collector,
            device_id=device,
            batch_id=batch_id,
            location=location,
            threshold_name=settings.alert_min_severity_name,
        )

    def post(payload: dict[str, Any]) -> alerts.SendResult:
        return post_to_slack(url, payload, settings, deps, context)

    if seen is None:
        log["alert_mode"] = "per_batch"
    elif seen is _NO_STATE:
        log["alert_mode"] = "degraded"
    else:
        try:
            notifier = delivery.Notifier(
                _store(settings, deps),
                settings.policy,
                post=post,
                threshold_name=settings.alert_min_severity_name,
                count=_count,
            )
            now = deps.wall()
            outcome = notifier.batch(
                device, batch_id, collector, location.rsplit("/", 1)[0] + "/", now, seen, single
            )
            log.update(alert_mode="storm", alert_decision=outcome.decision)
            _count(f"alert_{outcome.decision}")
            _flush_fleet(notifier, now, log)
            return outcome.result
        except Exception as exc:  # noqa: BLE001 - nothing was committed: alert on its own
            _count("state_errors")
            log.update(alert_mode="degraded", state_error=_state_reason(exc), state_step="policy")
    try:
        payload = single()
    except Exception as exc:  # noqa: BLE001 - an alert bug must not fail an archived batch
        return alerts.SendResult("invalid", reason=f"build failed: {type(exc).__name__}")
    return post(payload)


def _flush_fleet(notifier: delivery.Notifier, now: float, log: dict[str, Any]) -> None:
    """An alerting batch also posts a fleet episode that has ended (else the scheduled run
    does, within five minutes)."""
    try:
        results = notifier.flush_episode(now)
    except Exception as exc:  # noqa: BLE001 - the scheduled run retries it
        log["fleet_flush_error"] = _state_reason(exc)
        return
    if results:
        log["fleet_posts"] = [r.status for r in results]


def post_to_slack(
    url: str, payload: dict[str, Any], settings: Any, deps: Any, context: Any
) -> alerts.SendResult:
    """One webhook post within the invocation's Slack budget; a webhook Slack answers as
    gone is forgotten, so that a rotated secret is read again."""
    result = alerts.send(
        url,
        payload,
        transport=deps.transport,
        sleep=deps.sleep,
        clock=deps.clock,
        budget=_slack_budget(context),
    )
    if settings.webhook_secret_arn and result.http_status in _WEBHOOK_GONE:
        _webhook_urls.pop(settings.webhook_secret_arn, None)
    return result


def webhook_url(settings: Any, deps: Any) -> tuple[str, Optional[alerts.SendResult]]:
    """The webhook URL, from its secret when there is one (read once per container).

    Returns ``(url, None)``, or ``("", failure)`` when the secret cannot be read.
    The failure's reason names only the error code: a service's message may quote
    the secret's name or, for a malformed value, part of the value itself.
    ``settings`` is either function's (it has ``webhook_url`` and
    ``webhook_secret_arn``), ``deps`` anything with a ``secrets`` factory.
    """
    global _webhook_url_ignored_logged
    arn = settings.webhook_secret_arn
    if not arn:
        return settings.webhook_url, None
    if settings.webhook_url and not _webhook_url_ignored_logged:
        _webhook_url_ignored_logged = True
        LOGGER.warning(
            json.dumps(
                {"event": "webhook_url_ignored", "reason": "WEBHOOK_SECRET_ARN is set and wins"}
            )
        )
    cached = _webhook_urls.get(arn)
    if cached is not None:
        return cached, None
    try:
        answer = deps.secrets().get_secret_value(SecretId=arn)
    except Exception as exc:  # noqa: BLE001 - ClientError, connection errors, throttling
        _count("webhook_secret_errors")
        return "", alerts.SendResult(
            "failed", reason=f"webhook secret unreadable: {_error_code(exc)}"
        )
    value = answer.get("SecretString") if isinstance(answer, dict) else None
    if not isinstance(value, str) or not value.strip():
        _count("webhook_secret_errors")
        return "", alerts.SendResult("failed", reason="webhook secret has no SecretString")
    url = value.strip()
    _webhook_urls[arn] = url
    return url, None


def _error_code(exc: Exception) -> str:
    """A service error's code (``AccessDeniedException``), else the exception's type name."""
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return code if isinstance(code, str) and code.isidentifier() else type(exc).__name__


def _slack_budget(context: Any) -> float:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    budget = SLACK_BUDGET
    if callable(remaining):
        try:
            budget = min(budget, remaining() / 1000.0 - SAFETY_MARGIN)
        except Exception:  # noqa: BLE001 - a strange context must not cost the alert
            pass
    return max(budget, 0.0)


def _accepted(
    device: str,
    lines: int,
    key: Optional[str],
    alert_lines: int,
    *,
    duplicate: bool,
    alert_status: str,
) -> dict[str, Any]:
    return {
        "accepted": lines,
        "key": key,
        "alerts": alert_lines,
        "duplicate": duplicate,
        "alert_status": alert_status,
        # The published how-to's senders print this sentence; keep it for them.
        "message": f"This is {device}. We accepted your logs",
    }


def _howto_answer(device: str) -> str:
    """The published how-to's answer, for its own event shapes (mapping template or
    console test event: a top-level ``body``, no ``requestContext``) without a
    ``batch_id``: its senders and its test event expect exactly this JSON string."""
    return f"This is {device}. We accepted your logs"


def _request_id(event: Any, context: Any) -> Optional[str]:
    request_id = getattr(context, "aws_request_id", None)
    if isinstance(request_id, str):
        return request_id
    if isinstance(event, dict) and isinstance(event.get("requestContext"), dict):
        value = event["requestContext"].get("requestId")
        return value if isinstance(value, str) else None
    return None


def _count(name: str, amount: int = 1) -> None:
    COUNTERS[name] = COUNTERS.get(name, 0) + amount
