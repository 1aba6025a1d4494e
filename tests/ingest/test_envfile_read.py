"""The how-to's .env as a configuration layer (`--env-file`)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from omprog_forwarder import config
from omprog_forwarder.envfile import parse_env_text, read_env_file
from omprog_forwarder.errors import ConfigError

HOWTO_ENV = """\
# written by the how-to's setup steps
AWS_REGION=ap-northeast-1
AWS_USERPOOLID=ap-northeast-1_AbCdEf123
AWS_CLIENTID="4example1clientid2345678"
AWS_CLIENTSECRET='s3cr3t=with#hash and spaces'
AWS_IDPOOLID=ap-northeast-1:11111111-2222-3333-4444-555555555555
export AWS_USERNAME=1a2b3c4d
AWS_PASSWORD="b8:27:eb:00:11:22 \\"quoted\\""
AWS_ENDPOINTURL=https://abc123.execute-api.ap-northeast-1.amazonaws.com/prod/logs  # stage URL
SLACK_WEBHOOK=https://hooks.example/ignored
"""


def write(tmp_path, text: str, mode: int = 0o600) -> str:
    path = tmp_path / ".env"
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


def test_maps_every_howto_name_to_its_config_key(tmp_path):
    values = read_env_file(write(tmp_path, HOWTO_ENV))
    assert values == {
        "region": "ap-northeast-1",
        "user_pool_id": "ap-northeast-1_AbCdEf123",
        "client_id": "4example1clientid2345678",
        "client_secret": "s3cr3t=with#hash and spaces",
        "identity_pool_id": "ap-northeast-1:11111111-2222-3333-4444-555555555555",
        "username": "1a2b3c4d",
        "password": 'b8:27:eb:00:11:22 "quoted"',
        "endpoint_url": "https://abc123.execute-api.ap-northeast-1.amazonaws.com/prod/logs",
    }


@pytest.mark.parametrize(
    "line, expected",
    [
        ("A=plain", "plain"),
        ("A = spaced ", "spaced"),
        ("export A=exported", "exported"),
        ("A='single # kept'", "single # kept"),
        ('A="double \\\\ \\" \\n"', 'double \\ " \n'),
        ("A=value # comment", "value"),
        ("A=value#not-a-comment", "value#not-a-comment"),
        ("A=", ""),
        ("A=a=b=c", "a=b=c"),
    ],
    ids=[
        "plain",
        "spaces",
        "export",
        "single-quotes",
        "double-escapes",
        "comment",
        "hash-in-value",
        "empty",
        "equals-in-value",
    ],
)
def test_value_syntax(line, expected):
    assert parse_env_text(line) == {"A": expected}


@pytest.mark.parametrize(
    "text, warned",
    [
        ("just words xyz-secret", True),
        ("A='xyz-secret", True),
        ('"=xyz-secret', True),
        ("# A=xyz-secret", False),
    ],
    ids=["no-equals", "unterminated-quote", "bad-name", "comment-line"],
)
def test_bad_lines_are_skipped_without_their_text_in_the_log(text, warned, caplog):
    caplog.set_level("WARNING")
    assert parse_env_text(text + "\nB=kept\n") == {"B": "kept"}
    assert ("line 1" in caplog.text) is warned
    assert "xyz-secret" not in caplog.text


def test_unknown_names_are_ignored(tmp_path):
    assert read_env_file(write(tmp_path, "HOME_ASSISTANT=1\nAWS_REGION=eu-west-1\n")) == {
        "region": "eu-west-1"
    }


@pytest.mark.parametrize("name", ["AWS_PASSWORD", "AWS_CLIENTSECRET"])
def test_world_readable_file_with_a_secret_is_refused_naming_file_and_mode(tmp_path, name):
    path = write(tmp_path, f"{name}=hunter2-secret\n", mode=0o644)
    with pytest.raises(ConfigError) as err:
        read_env_file(path)
    assert path in str(err.value) and "0644" in str(err.value)
    assert "hunter2-secret" not in str(err.value)
    assert err.value.exit_code == 2


def test_world_readable_file_without_secrets_is_fine(tmp_path):
    path = write(tmp_path, "AWS_REGION=eu-west-1\n", mode=0o644)
    assert read_env_file(path) == {"region": "eu-west-1"}


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match="cannot read env file .*nope"):
        read_env_file(str(tmp_path / "nope"))


def test_layer_sits_below_the_ini_file_and_the_environment(tmp_path):
    env_values = read_env_file(write(tmp_path, HOWTO_ENV))
    ini = tmp_path / "forwarder.ini"
    ini.write_text("[forwarder]\nregion = eu-central-1\n")
    cfg = config.load(
        str(ini),
        {},
        environ={"OMPROG_FORWARDER_USERNAME": "from-environ"},
        extra_file_values=env_values,
    )
    assert cfg.region == "eu-central-1"  # file beats .env
    assert cfg.username == "from-environ"  # environment beats both
    assert cfg.user_pool_id == "ap-northeast-1_AbCdEf123"  # .env fills the rest
    assert cfg.effective_device_id() == "from-environ"
    assert "b8:27" not in repr(cfg)


def test_import_loads_no_third_party_module():
    """envfile is imported by cli on every command, `run` included."""
    code = (
        "import sys; import omprog_forwarder.envfile; "
        "bad = [m for m in ('boto3', 'botocore', 'requests', 'tenacity', 'pycognito') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
