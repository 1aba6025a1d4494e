"""Operator commands against moto in server mode (see support/deployment.py).

The operator's boto3 talks to moto through AWS_ENDPOINT_URL with fake keys.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from support.deployment import REGION, make_deployment
from support.moto_cognito import MotoCognito, isolate_aws_env

from omprog_forwarder.admin.stack import Deployment


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoCognito]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with MotoCognito(REGION) as server:
        yield server


@pytest.fixture
def operator_env(moto: MotoCognito, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """The operator's shell: admin keys (fake), the region, every AWS call to moto."""
    isolate_aws_env(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    # For the device logins the tests do: pycognito would fetch the pool's keys from AWS.
    monkeypatch.setenv("COGNITO_JWKS", moto.jwks(f"{REGION}_any"))


@pytest.fixture
def deployment(moto: MotoCognito, operator_env: None) -> tuple[Deployment, str]:
    return make_deployment(moto)
