"""Fixtures for the shipper's tests: moto Cognito, the loopback gateway, a spool, clocks."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from support.clock import FakeClock
from support.moto_cognito import (
    MOTO_ACCESS_KEY,
    MOTO_CALLER,
    Device,
    MotoCognito,
    isolate_aws_env,
)

from devstack.gateway import Gateway
from omprog_forwarder import config
from omprog_forwarder.spool import Batch, Spool


@pytest.fixture(autouse=True)
def _isolated_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    isolate_aws_env(monkeypatch, tmp_path)


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoCognito]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with MotoCognito("eu-west-1") as server:
        yield server


@pytest.fixture
def device(moto: MotoCognito, monkeypatch: pytest.MonkeyPatch) -> Device:
    """A freshly provisioned device; boto3 in this test talks to moto."""
    dev = moto.provision(f"dev-{secrets.token_hex(4)}")
    for k, v in dev.environ().items():
        monkeypatch.setenv(k, v)
    return dev


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    """Accepts moto's (constant) identity-pool credentials."""
    with Gateway({MOTO_ACCESS_KEY: MOTO_CALLER}) as gw:
        yield gw


@pytest.fixture
def spool(tmp_path: Any) -> Spool:
    return Spool(str(tmp_path / "spool")).create()


@pytest.fixture
def make_cfg(device: Device, gateway: Gateway, spool: Spool) -> Callable[..., config.Config]:
    def make(**overrides: Any) -> config.Config:
        values = {
            **device.config_values(),
            "endpoint_url": gateway.url,
            "spool_dir": spool.root,
            **overrides,
        }
        return config.load(None, values, environ={})

    return make


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def seal(spool: Spool) -> Callable[..., Batch]:
    """Put a sealed batch in ready/ as ingest would leave it."""

    def make(window: str, lines: list[bytes], batch_id: str = "") -> Batch:
        return spool.write_batch(batch_id or f"{window}-{secrets.token_hex(8)}", lines)

    return make
