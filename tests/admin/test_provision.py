"""`provision`, `--rotate`, `deprovision` and `devices` against moto's Cognito (server mode).

moto quirks, worked around on purpose: its SRP accepts any password, so every
"this password works / no longer works" check logs in with
USER_PASSWORD_AUTH, which moto does check.
"""

from __future__ import annotations

import configparser
import json
import os
import stat
import string
from pathlib import Path
from typing import Any

import boto3
import pytest
from support.deployment import POLICY, REGION, make_deployment

from omprog_forwarder import cli, config
from omprog_forwarder.admin.provision import check_device_id, new_password
from omprog_forwarder.errors import AuthError, UsageError
from omprog_forwarder.ship.auth import CognitoAuth


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def provision_args(dep: Any, device: str, out: Path, *extra: str) -> list[str]:
    return ["provision", "--stack", dep.stack, f"--device-id={device}", "--out", str(out), *extra]


def idp() -> Any:
    return boto3.client("cognito-idp", region_name=REGION)


def login_with(cfg: config.Config, tmp_path: Path) -> None:
    """A real password check (USER_PASSWORD_AUTH): moto's SRP accepts any password."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    auth = CognitoAuth(
        cfg, str(tmp_path / "c.json"), str(tmp_path / "c.lock"), login_flow="password"
    )
    auth.login()


# ---------------------------------------------------------------- provision


def test_provision_from_a_stack_writes_a_private_config_the_device_can_log_in_with(
    deployment, tmp_path, capsys
):
    dep, client_secret = deployment
    out = tmp_path / "forwarder.conf"
    code, stdout, stderr = run_cli(provision_args(dep, "pi-0001", out), capsys)
    assert code == 0, stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    cfg = config.load(str(out), environ={})
    assert (cfg.username, cfg.region, cfg.user_pool_id) == ("pi-0001", REGION, dep.user_pool_id)
    assert (cfg.client_id, cfg.identity_pool_id) == (dep.client_id, dep.identity_pool_id)
    assert cfg.endpoint_url == dep.endpoint_url and cfg.client_secret == client_secret
    user = idp().admin_get_user(UserPoolId=dep.user_pool_id, Username="pi-0001")
    assert user["UserStatus"] == "CONFIRMED" and user["Enabled"]
    login_with(cfg, tmp_path)
    assert cfg.password not in stdout + stderr and client_secret not in stdout + stderr
    assert str(out) in stderr and "omprog-forwarder check" in stderr


def test_provision_to_stdout_prints_the_config_and_nothing_else(deployment, tmp_path, capsys):
    dep, _ = deployment
    code, stdout, stderr = run_cli(
        ["provision", "--stack", dep.stack, "--device-id", "pi-0002", "--out", "-"], capsys
    )
    assert code == 0, stderr
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(stdout)
    assert parser["forwarder"]["username"] == "pi-0002"
    assert parser["forwarder"]["password"] not in stderr


def test_provision_with_explicit_ids_instead_of_a_stack(deployment, tmp_path, capsys):
    dep, _ = deployment
    out = tmp_path / "f.conf"
    argv = [
        "provision",
        "--user-pool-id",
        dep.user_pool_id,
        "--client-id",
        dep.client_id,
        "--identity-pool-id",
        dep.identity_pool_id,
        "--endpoint-url",
        "https://example.invalid/prod/logs",
        "--device-id",
        "pi-0003",
        "--out",
        str(out),
    ]
    code, _, stderr = run_cli(argv, capsys)
    assert code == 0, stderr
    assert config.load(str(out), environ={}).endpoint_url == "https://example.invalid/prod/logs"


def test_the_password_meets_the_pools_policy_and_is_random() -> None:
    passwords = {new_password(POLICY) for _ in range(50)}
    assert len(passwords) == 50
    for pw in passwords:
        assert len(pw) >= max(32, POLICY["MinimumLength"])
        assert any(c in string.ascii_uppercase for c in pw)
        assert any(c in string.ascii_lowercase for c in pw)
        assert any(c in string.digits for c in pw)
        assert any(c in "!%*+-.=?@^_~" for c in pw)
        assert not set(pw) & set("\"'\\$#; ")  # nothing an INI or .env would need quoted
    assert len(new_password({"MinimumLength": 99})) == 99


@pytest.mark.parametrize(
    "device, reason",
    [
        ("../x", "bad device id"),
        ("a/b", "bad device id"),
        ("", "bad device id"),
        ("-lead", "bad device id"),
        ("x" * 129, "bad device id"),
        ("pi 01", "bad device id"),
        ("pi\u00e9", "bad device id"),
        ("Pi-01", "use lower case ('pi-01')"),
    ],
    ids=["dotdot", "slash", "empty", "dash-first", "too-long", "space", "non-ascii", "upper"],
)
def test_a_device_id_the_lambda_would_refuse_is_refused_first(
    device, reason, deployment, tmp_path, capsys
):
    dep, _ = deployment
    code, _, stderr = run_cli(provision_args(dep, device, tmp_path / "f.conf"), capsys)
    assert code == 2 and reason in stderr
    assert idp().list_users(UserPoolId=dep.user_pool_id)["Users"] == []
    assert not (tmp_path / "f.conf").exists()


def test_check_device_id_accepts_the_how_tos_serial_ids() -> None:
    assert check_device_id("1a2b3c4d") == "1a2b3c4d"
    with pytest.raises(UsageError):
        check_device_id("1A2B3C4D")


def test_an_existing_device_is_refused_without_rotate(deployment, tmp_path, capsys):
    dep, _ = deployment
    assert run_cli(provision_args(dep, "pi-0001", tmp_path / "a.conf"), capsys)[0] == 0
    code, _, stderr = run_cli(provision_args(dep, "pi-0001", tmp_path / "b.conf"), capsys)
    assert code == 2 and "already provisioned" in stderr and "--rotate" in stderr
    assert not (tmp_path / "b.conf").exists()


def test_an_existing_out_file_is_kept_and_no_user_created(deployment, tmp_path, capsys):
    dep, _ = deployment
    out = tmp_path / "f.conf"
    out.write_text("keep me")
    code, _, stderr = run_cli(provision_args(dep, "pi-0005", out), capsys)
    assert code == 2 and "exists" in stderr and "--force" in stderr
    assert out.read_text() == "keep me"
    assert idp().list_users(UserPoolId=dep.user_pool_id)["Users"] == []
    assert run_cli(provision_args(dep, "pi-0005", out, "--force"), capsys)[0] == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600


def test_rotate_gives_a_new_password_and_the_old_one_stops_working(deployment, tmp_path, capsys):
    dep, _ = deployment
    first = tmp_path / "first.conf"
    assert run_cli(provision_args(dep, "pi-0006", first), capsys)[0] == 0
    old = config.load(str(first), environ={})
    second = tmp_path / "second.conf"
    code, _, stderr = run_cli(provision_args(dep, "pi-0006", second, "--rotate"), capsys)
    assert code == 0, stderr
    new = config.load(str(second), environ={})
    assert new.password != old.password
    assert "signed out" in stderr and "up to an hour" in stderr
    login_with(new, tmp_path / "new")
    with pytest.raises(AuthError, match="NotAuthorized"):
        login_with(old, tmp_path / "old")


def test_deprovision_disables_the_device_and_says_issued_credentials_live_on(
    deployment, tmp_path, capsys
):
    dep, _ = deployment
    out = tmp_path / "f.conf"
    assert run_cli(provision_args(dep, "pi-0007", out), capsys)[0] == 0
    cfg = config.load(str(out), environ={})
    code, _, stderr = run_cli(
        ["deprovision", "--stack", dep.stack, "--device-id", "pi-0007"], capsys
    )
    assert code == 0, stderr
    assert "disabled" in stderr and "stay valid until they expire (up to an hour)" in stderr
    assert not idp().admin_get_user(UserPoolId=dep.user_pool_id, Username="pi-0007")["Enabled"]
    with pytest.raises(AuthError, match="disabled"):
        login_with(cfg, tmp_path)
    # Provisioning it again with --rotate enables it, with a new password.
    code, _, stderr = run_cli(provision_args(dep, "pi-0007", out, "--rotate"), capsys)
    assert code == 0 and "enabled it again" in stderr
    login_with(config.load(str(out), environ={}), tmp_path / "again")


def test_deprovision_of_an_unknown_device_is_an_error(deployment, capsys):
    dep, _ = deployment
    code, _, stderr = run_cli(["deprovision", "--stack", dep.stack, "--device-id", "nope"], capsys)
    assert code == 1 and "no device 'nope'" in stderr


def test_devices_lists_every_device_enabled_or_not(deployment, tmp_path, capsys):
    dep, _ = deployment
    for name in ("pi-b", "pi-a", "pi-c"):
        assert run_cli(provision_args(dep, name, tmp_path / f"{name}.conf"), capsys)[0] == 0
    assert run_cli(["deprovision", "--stack", dep.stack, "--device-id", "pi-b"], capsys)[0] == 0
    code, stdout, _ = run_cli(["devices", "--stack", dep.stack, "--json"], capsys)
    assert code == 0
    listed = json.loads(stdout)
    assert [(d["device_id"], d["enabled"]) for d in listed] == [
        ("pi-a", True),
        ("pi-b", False),
        ("pi-c", True),
    ]
    assert all(d["created"][:4].isdigit() and d["status"] == "CONFIRMED" for d in listed)
    code, text, _ = run_cli(["devices", "--stack", dep.stack], capsys)
    assert code == 0 and "pi-b" in text and "disabled" in text


def test_devices_lists_many_devices_across_pages(moto, operator_env, capsys):
    dep, _ = make_deployment(moto)
    pool = idp()
    for n in range(75):
        pool.admin_create_user(UserPoolId=dep.user_pool_id, Username=f"pi-{n:04d}")
    code, stdout, _ = run_cli(["devices", "--stack", dep.stack, "--json"], capsys)
    assert code == 0 and len(json.loads(stdout)) == 75


# ---------------------------------------------------------------- bad deployments


def test_an_unknown_stack_is_named(operator_env, tmp_path, capsys):
    code, _, stderr = run_cli(
        ["provision", "--stack", "no-such-stack", "--device-id", "pi-1", "--out", "-"], capsys
    )
    assert code == 1 and "no CloudFormation stack 'no-such-stack'" in stderr


def test_a_deployment_must_be_named(operator_env, capsys):
    code, _, stderr = run_cli(["devices"], capsys)
    assert code == 2 and "--stack NAME" in stderr


def test_explicit_ids_must_be_complete_for_a_device_config(deployment, capsys):
    dep, _ = deployment
    code, _, stderr = run_cli(
        ["provision", "--user-pool-id", dep.user_pool_id, "--device-id", "pi-1", "--out", "-"],
        capsys,
    )
    assert code == 2 and "--client-id" in stderr and "--identity-pool-id" in stderr


def test_an_unknown_user_pool_is_named(operator_env, capsys):
    code, _, stderr = run_cli(["devices", "--user-pool-id", f"{REGION}_nosuchpool"], capsys)
    assert code == 1 and "list_users" in stderr


def test_no_operator_credentials_says_what_to_do(moto, monkeypatch, tmp_path, capsys):
    from support.moto_cognito import isolate_aws_env

    isolate_aws_env(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint)
    code, _, stderr = run_cli(
        ["devices", "--user-pool-id", f"{REGION}_x", "--region", REGION], capsys
    )
    assert code == 1 and "no AWS credentials for the operator" in stderr
