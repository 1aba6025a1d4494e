"""handler.py end to end: moto S3 + moto Cognito + a loopback Slack, on recorded-shape events."""

from __future__ import annotations

import base64
import gzip
import json
import logging
import zlib
from typing import Any

import handler
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from support.events import DIRECT, HOWTO_MAPPING, HOWTO_TEST, batch, load_event, proxy_event

DEVICE = "pi-kitchen-01"
STATUSES = {200, 400, 403, 413, 415, 500, 503}


class Context:
    """The two attributes of the Lambda context object the function reads."""

    def __init__(self, remaining_ms: int = 25_000, request_id: str = "ctx-req-1") -> None:
        self.aws_request_id = request_id
        self._remaining = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self._remaining


def device_event(rig: Any, body: Any = None, name: str = DEVICE, **kwargs: Any) -> dict[str, Any]:
    """A REST proxy event from ``name``'s Cognito identity in the moto pools."""
    return proxy_event(
        body,
        user_pool_id=rig.cognito.user_pool_id,
        sub=rig.cognito.subs[name],
        identity_pool_id=rig.cognito.identity_pool_id,
        **kwargs,
    )


def stored(rig: Any, key: str) -> list[dict[str, Any]]:
    body = rig.s3.get_object(Bucket="omprog-test-logs", Key=key)["Body"].read()
    return [json.loads(line) for line in gzip.decompress(body).decode().splitlines()]


def keys(rig: Any) -> list[str]:
    return [o["Key"] for o in rig.s3.list_objects_v2(Bucket="omprog-test-logs").get("Contents", [])]


def batch_logs(caplog: Any) -> list[dict[str, Any]]:
    return [
        json.loads(r.getMessage())
        for r in caplog.records
        if r.name == handler.LOGGER.name and '"event": "batch"' in r.getMessage()
    ]


# --- the device path ---------------------------------------------------------------------------


def test_recorded_device_event_is_archived_and_alerts_once(rig: Any, slack_problems: Any) -> None:
    event = load_event("apigw_rest_proxy_cognito")
    event = device_event(rig, raw=gzip.decompress(base64.b64decode(event["body"])))
    status, body = rig.call(event, Context())
    key = "logs/dt=2026-11-26/device=pi-kitchen-01/20261126T231000Z-1a2b3c4d5e6f7a8b.jsonl.gz"
    assert status == 200
    assert body == {
        "accepted": 2,
        "key": key,
        "alerts": 1,
        "duplicate": False,
        "alert_status": "sent",
        "message": "This is pi-kitchen-01. We accepted your logs",
    }
    records = stored(rig, key)
    assert [r["app"] for r in records] == ["dhcpcd", "kernel"]
    assert records[1]["severity"] == "err" and records[1]["device_id"] == DEVICE
    (payload,) = rig.slack.payloads
    assert slack_problems(payload) == []
    assert "mmc0: card never left busy state" in json.dumps(payload)


def test_device_id_comes_from_the_identity_when_the_body_has_none(rig: Any) -> None:
    status, body = rig.call(device_event(rig, batch(["x"], device_id=None)))
    assert status == 200 and "/device=pi-kitchen-01/" in body["key"]


def test_claiming_another_device_is_403_and_nothing_is_stored(rig: Any) -> None:
    rig.cognito.add_device("pi-garage")
    status, body = rig.call(device_event(rig, batch(["x"], device_id="pi-garage")))
    assert (status, body["error"], body["field"]) == (403, "forbidden", "device_id")
    assert keys(rig) == [] and rig.slack.requests == []


def test_disabled_device_is_refused_by_a_warm_container_after_ten_minutes(rig: Any) -> None:
    rig.cognito.add_device("pi-warm")
    first = device_event(rig, batch(["x"], device_id=None, batch_id="b1"), name="pi-warm")
    assert rig.call(first)[0] == 200
    rig.cognito.add_device("pi-warm", enabled=False)
    again = device_event(rig, batch(["x"], device_id=None, batch_id="b2"), name="pi-warm")
    assert rig.call(again)[0] == 200  # within the cache's 10 minutes: still the cached answer
    rig.clock.now += 600
    status, body = rig.call(again)
    assert (status, body["error"]) == (403, "forbidden") and "disabled" in body["message"]


def test_unknown_caller_is_403(rig: Any) -> None:
    event = device_event(rig, batch(["x"]))
    event["requestContext"]["identity"]["cognitoAuthenticationType"] = "unauthenticated"
    assert rig.call(event)[0] == 403


def test_same_batch_twice_is_stored_once_and_alerts_once(rig: Any) -> None:
    event = device_event(
        rig, batch([f"2026-11-26 23:09:0{i} h daemon.err: a: boom {i}" for i in range(3)])
    )
    first = rig.call(event)
    second = rig.call(event)
    assert first[0] == second[0] == 200
    assert (first[1]["duplicate"], first[1]["alerts"]) == (False, 3)
    assert (second[1]["duplicate"], second[1]["alerts"], second[1]["alert_status"]) == (
        True,
        0,
        "skipped_duplicate",
    )
    assert second[1]["key"] == first[1]["key"] and second[1]["accepted"] == 3
    assert len(keys(rig)) == 1 and len(rig.slack.requests) == 1


def test_resent_batch_with_other_content_does_not_overwrite(rig: Any) -> None:
    rig.call(device_event(rig, batch(["original line"])))
    status, body = rig.call(device_event(rig, batch(["tampered line"])))
    assert status == 200 and body["duplicate"] is True
    assert stored(rig, body["key"])[0]["raw"] == "original line"


def test_sixty_error_lines_make_one_valid_slack_message(rig: Any, slack_problems: Any) -> None:
    logs = [f"2026-11-26 23:09:{i:02d} pi daemon.err: app[{i}]: failure {i}" for i in range(60)]
    status, body = rig.call(device_event(rig, batch(logs)))
    assert status == 200 and body["alerts"] == 60 and body["alert_status"] == "sent"
    (payload,) = rig.slack.payloads
    assert slack_problems(payload) == [] and len(payload["blocks"]) == 50
    assert body["key"] in payload["blocks"][-1]["elements"][0]["text"]


def test_channel_mention_in_a_log_line_is_escaped(rig: Any, slack_problems: Any) -> None:
    logs = [
        '{"ts":"2026-11-26T23:14:04.534728+00:00", "host":"vm", "facility":"daemon", "severity":3, '
        '"app":"myapp", "pid":"-", "msg":" hello \\"quoted\\" <!channel> & tab#011x", '
        '"uuid":"047575B75C324071BA7A076AEABC995F"}'
    ]
    assert rig.call(device_event(rig, batch(logs)))[0] == 200
    (payload,) = rig.slack.payloads
    assert slack_problems(payload) == []
    assert "<!channel>" not in json.dumps(payload) and "&lt;!channel&gt;" in json.dumps(payload)


@pytest.mark.parametrize(
    ("threshold", "alerts"),
    [("err", 2), ("3", 2), ("crit", 1), ("warning", 3), ("warn", 3), ("debug", 4), ("emerg", 0)],
)
def test_alert_threshold_by_name_alias_or_number(rig: Any, threshold: str, alerts: int) -> None:
    rig.env["ALERT_MIN_SEVERITY"] = threshold
    logs = [
        f"2026-11-26 23:09:00 h daemon.{sev}: a: m" for sev in ("crit", "err", "warning", "info")
    ]
    status, body = rig.call(device_event(rig, batch(logs)))
    assert status == 200 and body["alerts"] == alerts
    assert len(rig.slack.requests) == (1 if alerts else 0)


def test_empty_batch_is_accepted_and_writes_nothing(rig: Any) -> None:
    status, body = rig.call(device_event(rig, batch([])))
    assert (status, body["accepted"], body["key"]) == (200, 0, None) and keys(rig) == []


def test_log_prefix_is_applied(rig: Any) -> None:
    rig.env["LOG_PREFIX"] = "archive/syslog"
    status, body = rig.call(device_event(rig, batch(["x"])))
    assert status == 200 and body["key"].startswith("archive/syslog/dt=2026-11-26/")


# --- the published how-to's path -----------------------------------------------------------------


#: What the how-to's own Lambda answers its own test event (HOWTO-FACTS.md), verbatim.
HOWTO_RESPONSE = {"statusCode": 200, "body": '"This is THISISTEST. We accepted your logs"'}


def test_howto_test_event_is_accepted_and_alerts_on_its_aliases(
    rig: Any, slack_problems: Any, caplog: Any
) -> None:
    rig.env["REQUIRE_IDENTITY"] = "false"
    caplog.set_level(logging.INFO, logger=handler.LOGGER.name)
    assert handler.handle(load_event(HOWTO_TEST), None, rig.deps) == HOWTO_RESPONSE
    (key,) = keys(rig)
    assert key.startswith("logs/dt=2024-07-13/device=THISISTEST/20240713T154003Z-h")
    (log,) = batch_logs(caplog)
    assert (log["lines"], log["alert_lines"], log["duplicate"]) == (2, 2, False)
    records = stored(rig, key)
    assert [r["severity"] for r in records] == ["err", "crit"]
    assert all(r["ts_assumed_utc"] is True for r in records)
    (payload,) = rig.slack.payloads
    assert slack_problems(payload) == []
    assert [s["fields"][0]["text"] for s in payload["blocks"] if s["type"] == "section"] == [
        "*Severity*\ncrit",
        "*Severity*\nerr",
    ]


def test_howto_mapping_template_event_is_the_same_batch(rig: Any, caplog: Any) -> None:
    rig.env["REQUIRE_IDENTITY"] = "false"
    caplog.set_level(logging.INFO, logger=handler.LOGGER.name)
    assert handler.handle(load_event(HOWTO_TEST), None, rig.deps) == HOWTO_RESPONSE
    assert handler.handle(load_event(HOWTO_MAPPING), None, rig.deps) == HOWTO_RESPONSE
    first, second = batch_logs(caplog)
    assert second["key"] == first["key"] and second["duplicate"] is True
    assert len(keys(rig)) == 1 and len(rig.slack.payloads) == 1  # archived and alerted once


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(
            {"body": batch(["x"], device_id="THISISTEST")}, id="mapping-template-with-batch-id"
        ),
        pytest.param(
            {"body": json.dumps(batch(["x"], device_id="THISISTEST"))},
            id="console-string-body-with-batch-id",
        ),
        pytest.param(
            proxy_event(batch(["x"], device_id="THISISTEST", batch_id=None), encoding="plain"),
            id="proxy-event-without-batch-id",
        ),
        pytest.param(batch(["x"], device_id="THISISTEST", batch_id=None), id="direct-invoke"),
    ],
)
def test_only_the_howto_shapes_without_batch_id_get_the_howto_answer(
    rig: Any, event: dict[str, Any]
) -> None:
    rig.env["REQUIRE_IDENTITY"] = "false"
    status, body = rig.call(event)
    assert status == 200 and body["accepted"] == 1 and body["duplicate"] is False
    assert body["message"] == "This is THISISTEST. We accepted your logs"
    assert body["key"].startswith("logs/dt=2026-11-26/device=THISISTEST/")


def test_howto_answer_also_for_a_resend_and_an_empty_batch(rig: Any) -> None:
    rig.env["REQUIRE_IDENTITY"] = "false"
    for event in (load_event(HOWTO_TEST), load_event(HOWTO_TEST)):
        assert handler.handle(event, None, rig.deps) == HOWTO_RESPONSE
    empty = {"body": batch([], device_id="THISISTEST", batch_id=None)}
    assert handler.handle(empty, None, rig.deps) == HOWTO_RESPONSE


def test_howto_shape_refusals_stay_json_objects(rig: Any) -> None:
    rig.env["REQUIRE_IDENTITY"] = "false"
    event = {"body": batch(["x"], device_id="../x", batch_id=None)}
    status, body = rig.call(event)
    assert (status, body["error"], body["field"]) == (400, "bad_request", "device_id")


def test_howto_event_without_identity_is_403_by_default(rig: Any) -> None:
    status, body = rig.call(load_event(HOWTO_TEST))
    assert status == 403 and "REQUIRE_IDENTITY" in body["message"]
    assert keys(rig) == []


def test_year_5_batch_is_archived_under_a_zero_padded_date_and_id(rig: Any) -> None:
    event = device_event(rig, batch(["x"], batch_id=None, timestamp="0005-01-01T00:00:00Z"))
    status, body = rig.call(event)
    assert status == 200
    assert body["key"].startswith(f"logs/dt=0005-01-01/device={DEVICE}/00050101T000000Z-h")
    assert keys(rig) == [body["key"]]


def test_direct_invoke(rig: Any) -> None:
    rig.env["REQUIRE_IDENTITY"] = "false"
    status, body = rig.call(load_event(DIRECT))
    assert status == 200 and body["key"].endswith(
        "/device=pi-kitchen-01/20261126T231000Z-1a2b3c4d5e6f7a8b.jsonl.gz"
    )


# --- refusals and failures ---------------------------------------------------------------


def test_dotdot_device_id_is_400_and_reaches_no_key(rig: Any) -> None:
    rig.env["REQUIRE_IDENTITY"] = "false"
    status, body = rig.call({"body": batch(["x"], device_id="../x")})
    assert (status, body["error"], body["field"]) == (400, "bad_request", "device_id")
    assert keys(rig) == []


def test_gzip_bomb_is_413(rig: Any) -> None:
    rig.env["MAX_BATCH_BYTES"] = str(2**20)
    deflater = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = deflater.compress(b'{"logs": ["' + b"A" * (8 * 2**20)) + deflater.flush()
    status, body = rig.call(device_event(rig, raw=bomb, encoding="base64"))
    assert (status, body["error"], body["field"]) == (413, "payload_too_large", "body")


def test_undecodable_body_is_415(rig: Any) -> None:
    event = device_event(rig, batch(["x"]))
    event["body"] = "this is not base64!"
    assert rig.call(event)[0] == 415


def test_s3_outage_is_503_and_sends_no_alert(rig: Any, closed_port: int) -> None:
    import boto3
    from botocore.config import Config

    down = boto3.client(
        "s3",
        region_name="eu-west-1",
        endpoint_url=f"http://127.0.0.1:{closed_port}",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    rig.deps.s3 = lambda: down
    status, body = rig.call(device_event(rig, batch(["2026-11-26 23:09:00 h daemon.err: a: boom"])))
    assert (status, body["error"]) == (503, "service_unavailable")
    assert rig.slack.requests == []


def test_cognito_outage_is_503(rig: Any, closed_port: int) -> None:
    import boto3
    from botocore.config import Config

    down = boto3.client(
        "cognito-idp",
        region_name="eu-west-1",
        endpoint_url=f"http://127.0.0.1:{closed_port}",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    rig.deps.cognito = lambda: down
    assert rig.call(device_event(rig, batch(["x"])))[0] == 503


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ALERT_MIN_SEVERITY", "loud"),
        ("ALERT_MIN_SEVERITY", "9"),
        ("MAX_BATCH_BYTES", "lots"),
        ("MAX_BATCH_BYTES", "0"),
        ("MAX_LINES", "many"),
        ("MAX_LINES", "-1"),
        ("REQUIRE_IDENTITY", "maybe"),
        ("LOG_PREFIX", "../up"),
        ("BUCKET_NAME", ""),
        ("USER_POOL_ID", ""),
    ],
)
def test_bad_setting_is_500_naming_the_variable(rig: Any, name: str, value: str) -> None:
    rig.env[name] = value
    status, body = rig.call(device_event(rig, batch(["x"])))
    assert (status, body["error"], body["field"]) == (500, "configuration_error", name)
    assert name in body["message"]


def test_more_lines_than_max_lines_is_413_and_nothing_is_stored(rig: Any) -> None:
    rig.env["MAX_LINES"] = "3"
    status, body = rig.call(device_event(rig, batch(["a", "b", "c", "d"])))
    assert (status, body["error"], body["field"]) == (413, "payload_too_large", "logs")
    assert keys(rig) == []
    status, body = rig.call(device_event(rig, batch(["a", "b", "c"])))
    assert status == 200 and body["accepted"] == 3


def test_max_lines_setting_default_and_bad_value_message() -> None:
    from errors import ConfigError
    from settings import load_settings

    base = {"BUCKET_NAME": "b", "REQUIRE_IDENTITY": "false"}
    assert load_settings(base).max_lines == 500_000
    assert load_settings({**base, "MAX_LINES": " 42 "}).max_lines == 42
    with pytest.raises(ConfigError) as info:
        load_settings({**base, "MAX_LINES": "1e6"})
    assert info.value.field == "MAX_LINES" and "MAX_LINES='1e6'" in info.value.message


def test_slack_failure_never_fails_the_batch(rig: Any) -> None:
    rig.slack.script = [(500, {}, b"rollup_error")] * 4
    status, body = rig.call(
        device_event(rig, batch(["2026-11-26 23:09:00 h daemon.err: a: boom"])), Context()
    )
    assert status == 200 and body["alert_status"] == "failed" and len(keys(rig)) == 1
    assert handler.COUNTERS["slack_failed"] == 1


def test_slack_429_waits_within_the_lambda_deadline(rig: Any) -> None:
    rig.slack.script = [(429, {"Retry-After": "1"}, b"rate_limited")]
    event = device_event(rig, batch(["2026-11-26 23:09:00 h daemon.err: a: boom"]))
    status, body = rig.call(event, Context(remaining_ms=2000))  # 0.5 s left for Slack
    assert status == 200 and body["alert_status"] == "rate_limited" and rig.clock.sleeps == []


def _time_sleep_checks(clock: Any) -> Any:
    """A fake sleep with ``time.sleep``'s checks: nan or a negative raises, inf overflows."""

    def sleep(seconds: float) -> None:
        if seconds != seconds or seconds < 0:
            raise ValueError("sleep length must be non-negative")
        if seconds == float("inf"):
            raise OverflowError("sleep length is too large")
        clock.sleep(seconds)

    return sleep


@pytest.mark.parametrize("retry_after", ["nan", "inf"])
def test_slack_nonsense_retry_after_waits_one_second_and_sends(rig: Any, retry_after: str) -> None:
    rig.deps.sleep = _time_sleep_checks(rig.clock)
    rig.slack.script = [(429, {"Retry-After": retry_after}, b"rate_limited")]
    event = device_event(rig, batch(["2026-11-26 23:09:00 h daemon.err: a: boom"]))
    status, body = rig.call(event, Context())
    assert (status, body["alert_status"]) == (200, "sent") and rig.clock.sleeps == [1.0]


def _sleep_raises(rig: Any, monkeypatch: Any) -> None:
    def sleep(seconds: float) -> None:
        raise ValueError("Invalid value NaN (not a number)")

    rig.deps.sleep = sleep
    rig.slack.script = [(429, {"Retry-After": "1"}, b"rate_limited")]


def _send_raises(rig: Any, monkeypatch: Any) -> None:
    def send(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the sender")

    monkeypatch.setattr(handler.alerts, "send", send)


@pytest.mark.parametrize(
    ("break_it", "exception"),
    [
        pytest.param(_sleep_raises, "ValueError", id="sleep-raises"),
        pytest.param(_send_raises, "RuntimeError", id="slack-send-raises"),
    ],
)
def test_nothing_after_the_archive_write_turns_into_a_non_200(
    rig: Any, monkeypatch: Any, caplog: Any, break_it: Any, exception: str
) -> None:
    break_it(rig, monkeypatch)
    caplog.set_level(logging.INFO, logger=handler.LOGGER.name)
    event = device_event(rig, batch(["2026-11-26 23:09:00 h daemon.err: a: boom"]))
    status, body = rig.call(event, Context())
    assert (status, body["alert_status"], body["duplicate"]) == (200, "failed", False)
    assert len(keys(rig)) == 1
    assert handler.COUNTERS["alert_errors"] == 1 and handler.COUNTERS["slack_failed"] == 1
    (log,) = batch_logs(caplog)
    assert (log["status"], log["alert_status"], log["alert_exception"]) == (
        200,
        "failed",
        exception,
    )
    assert "boom" not in caplog.text


def test_empty_webhook_means_alerts_off_logged_once(rig: Any, caplog: Any) -> None:
    rig.env["WEBHOOK_URL"] = ""
    caplog.set_level(logging.INFO, logger=handler.LOGGER.name)
    for n in range(2):
        body = rig.call(
            device_event(
                rig, batch([f"2026-11-26 23:09:00 h daemon.err: a: {n}"], batch_id=f"b{n}")
            )
        )[1]
        assert body["alert_status"] == "off" and body["alerts"] == 1
    offs = [r for r in caplog.records if "alerts_off" in r.getMessage()]
    assert len(offs) == 1 and offs[0].levelno == logging.WARNING


def test_an_unexpected_exception_is_a_500_json_not_a_crash(rig: Any, caplog: Any) -> None:
    def broken_s3() -> Any:
        raise RuntimeError("secret log text must not be logged")

    rig.deps.s3 = broken_s3
    caplog.set_level(logging.INFO, logger=handler.LOGGER.name)
    status, body = rig.call(device_event(rig, batch(["x"])))
    assert (status, body["error"]) == (500, "internal_error")
    (log,) = batch_logs(caplog)
    assert log["exception"] == "RuntimeError" and log["where"].startswith("test_lambda_handler.py:")
    assert "secret" not in caplog.text


def test_one_structured_log_line_per_batch_without_log_text(rig: Any, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger=handler.LOGGER.name)
    secret = "password=hunter2 token=abc"
    event = device_event(rig, batch([f"2026-11-26 23:09:00 h daemon.err: a: {secret}", "garbage"]))
    rig.call(event, Context(request_id="req-42"))
    (log,) = batch_logs(caplog)
    assert log["request_id"] == "req-42"
    assert (log["device"], log["batch"], log["lines"], log["unparsed"]) == (
        DEVICE,
        "20261126T231000Z-1a2b3c4d5e6f7a8b",
        2,
        1,
    )
    assert (log["status"], log["duplicate"], log["alert_status"], log["alert_lines"]) == (
        200,
        False,
        "sent",
        1,
    )
    assert isinstance(log["duration_ms"], float) and log["parser_errors"] == 0
    assert "hunter2" not in caplog.text and "garbage" not in caplog.text


def test_rejections_are_logged_with_their_reason(rig: Any, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger=handler.LOGGER.name)
    rig.call(device_event(rig, batch(["x"], device_id="../x")))
    (log,) = batch_logs(caplog)
    assert (log["status"], log["error"], log["field"]) == (400, "bad_request", "device_id")
    assert log["request_id"] == "5c3c1a3e-6b9d-4d8e-9f0a-1b2c3d4e5f60"  # from requestContext


def test_clients_are_created_lazily_not_at_import() -> None:
    assert handler._clients == {}
    deps = handler.default_dependencies()
    assert handler._clients == {}  # building dependencies creates no client
    status = handler.handle(
        {"body": "x"},
        None,
        handler.Dependencies(
            s3=deps.s3,
            cognito=deps.cognito,
            transport=deps.transport,
            sleep=deps.sleep,
            clock=deps.clock,
            environ={"BUCKET_NAME": "b", "REQUIRE_IDENTITY": "false"},
        ),
    )["statusCode"]
    assert status == 400 and handler._clients == {}  # a refused request touched no AWS client


# --- "never an unhandled exception" -------------------------------------------------------------

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)
BODIES = st.one_of(
    st.text(max_size=200),
    st.builds(lambda b: base64.b64encode(b).decode(), st.binary(max_size=200)),
    st.builds(lambda b: base64.b64encode(gzip.compress(b)).decode(), st.binary(max_size=200)),
    st.builds(lambda obj: json.dumps(obj), JSONISH),
    st.builds(
        lambda logs, dev, bid, ts: json.dumps(
            {"device_id": dev, "batch_id": bid, "timestamp": ts, "logs": logs}
        ),
        st.lists(st.text(max_size=60), max_size=5),
        st.one_of(st.just("pi-1"), st.text(max_size=10)),
        st.one_of(st.none(), st.just("b-1"), st.text(max_size=10)),
        st.one_of(st.just("2026-11-26T23:10:00Z"), st.text(max_size=30)),
    ),
)
EVENTS = st.one_of(
    JSONISH,
    st.builds(
        lambda body, b64: {"body": body, "isBase64Encoded": b64, "requestContext": {}},
        BODIES,
        st.booleans(),
    ),
    st.builds(lambda body: {"body": body}, st.one_of(BODIES, JSONISH)),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(EVENTS)
def test_handler_never_raises(rig: Any, event: Any) -> None:
    rig.env["REQUIRE_IDENTITY"] = "false"
    response = handler.handle(event, None, rig.deps)
    hypothesis_event(f"status {response['statusCode']}")
    assert response["statusCode"] in STATUSES
    body = json.loads(response["body"])
    if isinstance(body, str):  # the how-to's own answer: only for its shapes without batch_id
        assert response == {"statusCode": 200, "body": json.dumps(body)}
        assert handler.request.event_kind(event) == "mapping-template"
        assert body.startswith("This is ") and body.endswith(". We accepted your logs")
    else:
        assert isinstance(body, dict)
    assert response["statusCode"] != 500, body  # only a bug or a bad setting may answer 500
