"""Configuration of `run`: INI `[forwarder]`, OMPROG_FORWARDER_<KEY>, --config/--spool-dir.

Precedence is explicit option > environment > file > default. A bad value or an
unknown key fails start-up with a message naming the key (and the value, for a
bad value); a secret in a world-readable file is refused naming file and mode.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import pytest

from omprog_forwarder import cli, config
from omprog_forwarder.errors import ConfigError

MIB = 1024 * 1024


def ini(tmp_path: Path, body: str, mode: int = 0o600, name: str = "forwarder.ini") -> Path:
    path = tmp_path / name
    path.write_text(body)
    os.chmod(path, mode)
    return path


# ---------------------------------------------------------------- defaults


@pytest.mark.parametrize(
    ("key", "default"),
    [
        ("window_seconds", 300.0),
        ("max_batch_bytes", 4 * MIB),
        ("max_spool_bytes", 512 * MIB),
        ("urgent_severity", 3),
        ("urgent_min_interval", 10.0),
        ("begin_transaction_mark", "BEGIN TRANSACTION"),
        ("commit_transaction_mark", "COMMIT TRANSACTION"),
        ("ship_command", "auto"),
    ],
    ids=lambda v: str(v),
)
def test_default(key: str, default: Any) -> None:
    assert getattr(config.load(None, environ={}), key) == default


# ---------------------------------------------------------------- every key, file and env

VALID = [
    ("spool_dir", "/srv/spool", "/srv/spool"),
    ("window_seconds", "60", 60.0),
    ("window_seconds", "5m", 300.0),
    ("window_seconds", "1.5h", 5400.0),
    ("max_batch_bytes", "65536", 65536),
    ("max_batch_bytes", "64KiB", 65536),
    ("max_batch_bytes", "4MiB", 4 * MIB),
    ("max_spool_bytes", "1GiB", 1024 * MIB),
    ("max_spool_bytes", "512M", 512 * MIB),
    ("max_line_bytes", "1MiB", MIB),
    ("urgent_severity", "3", 3),
    ("urgent_severity", "err", 3),
    ("urgent_severity", "crit", 2),
    ("urgent_severity", "warning", 4),
    ("urgent_severity", "0", 0),
    ("urgent_severity", "7", 7),
    ("urgent_min_interval", "0", 0.0),
    ("urgent_min_interval", "30s", 30.0),
    ("begin_transaction_mark", "BEGIN", "BEGIN"),
    ("commit_transaction_mark", "COMMIT NOW", "COMMIT NOW"),
    ("dedup_window", "100", 100),
    ("dedup_window", "1048576", 1048576),
    ("ship_command", "/usr/bin/omprog-forwarder ship", "/usr/bin/omprog-forwarder ship"),
    ("log_level", "debug", "DEBUG"),
]


@pytest.mark.parametrize(("key", "text", "value"), VALID, ids=[f"{k}={t}" for k, t, _ in VALID])
@pytest.mark.parametrize("source", ["file", "env"])
def test_every_key_is_read_from_the_file_and_from_its_env_var(
    tmp_path: Path, source: str, key: str, text: str, value: Any
) -> None:
    if source == "file":
        cfg = config.load(str(ini(tmp_path, f"[forwarder]\n{key} = {text}\n")), environ={})
    else:
        cfg = config.load(None, environ={f"OMPROG_FORWARDER_{key.upper()}": text})
    assert getattr(cfg, key) == value


# ---------------------------------------------------------------- bad values

BAD_VALUES = [
    ("window_seconds", "abc"),
    ("window_seconds", "0"),
    ("window_seconds", "-5"),
    ("window_seconds", "5 minutes"),
    ("window_seconds", "nan"),
    ("window_seconds", ""),
    ("max_batch_bytes", "-1"),
    ("max_batch_bytes", "0"),
    ("max_batch_bytes", "4XB"),
    ("max_batch_bytes", "1.5MiB"),
    ("max_spool_bytes", "lots"),
    ("max_line_bytes", "0"),
    ("urgent_severity", "9"),
    ("urgent_severity", "-1"),
    ("urgent_severity", "loud"),
    ("urgent_min_interval", "soon"),
    ("urgent_min_interval", "-10"),
    ("dedup_window", "many"),
    ("dedup_window", "0"),
    ("dedup_window", "1048577"),
    ("dedup_window", "-5"),
    ("log_level", "chatty"),
]


@pytest.mark.parametrize(
    ("key", "text"), BAD_VALUES, ids=[f"{k}={t or '(empty)'}" for k, t in BAD_VALUES]
)
@pytest.mark.parametrize("source", ["file", "env"])
def test_bad_value_fails_naming_the_key_the_value_and_where_it_came_from(
    tmp_path: Path, source: str, key: str, text: str
) -> None:
    if source == "file":
        where = str(ini(tmp_path, f"[forwarder]\n{key} = {text}\n"))
        path, environ = where, {}
    else:
        where = f"OMPROG_FORWARDER_{key.upper()}"
        path, environ = None, {where: text}
    with pytest.raises(ConfigError) as err:
        config.load(path, environ=environ)
    message = str(err.value)
    assert repr(key) in message
    assert repr(text) in message
    assert where in message
    assert "\n" not in message


def test_a_bad_mark_fails_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="begin_transaction_mark"):
        config.load(None, {"begin_transaction_mark": "BEGIN\nTRANSACTION"}, environ={})


@pytest.mark.parametrize(
    ("file_body", "environ", "fragments"),
    [
        pytest.param(
            "[forwarder]\ncolour = blue\n", {}, ["'colour'", "{path}"], id="unknown key in file"
        ),
        pytest.param(
            "[forwarder]\nwindow_second = 60\n", {}, ["'window_second'"], id="misspelt key in file"
        ),
        pytest.param(
            None,
            {"OMPROG_FORWARDER_COLOUR": "blue"},
            ["'colour'", "OMPROG_FORWARDER_COLOUR"],
            id="unknown env var with the prefix",
        ),
        pytest.param(
            "[forwarder]\nwindow_seconds = 60\n[forwader]\nspool_dir = /x\n",
            {},
            ["[forwader]", "{path}"],
            id="bad section",
        ),
        pytest.param("[Forwarder]\n", {}, ["[Forwarder]"], id="section name is case-sensitive"),
        pytest.param("window_seconds = 60\n", {}, ["{path}"], id="no section header"),
        pytest.param(
            "[forwarder]\nwindow_seconds = 60\nwindow_seconds = 90\n",
            {},
            ["window_seconds"],
            id="key given twice",
        ),
    ],
)
def test_unknown_key_or_section_fails_naming_it(
    tmp_path: Path, file_body: Optional[str], environ: dict[str, str], fragments: list[str]
) -> None:
    path = str(ini(tmp_path, file_body)) if file_body is not None else None
    with pytest.raises(ConfigError) as err:
        config.load(path, environ=environ)
    for fragment in fragments:
        assert fragment.format(path=path) in str(err.value)


def test_environment_variables_without_the_prefix_are_ignored() -> None:
    cfg = config.load(None, environ={"WINDOW_SECONDS": "abc", "OMPROG_FORWARDERX": "1"})
    assert cfg.window_seconds == 300.0


def test_missing_config_file_fails_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.ini"):
        config.load(str(tmp_path / "nope.ini"), environ={})


# ---------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    ("body", "mode", "refused"),
    [
        pytest.param("password = s3cret", 0o644, True, id="password, 0644: refused"),
        pytest.param("password = s3cret", 0o604, True, id="password, 0604: refused"),
        pytest.param("password = s3cret", 0o606, True, id="password, 0606: refused"),
        pytest.param("client_secret = abc", 0o644, True, id="client_secret, 0644: refused"),
        pytest.param("password = s3cret", 0o600, False, id="password, 0600: fine"),
        pytest.param("password = s3cret", 0o640, False, id="password, 0640: fine"),
        pytest.param("window_seconds = 60", 0o644, False, id="no secret, 0644: fine"),
        pytest.param("password =", 0o644, False, id="empty password is no secret"),
    ],
)
def test_world_readable_file_holding_a_secret_is_refused_naming_file_and_mode(
    tmp_path: Path, body: str, mode: int, refused: bool
) -> None:
    path = ini(tmp_path, f"[forwarder]\n{body}\n", mode)
    if not refused:
        config.load(str(path), environ={})
        return
    with pytest.raises(ConfigError) as err:
        config.load(str(path), environ={})
    assert str(path) in str(err.value)
    assert f"{mode:04o}" in str(err.value)
    assert "s3cret" not in str(err.value) and "abc" not in str(err.value)


def test_secrets_never_show_in_repr() -> None:
    cfg = config.load(None, {"password": "hunter2", "client_secret": "xyzzy"}, environ={})
    assert "hunter2" not in repr(cfg) and "xyzzy" not in repr(cfg)


# ---------------------------------------------------------------- precedence

PRECEDENCE = [
    # (key, file value, env value, option value, expected)
    pytest.param("spool_dir", None, None, None, config.DEFAULT_SPOOL_DIR, id="spool_dir: default"),
    pytest.param("spool_dir", "/f", None, None, "/f", id="spool_dir: file beats default"),
    pytest.param("spool_dir", "/f", "/e", None, "/e", id="spool_dir: env beats file"),
    pytest.param("spool_dir", None, "/e", None, "/e", id="spool_dir: env beats default"),
    pytest.param("spool_dir", "/f", "/e", "/o", "/o", id="spool_dir: option beats env and file"),
    pytest.param("spool_dir", "/f", None, "/o", "/o", id="spool_dir: option beats file"),
    pytest.param("window_seconds", None, None, None, 300.0, id="window_seconds: default"),
    pytest.param("window_seconds", "60", None, None, 60.0, id="window_seconds: file"),
    pytest.param("window_seconds", "60", "120", None, 120.0, id="window_seconds: env beats file"),
    pytest.param(
        "urgent_severity", "crit", "warning", None, 4, id="urgent_severity: env beats file"
    ),
]


@pytest.mark.parametrize(("key", "file_value", "env_value", "option", "expected"), PRECEDENCE)
def test_precedence_option_over_env_over_file_over_default(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    key: str,
    file_value: Optional[str],
    env_value: Optional[str],
    option: Optional[str],
    expected: Any,
) -> None:
    """Through the real command line: `run [--config FILE] [--spool-dir DIR]`."""
    for name in list(os.environ):
        if name.startswith(config.ENV_PREFIX):
            monkeypatch.delenv(name)
    argv = ["run"]
    if file_value is not None:
        argv += ["--config", str(ini(tmp_path, f"[forwarder]\n{key} = {file_value}\n"))]
    if env_value is not None:
        monkeypatch.setenv(f"OMPROG_FORWARDER_{key.upper()}", env_value)
    if option is not None:
        argv += [f"--{key.replace('_', '-')}", option]
    cfg = cli.load_config(cli._parser().parse_args(argv))
    assert getattr(cfg, key) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("password = hunter2-SECRET\n", id="no section header"),
        pytest.param(
            "[forwarder]\nregion = eu-west-1\npassword =\nhunter2-SECRET\n", id="wrapped value"
        ),
    ],
)
def test_a_config_file_that_does_not_parse_never_echoes_its_text(tmp_path: Path, text: str) -> None:
    """configparser quotes the bad line, which may be the password: the error
    names the file and the line number only."""
    path = tmp_path / "forwarder.conf"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(ConfigError) as err:
        config.load(str(path), environ={})
    assert "hunter2" not in str(err.value)
    assert str(path) in str(err.value) and "line" in str(err.value)
