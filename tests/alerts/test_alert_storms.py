"""Storm control end to end: the ingest handler and the scheduled function on moto, Slack on
loopback, one fake clock. What is pinned is the issue's promise: faster *and* quieter,
and every alerting line counted in exactly one message.
"""

from __future__ import annotations

from collections import Counter

from support.alert_world import World, err_line, info_line
from support.alerting import entries, kind_of, named_devices, slack_problems, tally

SCHEDULE = 300


def loop_lines(n: int) -> tuple[int, int]:
    """Batch ``n`` of a crash loop: (err lines, crit lines)."""
    return 1 + n % 3, int(n % 5 == 0)


def crash_loop(world: World, device: str, *, seconds: int, every: int) -> None:
    """``device`` seals an alerting batch every ``every`` s (urgent_min_interval) for
    ``seconds``, while the scheduled function runs every 5 minutes; 1, 2 or 3 err lines a
    batch and a crit line every fifth (two groups for the digest), plus an info line."""
    start = world.clock()
    for n in range(seconds // every):
        now = start + n * every
        world.clock.now = now
        if n and (now - start) % SCHEDULE == 0:
            world.tick()
        errs, crits = loop_lines(n)
        lines = [err_line(now, "service crashed, restarting") for _ in range(errs)]
        lines += [err_line(now, "watchdog: no heartbeat", severity=2)] * crits
        status, body = world.send(device, [*lines, info_line(now)])
        assert status == 200 and body["alerts"] == len(lines)


def settle_all(world: World, minutes: int = 15) -> None:
    """Let every cool-down end, with the scheduled function running on its schedule."""
    for _ in range(minutes * 60 // SCHEDULE):
        world.clock.advance(SCHEDULE)
        world.tick()


def test_thirty_minutes_of_a_crash_loop_is_four_messages_and_counts_every_line(
    world: World,
) -> None:
    crash_loop(world, "pi-0042", seconds=30 * 60, every=10)
    settle_all(world)
    payloads = world.slack.payloads
    kinds = [kind_of(p) for p in payloads]
    sent = world.sent_alert_lines["pi-0042"]
    assert sent == 180 * 2 + 36  # 1+2+3 per three batches, plus a crit line every fifth
    assert len(payloads) <= 4, kinds
    assert kinds == ["alert", "digest", "digest", "digest"]
    assert tally(payloads) == Counter({"pi-0042": sent})  # exactly once, nothing lost
    assert world.slack.refused == []


def test_without_a_state_table_the_same_loop_is_one_message_per_batch(world: World) -> None:
    """The negative control (and the issue's complaint): what the tally above would see
    without storm control."""
    del world.env["STATE_TABLE"]
    crash_loop(world, "pi-0042", seconds=5 * 60, every=10)
    assert len(world.slack.payloads) == 30
    assert tally(world.slack.payloads) == Counter(world.sent_alert_lines)


def test_a_digest_says_what_came_in_worst_first_and_where_to_look(world: World) -> None:
    crash_loop(world, "pi-0042", seconds=11 * 60, every=10)
    digest = [p for p in world.slack.payloads if kind_of(p) == "digest"][0]
    texts = [b["text"]["text"] for b in digest["blocks"] if b["type"] == "section"]
    assert "watchdog: no heartbeat" in texts[0]  # crit before err
    assert "service crashed" in texts[1]
    context = " ".join(
        e["text"] for b in digest["blocks"] if b["type"] == "context" for e in b["elements"]
    )
    # The scheduled run at 10:00 after the first post sends batches 1-59 (10 s ... 590 s).
    errs = sum(loop_lines(n)[0] for n in range(1, 60))
    crits = sum(loop_lines(n)[1] for n in range(1, 60))
    assert digest["text"] == f"Digest: {errs + crits} err+ lines from pi-0042"
    assert "*Batches* 59" in context and f"crit {crits}, err {errs}" in context
    assert "s3://omprog-alert-tests/logs/dt=2026-11-26/device=pi-0042/" in context
    assert "*Cool-down* 10 min" in context


def test_the_first_alert_of_a_device_goes_out_at_once(world: World) -> None:
    status, body = world.send("pi-0001", [err_line(world.clock(), "disk failing")])
    assert (status, body["alert_status"]) == (200, "sent")
    (payload,) = world.slack.payloads
    assert payload["text"] == "1 err+ line from pi-0001"


def test_after_the_cool_down_the_next_alert_is_immediate_again(world: World) -> None:
    world.send("pi-0001", [err_line(world.clock(), "one")])
    world.clock.advance(601)
    status, body = world.send("pi-0001", [err_line(world.clock(), "two")])
    assert body["alert_status"] == "sent"
    assert [kind_of(p) for p in world.slack.payloads] == ["alert", "alert"]


def test_a_duplicate_batch_counts_nothing_again(world: World) -> None:
    world.send("pi-0001", [err_line(world.clock(), "first")], batch_id=f"{world.table}.b-1")
    world.clock.advance(10)
    world.send("pi-0001", [err_line(world.clock(), "second")] * 3, batch_id=f"{world.table}.b-2")
    status, body = world.send(
        "pi-0001", [err_line(world.clock(), "second")] * 3, batch_id=f"{world.table}.b-2"
    )
    assert (status, body["duplicate"], body["alert_status"]) == (200, True, "skipped_duplicate")
    settle_all(world)
    assert tally(world.slack.payloads) == Counter({"pi-0001": 4})
    assert world.item("dev#pi-0001")["alert_lines_today"] == 4


def test_fleet_one_hundred_devices_within_a_minute_are_at_most_three_messages(
    world: World,
) -> None:
    devices = [f"pi-{n:04d}" for n in range(100)]
    for device in devices:
        world.device(device)
    start = world.clock()
    for n, device in enumerate(devices):
        world.clock.now = start + n * 0.59  # 100 devices in 58.4 s
        lines = [err_line(world.clock(), "network unreachable", app="dhcpcd")] * (1 + n % 3)
        status, body = world.send(device, lines)
        assert status == 200
    world.clock.now = start + SCHEDULE
    world.tick()
    payloads = world.slack.payloads
    assert len(payloads) <= 3, [p["text"] for p in payloads]
    assert [kind_of(p) for p in payloads] == ["alert", "alert", "fleet"]
    named = set().union(*(named_devices(p) for p in payloads))
    assert named == set(devices)
    assert tally(payloads) == Counter(world.sent_alert_lines)
    fleet = payloads[-1]
    folded = sum(1 + n % 3 for n in range(2, 100))
    assert fleet["text"] == f"Fleet: 98 devices, {folded} err+ lines"
    shared = [b for b in fleet["blocks"] if b["type"] == "section"][0]["text"]["text"]
    assert "98 devices: dhcpcd: network unreachable" in shared


def test_the_next_alerting_batch_after_the_episode_posts_the_fleet_message(world: World) -> None:
    """Not only the scheduled run: any alerting batch after the episode (and its grace)."""
    for n in range(6):
        world.clock.now += 1
        world.send(f"pi-{n:04d}", [err_line(world.clock(), "brownout")])
    assert [kind_of(p) for p in world.slack.payloads] == ["alert", "alert"]
    world.clock.now += 70
    world.send("pi-0099", [err_line(world.clock(), "unrelated")])
    kinds = [kind_of(p) for p in world.slack.payloads]
    assert kinds == ["alert", "alert", "alert", "fleet"]  # its own alert, then the episode
    assert entries(world.slack.payloads[3]) == [(f"pi-{n:04d}", 1) for n in range(2, 6)]
    world.clock.advance(SCHEDULE)
    world.tick()
    assert len(world.slack.payloads) == 4  # sent once: the scheduled run finds it sent


def test_a_fleet_that_keeps_alerting_gets_digests_not_a_message_each(world: World) -> None:
    """20 devices on a flapping network, each alerting once a minute for 12 minutes: 240
    batches. Minute 0: two alerts and a fleet message; minute 10 (cool-downs over): two
    digests and a fleet message of the others' digests; at the end one run has 20 digests
    due: two on their own, 18 in one list."""
    devices = [f"pi-{n:04d}" for n in range(20)]
    start = world.clock()
    for minute in range(12):
        for n, device in enumerate(devices):
            world.clock.now = start + minute * 60 + n
            world.send(device, [err_line(world.clock(), "flapping link")])
        if minute % 5 == 4:
            world.tick()
    settle_all(world)
    payloads = world.slack.payloads
    assert [kind_of(p) for p in payloads] == [
        *["alert", "alert", "fleet"],
        *["digest", "digest", "fleet"],
        *["digest", "digest", "digests"],
    ]
    assert tally(payloads) == Counter(world.sent_alert_lines) == Counter(dict.fromkeys(devices, 12))


def test_every_message_is_within_slack_limits_and_escaped(world: World) -> None:
    """Hostile log text through every kind of message: one-batch alerts, a digest, the
    fleet message (60 groups of 5000 characters each, mentions, links, code fences)."""
    hostile = "<!channel> & <https://evil|click> ``` " + "x" * 5000
    for n in range(5):
        world.clock.now += 1
        world.send(f"pi-{n:04d}", [err_line(world.clock(), hostile + str(m)) for m in range(60)])
    world.clock.now += 1
    world.send("pi-0000", [err_line(world.clock(), hostile + str(m)) for m in range(60)])
    settle_all(world)
    kinds = [kind_of(p) for p in world.slack.payloads]
    assert kinds == ["alert", "alert", "fleet", "digest"]
    for payload in world.slack.payloads:
        assert slack_problems(payload) == []
    assert tally(world.slack.payloads) == Counter(world.sent_alert_lines)
