"""Configuration: one frozen record, one loader.

Precedence, highest first: explicit arguments (command-line options) >
environment variables `OMPROG_FORWARDER_<KEY>` > the INI file's `[forwarder]`
section > defaults. An unknown key is an error that names it; a bad value is an
error that names the key and the value. rsyslog starts the program with its
own environment, so the file is the usual place on a device.
"""

from __future__ import annotations

import configparser
import os
import re
import stat
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple, Optional

from omprog_forwarder.errors import ConfigError
from omprog_forwarder.spool import ID_PATTERN

ENV_PREFIX = "OMPROG_FORWARDER_"
SECTION = "forwarder"
DEFAULT_SPOOL_DIR = "/var/spool/omprog-forwarder"

MIB = 1024 * 1024
_SIZE_RE = re.compile(r"^\s*(\d+)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": MIB, "g": 1024 * MIB}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}
#: Syslog severity names, canonical (RFC 5424 order) then the aliases senders use.
#: The Lambda holds the same table (lambda/severity.py); tests/test_contract.py
#: keeps the two equal, since the Lambda cannot import this package.
SEVERITY_BY_NAME = {
    name: num
    for num, name in enumerate(
        ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
    )
}
SEVERITY_BY_NAME.update(
    {"emergency": 0, "panic": 0, "critical": 2, "error": 3, "warn": 4, "informational": 6}
)
DEVICE_ID_RE = re.compile(ID_PATTERN + r"\Z", re.ASCII)
SECRET_KEYS = frozenset({"password", "client_secret"})


def parse_size(text: str) -> int:
    """`4194304`, `4MiB`, `512M`, `64k` -> bytes."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError("expected a size such as 4194304, 64KiB, 4MiB or 1GiB")
    unit = (m.group(2) or "").lower()[:1]
    return int(m.group(1)) * _SIZE_UNITS[unit]


def parse_duration(text: str) -> float:
    """`300`, `300s`, `5m`, `1.5h` -> seconds."""
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError("expected a duration in seconds such as 300, 300s, 5m or 1h")
    return float(m.group(1)) * _DURATION_UNITS[(m.group(2) or "").lower()]


def parse_severity(text: str) -> int:
    """`3`, `err`, `error` -> 3."""
    t = text.strip().lower()
    if len(t) == 1 and "0" <= t <= "7":  # not isdigit(): "¹" is a digit too
        return int(t)
    if t in SEVERITY_BY_NAME:
        return SEVERITY_BY_NAME[t]
    raise ValueError("expected a syslog severity 0-7 or a name such as err, warning, crit")


def parse_device_id(text: str) -> str:
    """A device id the Lambda accepts as one S3 key segment (or empty: the username)."""
    t = text.strip()
    if t and not DEVICE_ID_RE.match(t):
        raise ValueError(
            "a device id is 1-128 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit"
        )
    return t


# The dedup index takes 32 to 64 bytes a line of its window (dedup.RecentSet): 32 MiB here.
MAX_DEDUP_WINDOW = 1 << 20


def parse_dedup_window(text: str) -> int:
    """How many of the newest lines' uuids ingest remembers: 1 to MAX_DEDUP_WINDOW."""
    value = int(text)
    if not 0 < value <= MAX_DEDUP_WINDOW:
        raise ValueError(f"must be between 1 and {MAX_DEDUP_WINDOW} (32-64 bytes of memory a line)")
    return value


def _positive(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def check(text: str) -> Any:
        value = parse(text)
        if value <= 0:
            raise ValueError("must be greater than zero")
        return value

    return check


def _mark(text: str) -> str:
    if not text or "\n" in text or "\r" in text:
        raise ValueError("must be a non-empty single line")
    return text


def _text(text: str) -> str:
    return text.strip()


def _level(text: str) -> str:
    t = text.strip().upper()
    if t not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError("expected one of debug, info, warning, error")
    return t


class Config(NamedTuple):
    """Every setting of the device side. Field docs are in the README's table.

    A NamedTuple rather than a frozen dataclass: importing `dataclasses` pulls
    in inspect and ast, about 1.2 MB of the ingest process's 20 MB budget.
    """

    # ingest
    spool_dir: str = DEFAULT_SPOOL_DIR
    window_seconds: float = 300.0
    max_batch_bytes: int = 4 * MIB
    max_spool_bytes: int = 512 * MIB
    max_line_bytes: int = 2 * MIB
    urgent_severity: int = 3
    urgent_min_interval: float = 10.0
    begin_transaction_mark: str = "BEGIN TRANSACTION"
    commit_transaction_mark: str = "COMMIT TRANSACTION"
    dedup_window: int = 65536
    ship_command: str = "auto"
    log_level: str = "INFO"
    # shipper
    endpoint_url: str = ""
    region: str = ""
    user_pool_id: str = ""
    client_id: str = ""
    client_secret: str = ""
    identity_pool_id: str = ""
    username: str = ""
    password: str = ""
    device_id: str = ""
    ship_max_seconds: float = 240.0
    request_timeout: float = 60.0

    def __repr__(self) -> str:  # never show secrets, even in a traceback
        shown = {
            f: ("***" if f in SECRET_KEYS and getattr(self, f) else getattr(self, f))
            for f in self._fields
        }
        return f"Config({shown})"

    def effective_device_id(self) -> str:
        return self.device_id or self.username


_PARSERS: dict[str, Callable[[str], Any]] = {
    "spool_dir": _text,
    "window_seconds": _positive(parse_duration),
    "max_batch_bytes": _positive(parse_size),
    "max_spool_bytes": _positive(parse_size),
    "max_line_bytes": _positive(parse_size),
    "urgent_severity": parse_severity,
    "urgent_min_interval": parse_duration,
    "begin_transaction_mark": _mark,
    "commit_transaction_mark": _mark,
    "dedup_window": parse_dedup_window,
    "ship_command": _text,
    "log_level": _level,
    "endpoint_url": _text,
    "region": _text,
    "user_pool_id": _text,
    "client_id": _text,
    "client_secret": _text,
    "identity_pool_id": _text,
    "username": _text,
    "password": lambda t: t,
    "device_id": parse_device_id,
    "ship_max_seconds": _positive(parse_duration),
    "request_timeout": _positive(parse_duration),
}
KEYS = Config._fields
assert set(KEYS) == set(_PARSERS)


def _convert(key: str, raw: Any, source: str) -> Any:
    if key not in _PARSERS:
        raise ConfigError(f"unknown configuration key {key!r} in {source}")
    text = str(raw)
    try:
        return _PARSERS[key](text)
    except ValueError as exc:
        shown = "***" if key in SECRET_KEYS else repr(text)
        raise ConfigError(f"bad value {shown} for {key!r} in {source}: {exc}") from None


def read_file(path: str) -> dict[str, str]:
    """The `[forwarder]` section of an INI file, checked for unknown keys."""
    parser = configparser.ConfigParser(interpolation=None, default_section="__none__")
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh, source=path)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except configparser.Error as exc:
        # configparser quotes the offending line, which may be a password:
        # name the line number only.
        lines = sorted({n for n, _ in getattr(exc, "errors", [])} | {getattr(exc, "lineno", 0)})
        where = ", ".join(f"line {n}" for n in lines if n) or "its structure"
        if getattr(exc, "option", None):  # a key name is not a secret; its value may be
            where = f"key {exc.option!r}, {where}"
        raise ConfigError(
            f"cannot parse config file {path} ({type(exc).__name__} at {where}); "
            f"it needs a [{SECTION}] section of `key = value` lines"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot parse config file {path}: it is not UTF-8 text") from None
    extra = [s for s in parser.sections() if s != SECTION]
    if extra:
        raise ConfigError(f"unknown section [{extra[0]}] in {path} (only [{SECTION}] is read)")
    if not parser.has_section(SECTION):
        return {}
    values = dict(parser.items(SECTION))
    for key in values:
        if key not in _PARSERS:
            raise ConfigError(f"unknown configuration key {key!r} in {path}")
    if SECRET_KEYS & {k for k, v in values.items() if v}:
        check_private(path)
    return values


def check_private(path: str) -> None:
    """A file holding a secret must not be readable or writable by others."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o007:
        raise ConfigError(
            f"config file {path} holds a secret but has mode {mode:04o}; "
            f"make it private: chmod 600 {path}"
        )


def load(
    path: Optional[str] = None,
    overrides: Optional[Mapping[str, Any]] = None,
    environ: Optional[Mapping[str, str]] = None,
    extra_file_values: Optional[Mapping[str, str]] = None,
) -> Config:
    """Build the Config from (highest first) overrides, environ, file, defaults.

    `extra_file_values` sits just below the file (used for the how-to's `.env`).
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if extra_file_values:
        layers.append(("the env file", extra_file_values))
    if path:
        layers.append((path, read_file(path)))
    env_values = {}
    for name, raw in environ.items():
        if name.startswith(ENV_PREFIX):
            env_values[name[len(ENV_PREFIX) :].lower()] = (raw, f"environment variable {name}")
    for source, layer in layers:
        for key, raw in layer.items():
            values[key] = _convert(key, raw, source)
    for key, (raw, source) in env_values.items():
        values[key] = _convert(key, raw, source)
    for key, raw in (overrides or {}).items():
        if raw is not None:
            values[key] = _convert(key, raw, "command-line option")
    return Config(**values)
