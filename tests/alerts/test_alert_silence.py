"""Silent devices: the scheduled function reports a device that sent nothing for SILENT_AFTER
once per silence, and "back" once when it returns; deprovisioned devices never."""

from __future__ import annotations

from typing import Any

from support.alert_world import World, info_line
from support.alerting import kind_of, named_devices

RUN = 300


def run_for(world: World, seconds: int, *, sending: tuple[str, ...] = ()) -> None:
    """``seconds`` of time: the scheduled function every 5 minutes, and every device in
    ``sending`` shipping its (quiet) 5-minute batch just before each run."""
    for _ in range(seconds // RUN):
        world.clock.advance(RUN)
        for device in sending:
            world.send(device, [info_line(world.clock())])
        world.tick()


def texts(world: World) -> list[str]:
    return [p["text"] for p in world.slack.payloads]


def test_forty_minutes_of_silence_is_one_silent_and_one_back_message(world: World) -> None:
    device = "pi-0100"
    world.send(device, [info_line(world.clock())])
    run_for(world, 20 * 60, sending=(device,))
    assert texts(world) == []  # a device that ships every window is never silent
    run_for(world, 40 * 60)  # the device is off
    assert texts(world) == ["pi-0100 has sent nothing for 35 min"]  # the first run past 30
    world.send(device, [info_line(world.clock())])  # back, at 40 minutes
    run_for(world, 60 * 60, sending=(device,))
    assert [kind_of(p) for p in world.slack.payloads] == ["silent", "back"]
    assert texts(world)[1] == "pi-0100 is back after 40 min"
    item = world.item("dev#pi-0100")
    assert "silent" not in item and "back_at" not in item  # ready for the next silence


def test_a_deprovisioned_device_is_never_reported(world: World, log_lines: Any) -> None:
    world.send("pi-0101", [info_line(world.clock())])
    world.device("pi-0101", enabled=False)  # what `omprog-forwarder deprovision` does
    run_for(world, 2 * 3600)
    assert texts(world) == []
    assert world.item("dev#pi-0101")["silent"]["why"] == "deprovisioned"
    runs = [line for line in log_lines() if line["event"] == "schedule"]
    assert sum(line["silent_skipped"] == ["pi-0101"] for line in runs) == 1


def test_an_enabled_device_beside_it_is_reported(world: World) -> None:
    """The control for the test above: the same timeline, the device still enabled."""
    world.send("pi-0102", [info_line(world.clock())])
    run_for(world, 2 * 3600)
    assert [kind_of(p) for p in world.slack.payloads] == ["silent"]


def test_silent_after_is_a_setting(world: World) -> None:
    world.schedule_env["SILENT_AFTER"] = "3600"
    world.send("pi-0103", [info_line(world.clock())])
    run_for(world, 60 * 60)
    assert texts(world) == []
    run_for(world, 5 * 60)
    assert texts(world) == ["pi-0103 has sent nothing for 65 min"]


def test_a_failed_silent_post_is_posted_by_the_next_run_once(world: World) -> None:
    world.send("pi-0104", [info_line(world.clock())])
    world.slack.script = [(500, {}, b"rollup_error")] * 4  # every attempt of one post
    run_for(world, 35 * 60)
    assert len(world.slack.refused) == 4 and texts(world) == []
    run_for(world, 60 * 60)
    assert texts(world) == ["pi-0104 has sent nothing for 40 min"]


def test_cognito_down_postpones_the_silent_notice(world: World) -> None:
    """Whether a device was deprovisioned is unknown: ask again next run, post nothing."""
    world.send("pi-0105", [info_line(world.clock())])
    run_for(world, 30 * 60)

    def broken() -> Any:
        raise ConnectionError("cognito is down")

    deps = world.schedule_deps()
    deps.cognito = broken
    world.clock.advance(RUN)
    log = world.tick(deps)
    assert texts(world) == [] and log["silent"] == [] and log["counters"]["cognito_errors"] == 1
    run_for(world, RUN)
    assert texts(world) == ["pi-0105 has sent nothing for 40 min"]


def test_a_network_outage_is_a_few_messages_naming_every_device(world: World) -> None:
    devices = [f"pi-{n:04d}" for n in range(300, 312)]
    for device in devices:
        world.send(device, [info_line(world.clock())])
    run_for(world, 35 * 60)
    kinds = [kind_of(p) for p in world.slack.payloads]
    assert kinds == ["silent", "silent", "silent"]  # two on their own, ten in one list
    assert world.slack.payloads[2]["text"] == "Silent: 10 devices have sent nothing for over 30 min"
    assert set().union(*(named_devices(p) for p in world.slack.payloads)) == set(devices)
    for device in devices:
        world.send(device, [info_line(world.clock())])
    run_for(world, 3600, sending=tuple(devices))
    kinds = [kind_of(p) for p in world.slack.payloads]
    assert kinds == ["silent"] * 3 + ["back"] * 3
    assert set().union(*(named_devices(p) for p in world.slack.payloads[3:])) == set(devices)


def test_overlapping_runs_post_one_notice(world: World) -> None:
    """EventBridge may deliver a schedule twice: the second run finds the device marked."""
    world.send("pi-0106", [info_line(world.clock())])
    world.clock.advance(31 * 60)
    world.tick()
    world.tick()
    assert texts(world) == ["pi-0106 has sent nothing for 31 min"]
