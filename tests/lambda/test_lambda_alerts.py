"""alerts.py: grouping, escaping, Slack's limits, and a sender that never raises."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import alerts
import parsing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REF = datetime(2026, 11, 26, 23, 10, tzinfo=timezone.utc)


def collect(lines: list[str], threshold: int = 3) -> alerts.AlertCollector:
    collector = alerts.AlertCollector()
    for line in lines:
        record = parsing.parse_line(line, REF)
        if parsing.is_alerting(record, threshold):
            collector.add(record)
    return collector


def message(lines: list[str], **kwargs: Any) -> dict[str, Any]:
    return alerts.build_message(
        collect(lines, **kwargs),
        device_id="pi-kitchen-01",
        batch_id="20261126T231000Z-1a2b3c4d5e6f7a8b",
        location="s3://omprog-test-logs/logs/dt=2026-11-26/device=pi-kitchen-01/b.jsonl.gz",
        threshold_name="err",
    )


def line(sec: int, sev: str = "err", msg: str = "disk failure", app: str = "smartd") -> str:
    return f"2026-11-26 23:09:{sec:02d} pi-kitchen-01 daemon.{sev}: {app}[42]: {msg}"


def sections(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in payload["blocks"] if b["type"] == "section"]


def test_identical_lines_are_one_group_with_a_count_and_window(slack_problems: Any) -> None:
    payload = message([line(1), line(5), line(9), line(7, "info", "fine")])
    assert slack_problems(payload) == []
    assert payload["blocks"][0]["type"] == "header"
    assert payload["blocks"][0]["text"]["text"] == "3 err+ lines from pi-kitchen-01"
    context = payload["blocks"][1]["elements"][0]["text"]
    assert "2026-11-26 23:09:01 – 23:09:09 UTC" in context
    (group,) = sections(payload)
    assert group["text"]["text"] == "```disk failure```"
    fields = [f["text"] for f in group["fields"]]
    assert fields[0] == "*Severity*\nerr ×3"
    assert "*App*\nsmartd" in fields and "*Host*\npi-kitchen-01" in fields


def test_groups_are_worst_first_then_most_frequent() -> None:
    lines = [line(1, "err", "a"), line(2, "err", "b"), line(3, "err", "b"), line(4, "crit", "c")]
    shown = [s["text"]["text"] for s in sections(message(lines))]
    assert shown == ["```c```", "```b```", "```a```"]


def test_sixty_distinct_error_lines_fit_in_fifty_blocks_and_say_what_is_missing(
    slack_problems: Any,
) -> None:
    payload = message([line(i % 60, msg=f"error number {i}") for i in range(60)])
    assert slack_problems(payload) == []
    assert len(payload["blocks"]) == 50
    footer = payload["blocks"][-1]["elements"][0]["text"]
    assert footer.startswith("…and 13 more groups (13 lines) not shown")
    assert "s3://omprog-test-logs/logs/dt=2026-11-26/device=pi-kitchen-01/b.jsonl.gz" in footer
    assert payload["text"] == "60 err+ lines from pi-kitchen-01"


def test_sixty_identical_error_lines_are_one_section() -> None:
    payload = message([line(i % 60) for i in range(60)])
    assert len(sections(payload)) == 1 and len(payload["blocks"]) == 3


def test_forty_eight_groups_fit_without_a_footer() -> None:
    payload = message([line(1, msg=f"m{i}") for i in range(48)])
    assert len(payload["blocks"]) == 50 and payload["blocks"][-1]["type"] == "section"


HOSTILE = [
    "<!channel> wake up",
    "<!here|here> and <!everyone>",
    "<@U024BE7LH> you",
    "<https://evil.example/login|Click to re-authenticate>",
    "Tom & Jerry &amp; &lt;b&gt;",
    "```code fence``` break out",
    "*bold* _it_ ~strike~",
]


@pytest.mark.parametrize("text", HOSTILE, ids=lambda t: t[:20])
def test_log_text_cannot_ping_link_or_break_out(text: str, slack_problems: Any) -> None:
    payload = message([line(1, msg=text, app="ev<il>&app")])
    assert slack_problems(payload) == []
    dumped = json.dumps(payload, ensure_ascii=False)
    assert "<!" not in dumped and "<@" not in dumped and "<http" not in dumped
    group = sections(payload)[0]
    shown = group["text"]["text"][3:-3].replace("\u200b", "")
    unescaped = shown.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    assert unescaped == text  # nothing lost, only escaped
    assert group["text"]["verbatim"] is True
    assert "*App*\nev&lt;il&gt;&amp;app" in [f["text"] for f in group["fields"]]


def test_real_rsyslog_line_with_channel_mention_is_escaped(slack_problems: Any) -> None:
    payload = message(
        ['2026-11-26T23:14:04 vm daemon.err: myapp: hello "quoted" <!channel> & tab#011x']
    )
    assert slack_problems(payload) == []
    assert (
        sections(payload)[0]["text"]["text"]
        == '```hello "quoted" &lt;!channel&gt; &amp; tab#011x```'
    )


def test_long_texts_are_cut_to_the_limits_without_splitting_an_entity(slack_problems: Any) -> None:
    payload = message([line(1, msg="&" * 5000, app="a" * 5000)])
    assert slack_problems(payload) == []
    text = sections(payload)[0]["text"]["text"]
    assert text.endswith("…```") and len(text) <= 3000
    assert text[3:-4].replace("&amp;", "") == ""


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("abcdef", 10, "abcdef"),
        ("abcdef", 4, "abc…"),
        ("ab&amp;cd", 5, "ab…"),
        ("ab&amp;cd", 8, "ab&amp;…"),
        ("&lt;&lt;", 6, "&lt;…"),
    ],
)
def test_cut(text: str, limit: int, expected: str) -> None:
    assert alerts.cut(text, limit) == expected


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["emerg", "alert", "crit", "err"]),
            st.text(max_size=3500),
            st.text(max_size=300),
        ),
        min_size=1,
        max_size=80,
    )
)
def test_any_alerting_batch_gives_a_valid_payload(slack_problems: Any, entries: list) -> None:
    collector = alerts.AlertCollector()
    for sev, msg, app in entries:
        record = parsing.parse_line(line(1, sev, "x"), REF)
        record.update(msg=msg, app=app or None)
        collector.add(record)
    payload = alerts.build_message(
        collector, device_id="d", batch_id="b", location="s3://b/k", threshold_name="err"
    )
    assert slack_problems(payload) == []
    assert alerts.check_message(payload) == []


def test_group_tracking_is_bounded() -> None:
    collector = alerts.AlertCollector(max_groups=5)
    for i in range(20):
        collector.add(parsing.parse_line(line(1, msg=f"m{i}"), REF))
    assert len(collector.groups) == 5 and collector.untracked_lines == 15 and collector.lines == 20
    payload = alerts.build_message(
        collector, device_id="d", batch_id="b", location="s3://b/k", threshold_name="err"
    )
    assert (
        "…and at least 1 more group (15 lines) not shown"
        in payload["blocks"][-1]["elements"][0]["text"]
    )


def test_check_message_catches_what_slack_sdk_does_not() -> None:
    good = message([line(1)])
    assert alerts.check_message(good) == []
    too_many = {**good, "blocks": good["blocks"] * 17}  # 3 blocks × 17
    assert "51 blocks > 50" in alerts.check_message(too_many)
    wide = json.loads(json.dumps(good))
    wide["blocks"][2]["fields"][0]["text"] = "x" * 2001
    assert "field over 2000 characters" in alerts.check_message(wide)
    raw = json.loads(json.dumps(good))
    raw["blocks"][2]["text"]["text"] = "<!channel>"
    assert any("angle bracket" in p for p in alerts.check_message(raw))


# --- sending -----------------------------------------------------------------------------------


def send(
    url: str, clock: Any, transport: Any = alerts.urllib_transport, budget: float = 10.0
) -> alerts.SendResult:
    return alerts.send(
        url, message([line(1)]), transport=transport, sleep=clock.sleep, clock=clock, budget=budget
    )


from devstack.slack import WEBHOOK_PATH  # noqa: E402


def test_sent_to_a_loopback_webhook(slack: Any, clock: Any) -> None:
    result = send(slack.url, clock)
    assert (result.status, result.attempts, result.http_status) == ("sent", 1, 200)
    (posted,) = slack.requests
    assert posted["path"] == WEBHOOK_PATH
    assert posted["headers"]["Content-Type"].startswith("application/json")
    assert posted["json"]["blocks"][0]["type"] == "header"


def test_429_waits_retry_after_then_sends(slack: Any, clock: Any) -> None:
    slack.script = [
        (429, {"Retry-After": "2"}, b"rate_limited"),
        (429, {"Retry-After": "3"}, b"rate_limited"),
    ]
    result = send(slack.url, clock)
    assert (result.status, result.attempts) == ("sent", 3)
    assert clock.sleeps == [2.0, 3.0]
    assert len(slack.requests) == 3


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        pytest.param({"Retry-After": "2.5"}, 2.5, id="seconds"),
        pytest.param({"retry-after": "0"}, 0.0, id="zero-lowercase-name"),
        pytest.param({"Retry-After": "nan"}, 1.0, id="nan"),
        pytest.param({"Retry-After": "inf"}, 1.0, id="inf"),
        pytest.param({"Retry-After": "-inf"}, 1.0, id="minus-inf"),
        pytest.param({"Retry-After": "-3"}, 1.0, id="negative"),
        pytest.param({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, 1.0, id="http-date"),
        pytest.param({}, 1.0, id="missing"),
    ],
)
def test_retry_after_counts_only_finite_non_negative_seconds(
    headers: dict[str, str], wait: float
) -> None:
    assert alerts._retry_after(headers) == wait


def strict_sleep(clock: Any) -> Any:
    """``time.sleep``'s own checks (nan and negatives raise ValueError, inf OverflowError)."""

    def sleep(seconds: float) -> None:
        if seconds != seconds or seconds < 0:
            raise ValueError(f"sleep length must be non-negative: {seconds}")
        if seconds == float("inf"):
            raise OverflowError("sleep length is too large")
        clock.sleep(seconds)

    return sleep


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_429_with_a_nonsense_retry_after_waits_one_second(
    slack: Any, clock: Any, value: str
) -> None:
    slack.script = [(429, {"Retry-After": value}, b"rate_limited")]
    result = alerts.send(
        slack.url,
        message([line(1)]),
        transport=alerts.urllib_transport,
        sleep=strict_sleep(clock),
        clock=clock,
        budget=10.0,
    )
    assert (result.status, result.attempts) == ("sent", 2) and clock.sleeps == [1.0]


def test_window_of_a_year_below_1000_is_zero_padded() -> None:
    collector = alerts.AlertCollector()
    collector.add(
        parsing.parse_line('{"ts":"0005-01-01T00:00:01+00:00","severity":3,"msg":"m"}', REF)
    )
    payload = alerts.build_message(
        collector,
        device_id="pi-kitchen-01",
        batch_id="00050101T000000Z-h0",
        location="s3://omprog-test-logs/logs/dt=0005-01-01/device=pi-kitchen-01/b.jsonl.gz",
        threshold_name="err",
    )
    assert "0005-01-01 00:00:01 UTC" in payload["blocks"][1]["elements"][0]["text"]


def test_429_beyond_the_budget_gives_up_without_sleeping_it(slack: Any, clock: Any) -> None:
    slack.script = [(429, {"Retry-After": "4"}, b""), (429, {"Retry-After": "30"}, b"")]
    result = send(slack.url, clock)
    assert (result.status, result.attempts, result.http_status) == ("rate_limited", 2, 429)
    assert clock.sleeps == [4.0] and sum(clock.sleeps) <= 10


def test_the_lambda_deadline_bounds_the_wait(slack: Any, clock: Any) -> None:
    slack.script = [(429, {"Retry-After": "2"}, b"")]
    result = send(slack.url, clock, budget=1.5)
    assert result.status == "rate_limited" and clock.sleeps == []


def test_server_errors_retry_with_backoff(slack: Any, clock: Any) -> None:
    slack.script = [(500, {}, b"rollup_error"), (503, {}, b"")]
    result = send(slack.url, clock)
    assert (result.status, result.attempts) == ("sent", 3) and clock.sleeps == [0.5, 1.0]


def test_permanent_errors_are_not_retried(slack: Any, clock: Any) -> None:
    slack.script = [(404, {}, b"no_service")]
    result = send(slack.url, clock)
    assert (result.status, result.attempts, result.http_status) == ("failed", 1, 404)
    assert "no_service" in result.reason and clock.sleeps == []


def test_unreachable_webhook_fails_quietly(closed_port: int, clock: Any) -> None:
    result = send(f"http://127.0.0.1:{closed_port}/hook", clock)
    assert result.status == "failed" and result.attempts == alerts.MAX_ATTEMPTS
    assert result.reason == "URLError"


def test_a_transport_that_raises_anything_is_a_result(clock: Any) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("boom")

    assert send("https://hooks.slack.com/services/x", clock, transport=broken).status == "failed"


@pytest.mark.parametrize(
    ("url", "status"),
    [("", "off"), ("file:///etc/passwd", "invalid"), ("ftp://x", "invalid")],
    ids=["empty-means-off", "file-scheme", "ftp-scheme"],
)
def test_url_is_checked_before_anything_is_sent(url: str, status: str, clock: Any) -> None:
    def never(*args: Any) -> Any:
        raise AssertionError("must not be called")

    assert send(url, clock, transport=never).status == status


def test_an_invalid_payload_is_not_sent(clock: Any) -> None:
    def never(*args: Any) -> Any:
        raise AssertionError("must not be called")

    payload = message([line(1)])
    payload["blocks"] = payload["blocks"] * 30
    result = alerts.send(
        "https://x", payload, transport=never, sleep=clock.sleep, clock=clock, budget=10
    )
    assert result.status == "invalid"
