"""The `ship` / `replay` commands: lock, configuration, replay from dead/, the CLI."""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.ingest_helpers import json_line, make_rig, uuid_hex

from devstack.gateway import BAD_REQUEST
from omprog_forwarder import config
from omprog_forwarder.errors import ConfigError, UsageError
from omprog_forwarder.ingest import protocol
from omprog_forwarder.ship import shipper as ship
from omprog_forwarder.spool import SHIPPED_KEYS

W1, W2, W3 = "20261126T231000Z", "20261126T231500Z", "20261126T232000Z"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def hold_ship_lock(spool):
    fd = os.open(spool.state_path(ship.SHIP_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


# ---------------------------------------------------------------- lock


def test_a_second_shipper_exits_0_at_once_saying_another_is_running(
    make_cfg, gateway, spool, seal, caplog
):
    batch = seal(W1, [b"a"])
    fd = hold_ship_lock(spool)
    try:
        caplog.set_level("INFO", logger="omprog_forwarder")
        started = time.monotonic()
        assert ship.run_ship(make_cfg()) == 0
        assert time.monotonic() - started < 2
    finally:
        os.close(fd)
    assert "another shipper is running" in caplog.text
    assert gateway.received == []
    assert [b.batch_id for b in spool.ready_batches()] == [batch.batch_id]
    assert ship.run_ship(make_cfg()) == 0  # lock free again: this one ships
    assert [p["batch_id"] for p in gateway.payloads] == [batch.batch_id]


def test_empty_ready_exits_0_without_logging_in(make_cfg, gateway, spool):
    assert ship.run_ship(make_cfg()) == 0
    assert gateway.received == []
    assert not os.path.exists(spool.state_path("credentials.json"))


# ---------------------------------------------------------------- configuration


def test_missing_shipper_keys_are_named(tmp_path):
    cfg = config.load(
        None,
        {
            "spool_dir": str(tmp_path),
            "endpoint_url": "https://x.example/prod/logs",
            "region": "eu-west-1",
            "user_pool_id": "eu-west-1_abc",
            "client_id": "c",
            "username": "dev",
        },
        environ={},
    )
    with pytest.raises(ConfigError) as err:
        ship.run_ship(cfg)
    assert "identity_pool_id, password" in str(err.value)
    assert err.value.exit_code == 2


@pytest.mark.parametrize("url", ["execute-api.example/prod/logs", "ftp://x.example/", "https://"])
def test_bad_endpoint_url_is_a_config_error(make_cfg, url):
    with pytest.raises(ConfigError, match="endpoint_url"):
        ship.run_ship(make_cfg(endpoint_url=url))


# ---------------------------------------------------------------- replay


def test_replay_named_batch_moves_it_back_and_ships_it(make_cfg, gateway, spool, seal):
    a, b = seal(W1, [b"a"]), seal(W2, [b"b"])
    gateway.enqueue(BAD_REQUEST, BAD_REQUEST)
    assert ship.run_ship(make_cfg()) == 0
    assert [x.batch_id for x in spool.dead_batches()] == [a.batch_id, b.batch_id]

    # the operator fixed the cause; replay one of them, named by its file name
    assert ship.run_replay(make_cfg(), [f"{b.batch_id}+1.batch"], all_dead=False) == 0
    assert [p["batch_id"] for p in gateway.payloads] == [b.batch_id]
    assert [x.batch_id for x in spool.dead_batches()] == [a.batch_id]
    assert sorted(os.listdir(spool.dead_dir)) == [f"{a.batch_id}+1.batch", f"{a.batch_id}+1.why"]
    assert spool.read_state("counters.json")["ship_replayed_batches"] == 1


def test_replay_dead_moves_everything_back_and_ships_in_order(make_cfg, gateway, spool, seal):
    batches = [seal(w, [w.encode()]) for w in (W1, W2, W3)]
    gateway.enqueue(BAD_REQUEST, BAD_REQUEST, BAD_REQUEST)
    assert ship.run_ship(make_cfg()) == 0
    assert len(spool.dead_batches()) == 3
    assert ship.run_replay(make_cfg(), [], all_dead=True) == 0
    assert [p["batch_id"] for p in gateway.payloads] == [x.batch_id for x in batches]
    assert os.listdir(spool.dead_dir) == []


@pytest.mark.parametrize(
    "names, all_dead, message",
    [
        (
            ["20261126T231000Z-0000000000000000"],
            False,
            "not in .*dead: 20261126T231000Z-0000000000000000",
        ),
        ([], False, "name the batches"),
        (["x"], True, "not both"),
    ],
    ids=["unknown-batch", "nothing-named", "names-and-dead"],
)
def test_replay_usage_errors_move_nothing(make_cfg, gateway, spool, seal, names, all_dead, message):
    kept = seal(W1, [b"a"])
    gateway.enqueue(BAD_REQUEST)
    ship.run_ship(make_cfg())
    with pytest.raises(UsageError, match=message) as err:
        ship.run_replay(make_cfg(), names, all_dead=all_dead)
    assert err.value.exit_code == 2
    assert [x.batch_id for x in spool.dead_batches()] == [kept.batch_id]


# ---------------------------------------------------------------- the CLI, as a process


def run_cli(args, env_extra, timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMPROG_FORWARDER_")}
    env.update(env_extra)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "omprog_forwarder", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )


def test_cli_ship_with_the_howtos_env_file(device, gateway, spool, seal, tmp_path):
    """A device set up from the how-to switches by pointing at its .env."""
    batch = seal(W1, [b"from the cli"])
    env_file = tmp_path / ".env"
    env_file.write_text(
        f"AWS_REGION={device.region}\nAWS_USERPOOLID={device.user_pool_id}\n"
        f"AWS_CLIENTID={device.client_id}\nAWS_CLIENTSECRET={device.client_secret}\n"
        f"AWS_IDPOOLID={device.identity_pool_id}\nAWS_USERNAME={device.username}\n"
        f"AWS_PASSWORD='{device.password}'\nAWS_ENDPOINTURL={gateway.url}\n"
    )
    os.chmod(env_file, 0o600)
    out = run_cli(
        ["ship", "--env-file", str(env_file), "--spool-dir", spool.root], device.environ()
    )
    assert out.returncode == 0, out.stderr
    assert [p["batch_id"] for p in gateway.payloads] == [batch.batch_id]
    for secret in (device.password, device.client_secret):
        assert secret not in out.stderr + out.stdout


def test_cli_refuses_a_world_readable_env_file_with_a_password(device, spool, tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(f"AWS_PASSWORD={device.password}\n")
    os.chmod(env_file, 0o644)
    out = run_cli(
        ["ship", "--env-file", str(env_file), "--spool-dir", spool.root], device.environ()
    )
    assert out.returncode == 2
    assert str(env_file) in out.stderr and "0644" in out.stderr
    assert device.password not in out.stderr


def test_cli_second_shipper_exits_0_while_the_lock_is_held(device, gateway, spool, seal, tmp_path):
    seal(W1, [b"a"])
    ini = tmp_path / "forwarder.ini"
    ini.write_text(
        "[forwarder]\n"
        + "".join(f"{k} = {v}\n" for k, v in device.config_values().items())
        + f"endpoint_url = {gateway.url}\nspool_dir = {spool.root}\n"
    )
    os.chmod(ini, 0o600)
    fd = hold_ship_lock(spool)
    try:
        out = run_cli(["ship", "--config", str(ini)], device.environ())
    finally:
        os.close(fd)
    assert out.returncode == 0, out.stderr
    assert "another shipper is running" in out.stderr
    assert gateway.received == [] and len(spool.ready_batches()) == 1


def test_a_batch_sealed_after_the_last_listing_is_shipped_by_the_same_run(
    make_cfg, gateway, spool, seal, monkeypatch
):
    """A batch that lands between the shipper's last look at ready/ and the release
    of its lock (its own shipper found the lock held and left) is still sent: the
    run looks again once the lock is free."""
    first = seal(W1, [b"a"])
    late = []
    original = ship.Shipper.run

    def run_then_seal(self):
        code = original(self)
        if not late:
            late.append(seal(W1, [b"sealed late"]))
        return code

    monkeypatch.setattr(ship.Shipper, "run", run_then_seal)
    assert ship.run_ship(make_cfg()) == 0
    assert [p["batch_id"] for p in gateway.payloads] == [first.batch_id, late[0].batch_id]
    assert spool.ready_batches() == []


def test_a_shipped_batchs_lines_stay_known_to_the_next_ingest(make_cfg, gateway, spool, seal):
    """rsyslog 8.2302 can hand a line again after its batch was shipped and deleted
    (docs/rsyslog.md): the shipper notes the lines' keys first, and a new ingest
    instance loads them, so the copy is dropped."""
    lines = [json_line(f"n{n}", uuid=uuid_hex(0xABC000 + n)) for n in range(3)]
    seal(W1, lines)
    assert ship.run_ship(make_cfg()) == 0
    assert spool.ready_batches() == []
    keys = os.path.join(spool.state_dir, SHIPPED_KEYS)
    assert os.path.getsize(keys) == 3 * 8
    assert stat.S_IMODE(os.stat(keys).st_mode) == 0o600
    rig = make_rig(Path(spool.root), spool=spool)
    assert rig.batcher.on_message(lines[1], 0) == protocol.OK
    assert rig.batcher.counters["duplicate_lines"] == 1
