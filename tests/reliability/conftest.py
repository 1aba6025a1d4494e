"""The reliability suite: the whole chain under real faults, counted on the archive.

One LocalStack per module (moto, the IdentityBroker, the SigV4 gateway, the
real handler, all in this process); a module can ask for other stack options
with `STACK_OPTIONS`. Each scenario gets a `chain` (support/reliability.py)
that stops everything it started, and fails the scenario if a forwarder or
shipper was still running at the end. The numbers of every scenario are
printed together at the end of the run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest
from support.moto_cognito import isolate_aws_env
from support.reliability import RESULTS, Chain

from devstack.stack import LocalStack


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    mp = pytest.MonkeyPatch()
    isolate_aws_env(mp, tmp_path_factory.mktemp("aws"))
    try:
        # moto's state is per process: each module's stack gets names of its own.
        options = {"stack": f"omprog-rel-{os.urandom(3).hex()}"}
        options.update(getattr(request.module, "STACK_OPTIONS", {}))
        with LocalStack(**options) as local:
            # Long runs: keep the gateway's record of requests small.
            local.gateway.keep_payloads = False
            local.gateway.keep_events = False
            # The handler (imported by the stack) logs a line per batch: thousands
            # here, repeated in every failure report.
            logging.getLogger("omprog_forwarder.lambda").setLevel(logging.WARNING)
            yield local
    finally:
        mp.undo()


@pytest.fixture
def chain(stack: Any, tmp_path: Any) -> Iterator[Chain]:
    c = Chain(stack, tmp_path)
    try:
        yield c
    finally:
        killed = c.close()
    assert not killed, f"still running at the end, killed: {killed}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if RESULTS:
        terminalreporter.section("reliability: sent / archived / duplicated / lost")
        for result in RESULTS:
            terminalreporter.write_line(result.line())
