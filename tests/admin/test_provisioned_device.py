"""A provisioned device works: it ships through the SigV4 gateway, and `check` says so.

The config file is the one `provision` wrote; the gateway verifies SigV4 and
calls the real Lambda handler, which archives into moto's S3 (the same moto
server). devstack's IdentityBroker issues each identity its own
credentials, so the gateway knows which device signed.
"""

from __future__ import annotations

import gzip
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import alerts
import boto3
import handler
import identity
import pytest
from support.deployment import REGION, make_deployment
from support.rsyslogd import RSYSLOGD, render_project_conf

from devstack.aws import IdentityBroker
from devstack.gateway import Gateway, Reply, lambda_proxy
from omprog_forwarder import cli, config
from omprog_forwarder.ship.check import Check
from omprog_forwarder.ship.shipper import run_ship
from omprog_forwarder.spool import Spool

DEVICE = "pi-0042"


@pytest.fixture
def world(moto, operator_env, tmp_path, monkeypatch) -> Iterator[dict[str, Any]]:
    """A deployment, its archive bucket, a gateway in front of the real handler, one device."""
    identity.clear_cache()
    s3 = boto3.client("s3", region_name=REGION)
    bucket = f"omprog-archive-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    gate = {"open": True}  # False: the gateway knows no credentials (a bad signature)
    deps_env: dict[str, str] = {}
    deps = handler.Dependencies(
        s3=lambda: s3,
        cognito=lambda: boto3.client("cognito-idp", region_name=REGION),
        transport=alerts.urllib_transport,
        sleep=lambda s: None,
        clock=lambda: 0.0,
        environ=deps_env,
    )
    with (
        IdentityBroker() as broker,
        Gateway(
            lambda akid: broker.lookup(akid) if gate["open"] else None,
            on_request=lambda_proxy(lambda event, ctx: handler.handle(event, ctx, deps)),
        ) as gw,
    ):
        dep, _ = make_deployment(moto, endpoint_url=gw.url)
        deps_env.update(
            {
                "BUCKET_NAME": bucket,
                "USER_POOL_ID": dep.user_pool_id,
                "IDENTITY_POOL_ID": dep.identity_pool_id,
                "WEBHOOK_URL": "",
            }
        )
        conf = tmp_path / "forwarder.conf"
        spool = tmp_path / "spool"
        assert (
            cli.main(
                [
                    "provision",
                    "--stack",
                    dep.stack,
                    "--device-id",
                    DEVICE,
                    "--out",
                    str(conf),
                    "--spool-dir",
                    str(spool),
                ]
            )
            == 0
        )
        yield {
            "dep": dep,
            "conf": conf,
            "spool": spool,
            "gw": gw,
            "s3": s3,
            "bucket": bucket,
            "gate": gate,
        }


def test_a_provisioned_device_logs_in_and_ships_under_its_own_id(world):
    cfg = config.load(str(world["conf"]), environ={})
    spool = Spool(cfg.spool_dir).create()
    batch = spool.write_batch("20261126T231000Z-00000000000000a1", [b"hello from pi-0042"])
    assert run_ship(cfg) == 0
    assert [r.status for r in world["gw"].received] == [200]
    key = f"logs/dt=2026-11-26/device={DEVICE}/{batch.batch_id}.jsonl.gz"
    body = world["s3"].get_object(Bucket=world["bucket"], Key=key)["Body"].read()
    record = json.loads(gzip.decompress(body))
    assert record["device_id"] == DEVICE and record["raw"] == "hello from pi-0042"


# ---------------------------------------------------------------- check


@pytest.fixture
def rsyslog_files(world, tmp_path) -> tuple[Path, Path]:
    """The project's snippet, with this device's config in binary=, and a main config."""
    snippet = tmp_path / "60-omprog-forwarder.conf"
    binary = f"/opt/omprog-forwarder/bin/omprog-forwarder run --config {world['conf']}"
    snippet.write_text(
        render_project_conf(
            {
                "binary": binary,
                "queue.spoolDirectory": str(tmp_path),
                "output": str(tmp_path / "out.log"),
            }
        )
    )
    main = tmp_path / "rsyslog.conf"
    main.write_text(f'global(workDirectory="{tmp_path}")\ninclude(file="{snippet}")\n')
    return main, snippet


def run_check(world, rsyslog_files, capsys, **kwargs: Any) -> tuple[int, list[str]]:
    main, snippet = rsyslog_files
    cfg = kwargs.pop("cfg", None) or config.load(str(world["conf"]), environ={})
    check = Check(
        cfg,
        kwargs.pop("config_path", str(world["conf"])),
        rsyslog_conf=str(kwargs.pop("rsyslog_conf", main)),
        rsyslog_snippet=str(kwargs.pop("rsyslog_snippet", snippet)),
        **kwargs,
    )
    code = check.run()
    out = capsys.readouterr().out
    for secret in (cfg.password, cfg.client_secret):
        assert secret not in out
    return code, out.splitlines()


needs_rsyslogd = pytest.mark.skipif(RSYSLOGD is None, reason="rsyslogd is not installed")


@needs_rsyslogd
def test_check_passes_every_step_on_a_provisioned_device(world, rsyslog_files, capsys):
    code, lines = run_check(world, rsyslog_files, capsys)
    assert code == 0, lines
    assert [line.split()[:2] for line in lines] == [
        ["✓", step] for step in ("config", "spool", "rsyslog", "login", "credentials", "api")
    ]
    assert "accepted 0" in lines[-1]
    assert world["gw"].received[-1].status == 200
    assert world["s3"].list_objects_v2(Bucket=world["bucket"]).get("KeyCount", 0) == 0, (
        "wrote nothing"
    )


def test_check_through_the_command_line_without_rsyslogd(world, rsyslog_files, capsys, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    main, snippet = rsyslog_files
    code = cli.main(["check", "--config", str(world["conf"]), "--rsyslog-snippet", str(snippet)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "– rsyslog" in out and "apt-get install rsyslog" in out


def fails_at(lines: list[str], step: str, *words: str) -> None:
    assert lines[-1].split()[:2] == ["✗", step], lines
    assert all(w in lines[-1] for w in words), lines[-1]
    assert all(line.startswith("✓") or line.startswith("–") for line in lines[:-1]), lines


def test_check_fails_on_a_config_others_can_read(world, capsys):
    os.chmod(world["conf"], 0o644)
    code = cli.main(["check", "--config", str(world["conf"])])
    out = capsys.readouterr().out
    assert code == 1
    fails_at(out.splitlines(), "config", "mode 0644", "chmod 600")


def test_check_fails_on_a_config_its_group_can_read(world, rsyslog_files, capsys):
    """`run` accepts 0640 (only others are refused); a device's config should be 0600."""
    os.chmod(world["conf"], 0o640)
    code, lines = run_check(world, rsyslog_files, capsys)
    assert code == 1
    fails_at(lines, "config", "mode 0640", "chmod 600")


def test_check_fails_on_a_config_that_does_not_load(world, capsys, tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("[forwarder]\nwindow_seconds = soon\n")
    code = cli.main(["check", "--config", str(bad)])
    out = capsys.readouterr().out
    assert code == 1 and out.startswith("✗ config") and "window_seconds" in out


def test_check_fails_on_a_missing_shipper_key(world, rsyslog_files, capsys):
    cfg = config.load(str(world["conf"]), {"identity_pool_id": ""}, environ={})
    code, lines = run_check(world, rsyslog_files, capsys, cfg=cfg)
    assert code == 1
    fails_at(lines, "config", "identity_pool_id")


def test_check_fails_on_a_spool_it_cannot_create(world, rsyslog_files, capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = config.load(str(world["conf"]), {"spool_dir": str(blocker / "spool")}, environ={})
    code, lines = run_check(world, rsyslog_files, capsys, cfg=cfg)
    assert code == 1
    fails_at(lines, "spool", str(blocker))


@needs_rsyslogd
def test_check_fails_without_the_rsyslog_snippet(world, rsyslog_files, capsys, tmp_path):
    code, lines = run_check(
        world, rsyslog_files, capsys, rsyslog_snippet=tmp_path / "not-there.conf"
    )
    assert code == 1
    fails_at(lines, "rsyslog", "no rsyslog snippet", "rsyslog.d/60-omprog-forwarder.conf")


@needs_rsyslogd
def test_check_fails_when_the_snippet_runs_another_config(world, rsyslog_files, capsys, tmp_path):
    other = tmp_path / "other.conf"
    shutil.copy(world["conf"], other)
    os.chmod(other, 0o600)
    code, lines = run_check(world, rsyslog_files, capsys, config_path=str(other))
    assert code == 1
    fails_at(lines, "rsyslog", f"does not read {other}")


@needs_rsyslogd
def test_check_fails_when_rsyslogd_refuses_the_config(world, rsyslog_files, capsys, tmp_path):
    main, _ = rsyslog_files
    main.write_text(main.read_text() + "this is not rsyslog syntax(\n")
    code, lines = run_check(world, rsyslog_files, capsys)
    assert code == 1
    fails_at(lines, "rsyslog", "rsyslogd -N1")


def test_check_fails_at_login_for_a_deprovisioned_device(world, rsyslog_files, capsys):
    dep = world["dep"]
    assert cli.main(["deprovision", "--stack", dep.stack, "--device-id", DEVICE]) == 0
    capsys.readouterr()
    code, lines = run_check(world, rsyslog_files, capsys, which=lambda name: None)
    assert code == 1
    fails_at(lines, "login", "disabled")


def test_check_fails_at_credentials_for_another_identity_pool(world, rsyslog_files, capsys):
    """AWS answers ResourceNotFoundException, moto a 500 page: either fails this step."""
    cfg = config.load(
        str(world["conf"]),
        {"identity_pool_id": f"{REGION}:00000000-dead-beef-0000-000000000000"},
        environ={},
    )
    code, lines = run_check(world, rsyslog_files, capsys, cfg=cfg, which=lambda name: None)
    assert code == 1
    fails_at(lines, "credentials", "identity pool")


def test_check_fails_at_the_api_when_the_signature_is_refused(world, rsyslog_files, capsys):
    world["gate"]["open"] = False
    code, lines = run_check(world, rsyslog_files, capsys, which=lambda name: None)
    assert code == 1
    fails_at(lines, "api", "HTTP 403")


def test_check_fails_at_the_api_when_something_else_answers(world, rsyslog_files, capsys):
    world["gw"].enqueue(Reply(200, b"<html>captive portal</html>"))
    code, lines = run_check(world, rsyslog_files, capsys, which=lambda name: None)
    assert code == 1
    fails_at(lines, "api", "not the Lambda's", "captive portal")
