"""The pure parts of storm control: storm.py's decisions, the digest's arithmetic and bounds,
the settings, the keys and item sizes, and the list messages' layout. No AWS here."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import alerts
import pytest
import settings
import state
import storm
from errors import ConfigError
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from support.alerting import entries, slack_problems

NOW = datetime(2026, 11, 26, 23, 0, tzinfo=timezone.utc).timestamp()
COOLDOWN = 600.0


def digest(*groups: tuple[int, str, int], location: str = "s3://b/logs/x/") -> storm.Digest:
    """A one-batch digest of ``(severity, message, count)`` groups."""
    collector = alerts.AlertCollector()
    for sev, msg, count in groups:
        for _ in range(count):
            collector.add(
                {
                    "severity_num": sev,
                    "severity": alerts.SEVERITY_NAMES[sev],
                    "host": "pi",
                    "app": "a",
                    "msg": msg,
                    "ts": "2026-11-26T23:00:00+00:00",
                }
            )
    return storm.Digest.from_collector(collector, location, NOW)


def invariants(d: storm.Digest) -> None:
    assert d.lines == sum(d.by_severity.values())
    assert d.lines == sum(g.count for g in d.groups.values()) + d.other_lines
    assert len(d.groups) <= storm.MAX_DIGEST_GROUPS


# --- decide / settle / due ----------------------------------------------------------------


def test_the_first_batch_posts_and_starts_the_cool_down() -> None:
    d = storm.decide(storm.DeviceState(), digest((3, "x", 2)), "b1", NOW, COOLDOWN, "t1")
    assert (d.kind, d.digest, d.outgoing.lines) == (storm.POST, False, 2)
    assert d.state.cooldown_until == NOW + COOLDOWN and d.state.pending is None
    assert d.state.inflight.token == "t1" and d.state.applied == ("b1",)
    assert d.state.version == 1


def test_in_the_cool_down_a_batch_is_added_to_pending() -> None:
    first = storm.decide(storm.DeviceState(), digest((3, "x", 1)), "b1", NOW, COOLDOWN, "t1")
    sent = storm.settle(first.state, "t1", sent=True)
    second = storm.decide(sent, digest((3, "x", 4)), "b2", NOW + 10, COOLDOWN, "t2")
    assert second.kind == storm.PENDING and second.state.pending.lines == 4
    third = storm.decide(second.state, digest((2, "y", 1)), "b3", NOW + 20, COOLDOWN, "t3")
    assert third.state.pending.lines == 5 and third.state.pending.by_severity == {3: 4, 2: 1}
    assert third.state.applied == ("b1", "b2", "b3")


def test_after_the_cool_down_the_next_batch_carries_the_pending_lines() -> None:
    s = storm.settle(
        storm.decide(storm.DeviceState(), digest((3, "x", 1)), "b1", NOW, COOLDOWN, "t").state,
        "t",
        sent=True,
    )
    s = storm.decide(s, digest((3, "x", 4)), "b2", NOW + 10, COOLDOWN, "u").state
    d = storm.decide(s, digest((3, "x", 2)), "b3", NOW + COOLDOWN, COOLDOWN, "v")
    assert (d.kind, d.digest, d.outgoing.lines) == (storm.POST, True, 6)
    assert d.state.pending is None and d.state.cooldown_until == NOW + 2 * COOLDOWN


def test_a_batch_already_applied_is_a_duplicate() -> None:
    s = storm.decide(storm.DeviceState(), digest((3, "x", 1)), "b1", NOW, COOLDOWN, "t").state
    assert storm.decide(s, digest((3, "x", 1)), "b1", NOW + 1, COOLDOWN, "u").kind == "duplicate"


def test_a_live_inflight_holds_the_next_batch_back_even_after_the_cool_down() -> None:
    s = storm.decide(storm.DeviceState(), digest((3, "x", 1)), "b1", NOW, 60, "t").state
    d = storm.decide(s, digest((3, "x", 1)), "b2", NOW + 61, 60, "u")
    assert d.kind == storm.PENDING


def test_an_expired_inflight_comes_back_as_requeued() -> None:
    s = storm.decide(storm.DeviceState(), digest((3, "x", 3)), "b1", NOW, COOLDOWN, "t").state
    later = NOW + storm.INFLIGHT_SECONDS + 1
    d = storm.decide(s, digest((3, "x", 1)), "b2", later, COOLDOWN, "u")
    assert d.kind == storm.PENDING and d.state.inflight is None
    assert (d.state.pending.lines, d.state.pending.requeued) == (4, 3)


def test_settle_sent_forgets_and_failed_puts_back() -> None:
    s = storm.decide(storm.DeviceState(), digest((3, "x", 3)), "b1", NOW, COOLDOWN, "t").state
    assert storm.settle(s, "t", sent=True).inflight is None
    back = storm.settle(s, "t", sent=False)
    assert back.inflight is None and (back.pending.lines, back.pending.requeued) == (3, 3)
    assert storm.settle(s, "someone else", sent=True) is None


def test_due_only_after_the_cool_down_with_lines_and_nothing_in_flight() -> None:
    s = storm.settle(
        storm.decide(storm.DeviceState(), digest((3, "x", 1)), "b1", NOW, COOLDOWN, "t").state,
        "t",
        sent=True,
    )
    assert storm.due(s, NOW + COOLDOWN, COOLDOWN, "u") is None  # nothing pending
    s = storm.decide(s, digest((3, "x", 2)), "b2", NOW + 5, COOLDOWN, "u").state
    assert storm.due(s, NOW + COOLDOWN - 1, COOLDOWN, "v") is None  # still cooling down
    d = storm.due(s, NOW + COOLDOWN, COOLDOWN, "v")
    assert d is not None and d.outgoing.lines == 2 and d.state.inflight.token == "v"


def test_fold_keeps_the_cool_down_and_claims_nothing() -> None:
    d = storm.decide(storm.DeviceState(), digest((3, "x", 2)), "b1", NOW, COOLDOWN, "t")
    f = storm.fold(d)
    assert f.kind == storm.FLEET and f.state.inflight is None
    assert f.state.cooldown_until == NOW + COOLDOWN and f.outgoing.lines == 2


@hypothesis_settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["batch", "settle-ok", "settle-fail", "due"]),
            st.integers(0, 900),
            st.integers(1, 5),
        ),
        max_size=40,
    )
)
def test_no_sequence_of_events_loses_or_doubles_a_line(events: list[tuple[str, int, int]]) -> None:
    """Whatever the order of batches, posts, failures and scheduled runs: every line is
    pending, in flight, or was in exactly one successful post."""
    s = storm.DeviceState()
    now, posted, total = NOW, 0, 0
    for n, (kind, step, lines) in enumerate(events):
        now += step
        if kind == "batch":
            d = storm.decide(s, digest((3, "x", lines)), f"b{n}", now, COOLDOWN, f"t{n}")
            total += lines
            s = d.state
        elif kind == "due":
            d = storm.due(s, now, COOLDOWN, f"t{n}")
            s = d.state if d else s
        elif s.inflight is not None:
            lines_out = s.inflight.digest.lines
            s = storm.settle(s, s.inflight.token, sent=kind == "settle-ok") or s
            posted += lines_out if kind == "settle-ok" else 0
        held = (s.pending.lines if s.pending else 0) + (
            s.inflight.digest.lines if s.inflight else 0
        )
        assert posted + held == total
        if s.pending:
            invariants(s.pending)


# --- the digest -----------------------------------------------------------------------------


def test_a_digest_keeps_the_worst_groups_and_counts_the_rest() -> None:
    many = digest(*[(3, f"err {i}", 1) for i in range(50)], (0, "emergency", 1))
    invariants(many)
    kept = many.sorted_groups()
    assert kept[0].msg == "emergency" and len(kept) == storm.MAX_DIGEST_GROUPS
    assert many.other_lines == 51 - storm.MAX_DIGEST_GROUPS


def test_a_digest_round_trips_through_its_item_form() -> None:
    d = digest((3, "x", 2), (2, "y", 1)).merge(digest((3, "x", 5), location="s3://b/other/"))
    back = storm.Digest.from_item(json.loads(json.dumps(d.to_item())))
    assert back == d
    assert back.locations == ["s3://b/logs/x/", "s3://b/other/"]


def test_the_largest_device_item_fits_dynamodb_with_room() -> None:
    """A pending digest and an inflight one, every group at its longest host, app and
    message, in 4-byte characters: under half of DynamoDB's 400 KB item limit."""
    huge = "\U0001f4a5" * 10_000
    collector = alerts.AlertCollector()
    for i in range(100):
        collector.add(
            {"severity_num": 3, "severity": "err", "host": huge, "app": huge, "msg": huge + str(i)}
        )
    big = storm.Digest.from_collector(collector, "s3://" + "b" * 63 + "/logs/x/", NOW)
    s = storm.DeviceState(
        9, NOW, big, storm.Inflight("t" * 32, NOW, big), tuple("b" * 128 for _ in range(32))
    )
    item = {name: state.encode(value) for name, value in s.fields().items() if value is not None}
    size = len(json.dumps(item, ensure_ascii=False).encode())  # more than DynamoDB counts
    assert size < 200_000


def test_stored_text_is_bounded_and_valid_utf8() -> None:
    d = digest((3, "\ud800 lone surrogate " + "x" * 9000, 1))
    (g,) = d.groups.values()
    assert len(g.msg) == storm.DIGEST_MESSAGE_CHARS
    g.msg.encode("utf-8")  # a lone surrogate would make DynamoDB refuse the write


def test_group_keys_are_hashes_not_log_text() -> None:
    d = digest((3, "<!channel> #n0 :v0 pk", 1))
    (key,) = d.groups
    assert len(key) == 20 and all(c in "0123456789abcdef" for c in key)


@pytest.mark.parametrize("bad", ["", "pi 1", "../x", "a" * 129, "x#y", None])
def test_device_keys_take_only_device_ids(bad: Any) -> None:
    with pytest.raises(ValueError):
        state.device_key(bad)


def test_a_valid_device_id_is_its_key() -> None:
    assert state.device_key("pi-0042.lan_1") == "dev#pi-0042.lan_1"


# --- the fleet gate and episodes ----------------------------------------------------------


def test_the_gate_slides() -> None:
    assert storm.gate_open([None, None], NOW) == [0, 1]
    assert storm.gate_open([NOW - 59, NOW - 61], NOW) == [1]
    assert storm.gate_open([NOW - 1, NOW - 2], NOW) == []


def test_an_episode_takes_devices_for_a_minute_and_is_posted_after_its_grace() -> None:
    assert storm.episode_open(NOW, NOW + 59.9) and not storm.episode_open(NOW, NOW + 60)
    assert not storm.episode_due(NOW, NOW + 60 + storm.FLEET_GRACE - 0.1)
    assert storm.episode_due(NOW, NOW + 60 + storm.FLEET_GRACE)
    assert [storm.shard_of(n) for n in (1, 200, 201, 400, 401)] == [0, 0, 1, 1, 2]


# --- messages -------------------------------------------------------------------------------


def long_id(n: int) -> str:
    return f"{n:04d}-" + "x" * 123  # 128 characters: the longest id request.ID_RE takes


def test_a_full_fleet_shard_names_every_device_within_slack_limits() -> None:
    devices = [long_id(n) for n in range(storm.FLEET_SHARD_SIZE)]
    fleet = [
        storm.Entry(d, 99_999, {0: 1, 3: 99_998}, None, "s3://b/logs/dt=x/device=d/")
        for d in devices
    ]
    payload = alerts.build_fleet_message(fleet, title="Fleet", context="c", threshold_name="err")
    assert slack_problems(payload) == [] and alerts.check_message(payload) == []
    assert [d for d, _ in entries(payload)] == devices


def test_a_list_longer_than_slack_allows_says_how_many_it_left_out() -> None:
    fleet = [storm.Entry(long_id(n), 1, {3: 1}) for n in range(2000)]
    payload = alerts.build_fleet_message(fleet, title="Fleet", context="c", threshold_name="err")
    assert slack_problems(payload) == []
    shown = len(entries(payload))
    tail = payload["blocks"][-1]["elements"][0]["text"]
    assert 200 < shown < 2000 and tail.startswith(f"…and {2000 - shown} more devices")


def test_the_one_hundred_device_test_fits_one_message() -> None:
    fleet = [storm.Entry(f"pi-{n:04d}", 1 + n % 3, {3: 1 + n % 3}) for n in range(98)]
    payload = alerts.build_fleet_message(fleet, title="Fleet", context="c", threshold_name="err")
    assert len(entries(payload)) == 98


def test_durations_read_at_a_glance() -> None:
    got = [alerts.duration_text(s) for s in (45, 119, 2400, 7200, 7260, 200_000)]
    assert got == ["45 s", "119 s", "40 min", "2 h", "2 h 1 min", "2 d 7 h"]


# --- settings -------------------------------------------------------------------------------

BASE = {"BUCKET_NAME": "b", "REQUIRE_IDENTITY": "false"}


def test_defaults() -> None:
    policy = settings.load_settings(BASE).policy
    assert policy == settings.AlertPolicy("", 600, 1800, 2)
    assert settings.load_policy({"STATE_TABLE": "t-1"}).state_table == "t-1"


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("SILENT_AFTER", "599", "below the minimum 600 seconds (two 300 s windows"),
        ("SILENT_AFTER", "300", "would look silent between two batches"),
        ("SILENT_AFTER", "30m", "not a whole number of seconds"),
        ("ALERT_COOLDOWN", "59", "below the minimum 60 seconds"),
        ("ALERT_COOLDOWN", "86401", "above the maximum 86400 seconds"),
        ("FLEET_THRESHOLD", "0", "below the minimum 1 devices"),
        ("STATE_TABLE", "no spaces!", "not a DynamoDB table name"),
    ],
)
def test_a_bad_setting_is_refused_by_name_and_value(name: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings.load_settings({**BASE, name: value})
    assert caught.value.field == name
    assert f"{name}={value!r}" in caught.value.message and says in caught.value.message


def test_the_scheduled_function_needs_its_table() -> None:
    with pytest.raises(ConfigError, match="STATE_TABLE is not set"):
        settings.load_scheduled_settings({})
    got = settings.load_scheduled_settings({"STATE_TABLE": "t-1", "SILENT_AFTER": "600"})
    assert (got.policy.silent_after, got.alert_min_severity_name) == (600, "err")
