"""Every alerting line is counted in exactly one message: with invocations of one device
running at once, with Slack failing, with a poster that dies, and with DynamoDB down
(then each batch is alerted on its own, as without storm control, and the log says so)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import alerts
import delivery
import parsing
import pytest
import state
from support.alert_world import World, err_line
from support.alerting import AtomicRequests, kind_of, tally

COOLDOWN = 600


def collector_of(lines: list[str]) -> alerts.AlertCollector:
    collector = alerts.AlertCollector()
    for line in lines:
        record = parsing.parse_line(line, datetime(2026, 11, 26, tzinfo=timezone.utc))
        if parsing.is_alerting(record, 3):
            collector.add(record)
    return collector


def flush(world: World) -> None:
    """Two cool-downs of scheduled runs: whatever is pending goes out."""
    for _ in range(2 * COOLDOWN // 300 + 1):
        world.clock.advance(300)
        world.tick()


def test_concurrent_invocations_for_one_device_count_every_line_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight threads ship 15 batches each for one device while a ninth moves the clock and
    runs the scheduled function; Slack refuses the first post (every attempt of it)."""
    lost = Counter[str]()
    write_policy = state.StateStore.write_policy

    def counting(self: Any, *args: Any) -> bool:
        won = write_policy(self, *args)
        lost["conditions"] += not won
        return won

    monkeypatch.setattr(state.StateStore, "write_policy", counting)
    device = "pi-0200"
    world.device(device)
    world.slack.script = [(500, {}, b"rollup_error")] * 4
    # The wall clock is the fake one (the ninth thread moves it by minutes at a time);
    # durations and budgets run on real time, as in a Lambda, where no invocation sees
    # two minutes pass in the middle of one DynamoDB step.
    ingest = world.ingest_deps()
    ingest.clock = time.monotonic
    sent = Counter[str]()
    lock = threading.Lock()
    errors: list[BaseException] = []
    done = threading.Event()

    def ship(worker: int) -> None:
        try:
            for n in range(15):
                k = 1 + (worker + n) % 4
                lines = [err_line(world.clock(), f"worker {worker} failed") for _ in range(k)]
                status, body = world.send(
                    device, lines, batch_id=f"{world.table}.w{worker}.{n}", deps=ingest
                )
                assert status == 200 and body["alerts"] == k, body
                with lock:
                    sent[device] += k
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def scheduler() -> None:
        try:
            deps = world.schedule_deps()
            deps.clock = time.monotonic
            while not done.is_set():
                world.clock.advance(30)
                world.tick(deps)
                time.sleep(0.02)  # real time: let the workers interleave with the runs
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    workers = [threading.Thread(target=ship, args=(w,)) for w in range(8)]
    ticker = threading.Thread(target=scheduler)
    for thread in (*workers, ticker):
        thread.start()
    for thread in workers:
        thread.join(120)
    done.set()
    ticker.join(120)
    assert errors == []
    flush(world)
    assert sent[device] == 300  # 1 to 4 lines a batch, 2.5 on average
    assert tally(world.slack.payloads) == sent  # none twice, none lost
    assert len(world.slack.refused) == 4  # the refused post's lines came back, and went out
    item = world.item(f"dev#{device}")
    assert "pend" not in item and "infl" not in item
    # Not vacuous: writers did meet each other's writes and recomputed.
    assert lost["conditions"] > 10


def stale_read_race(world: World) -> tuple[Counter[str], int]:
    """A and B of one device, in its cool-down: A reads the item, B commits, A commits what
    it computed from its stale read. Returns what reached Slack and what was sent."""
    device = "pi-0201"
    world.send(device, [err_line(world.clock(), "first")])  # posted; cool-down starts
    stale = world.item(f"dev#{device}")  # A's read (what its record_seen returned)
    world.clock.advance(10)
    world.send(device, [err_line(world.clock(), "from B")] * 3)  # B: 3 lines pending
    store = state.StateStore(world.dynamodb, world.table)
    notifier = delivery.Notifier(
        store,
        world.schedule_policy(),
        post=lambda p: alerts.SendResult("sent"),
        threshold_name="err",
    )
    outcome = notifier.batch(
        device,
        "batch-of-A",
        collector_of([err_line(world.clock(), "from A")] * 2),
        "s3://b/logs/dt=2026-11-26/device=pi-0201/",
        world.clock(),
        stale,
        lambda: {},
    )
    assert outcome.decision == "pending"
    flush(world)
    return tally(world.slack.payloads), 1 + 3 + 2


def test_a_writer_that_read_before_another_wrote_recomputes(world: World) -> None:
    counted, sent = stale_read_race(world)
    assert counted == Counter({"pi-0201": sent})


def test_the_race_test_sees_a_blind_write(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The negative control: without the version condition, A's write replaces B's
    pending lines, and the tally sees them lost."""
    original = state.StateStore._policy_update

    def blind(self: Any, device: str, expected: int, fields: Any) -> Any:
        expression, expr, condition = original(self, device, expected, fields)
        return expression, expr, f"({condition}) OR attribute_exists({expr.n('pk')})"

    monkeypatch.setattr(state.StateStore, "_policy_update", blind)
    counted, sent = stale_read_race(world)
    assert counted["pi-0201"] == sent - 3


def test_a_failed_post_puts_its_lines_back_into_the_next_digest(world: World) -> None:
    world.slack.script = [(500, {}, b"rollup_error")] * 4
    status, body = world.send("pi-0202", [err_line(world.clock(), "disk failing")] * 2)
    assert (status, body["alert_status"]) == (200, "failed")  # the archive stands
    world.clock.advance(30)
    world.send("pi-0202", [err_line(world.clock(), "disk failing")])
    flush(world)
    (digest,) = world.slack.payloads
    assert digest["text"] == "Digest: 3 err+ lines from pi-0202"
    context = digest["blocks"][1]["elements"][0]["text"]
    assert "2 lines from a post that did not go through" in context


def test_a_poster_that_dies_leaves_its_lines_to_the_next_digest(world: World) -> None:
    """The function is killed between its commit and its post (a timeout, an OOM): the
    claim's deadline passes and the scheduled run takes the lines back."""

    class Killed(BaseException):
        pass

    def killed(payload: dict[str, Any]) -> alerts.SendResult:
        raise Killed()

    store = state.StateStore(world.dynamodb, world.table)
    before = store.record_seen("pi-0203", "b-dies", 5, 4, world.clock())
    notifier = delivery.Notifier(store, world.schedule_policy(), post=killed, threshold_name="err")
    with pytest.raises(Killed):
        notifier.batch(
            "pi-0203",
            "b-dies",
            collector_of([err_line(world.clock(), "oom")] * 4),
            "s3://b/logs/dt=2026-11-26/device=pi-0203/",
            world.clock(),
            before,
            lambda: {"text": "never built", "blocks": []},
        )
    assert "infl" in world.item("dev#pi-0203")
    flush(world)
    (digest,) = world.slack.payloads
    assert digest["text"] == "Digest: 4 err+ lines from pi-0203"
    assert "infl" not in world.item("dev#pi-0203")


def test_a_429_waits_retry_after_and_counts_once(world: World) -> None:
    world.slack.script = [(429, {"Retry-After": "2"}, b"rate_limited")]
    world.send("pi-0204", [err_line(world.clock(), "x")])
    assert [kind_of(p) for p in world.slack.payloads] == ["alert"]
    assert 2.0 in world.clock.sleeps
    flush(world)
    assert tally(world.slack.payloads) == Counter({"pi-0204": 1})


# --- DynamoDB down ------------------------------------------------------------------------


def closed_port_dynamodb(port: int) -> Any:
    """A DynamoDB client aimed at a loopback port where nothing listens."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "dynamodb",
        region_name="eu-west-1",
        endpoint_url=f"http://127.0.0.1:{port}",
        config=Config(connect_timeout=0.5, read_timeout=0.5, retries={"max_attempts": 1}),
    )


@pytest.fixture
def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("how", ["closed-port", "missing-table"])
def test_dynamodb_down_archives_and_alerts_each_batch_as_before(
    world: World, log_lines: Any, closed_port: int, how: str
) -> None:
    deps = world.ingest_deps()
    if how == "closed-port":
        deps = world.ingest_deps(closed_port_dynamodb(closed_port))
        reason = "EndpointConnectionError"
    else:
        world.env["STATE_TABLE"] = "no-such-table"
        reason = "ResourceNotFoundException"
    for n in range(3):
        world.clock.advance(10)
        status, body = world.send("pi-0205", [err_line(world.clock(), f"e{n}")], deps=deps)
        assert (status, body["alert_status"]) == (200, "sent")
        world.aws.s3.head_object(Bucket="omprog-alert-tests", Key=body["key"])
    assert [p["text"] for p in world.slack.payloads] == ["1 err+ line from pi-0205"] * 3
    batches = [line for line in log_lines() if line["event"] == "batch"]
    assert [(b["alert_mode"], b["state_error"]) for b in batches] == [("degraded", reason)] * 3
    assert batches[-1]["counters"]["state_errors"] == 3


def test_dynamodb_failing_after_the_seen_update_degrades_that_batch(
    world: World, log_lines: Any, closed_port: int
) -> None:
    """The first request (record_seen) works, every later one meets a closed port."""

    class FailingAfterFirst:
        def __init__(self) -> None:
            self.calls = 0
            self.down = closed_port_dynamodb(closed_port)

        def __getattr__(self, name: str) -> Any:
            self.calls += 1
            return getattr(world.dynamodb if self.calls == 1 else self.down, name)

    world.send("pi-0206", ["<14>quiet"])  # the device's item exists, of today
    deps = world.ingest_deps(FailingAfterFirst())
    status, body = world.send("pi-0206", [err_line(world.clock(), "x")], deps=deps)
    assert (status, body["alert_status"]) == (200, "sent")
    line = [b for b in log_lines() if b["event"] == "batch"][-1]
    assert (line["alert_mode"], line["state_step"]) == ("degraded", "policy")
    assert world.item("dev#pi-0206")["alert_lines_today"] == 1


def test_the_scheduled_run_with_dynamodb_down_logs_and_returns(
    world: World, closed_port: int
) -> None:
    log = world.tick(world.schedule_deps(closed_port_dynamodb(closed_port)))
    assert (log["error"], log["state_error"]) == ("state_unavailable", "EndpointConnectionError")
    assert world.slack.payloads == []


def test_an_atomic_wrapper_is_what_makes_moto_safe_here(world: World) -> None:
    """Why AtomicRequests: the wrapper passes every call through, one at a time."""
    wrapped = AtomicRequests(world.aws.dynamodb)
    assert wrapped.describe_table(TableName=world.table)["Table"]["TableName"] == world.table
    assert wrapped.calls["describe_table"] == 1
