"""The device and the Lambda agree: one table each side, held equal here.

The Lambda is deployed on its own and cannot import the device package, so
the facts both sides need (severity names and aliases, the id pattern, the
wire body's keys) exist twice; these tests fail the day the copies drift.
"""

from __future__ import annotations

import base64
import gzip
import json
import string

import pytest
import request
import severity
from hypothesis import given
from hypothesis import strategies as st
from settings import load_settings

from omprog_forwarder import config, spool
from omprog_forwarder.errors import ConfigError
from omprog_forwarder.ingest.batcher import line_severity
from omprog_forwarder.ship import transport

SEVERITY_INPUTS = [
    *severity.SEVERITY_BY_NAME,
    *config.SEVERITY_BY_NAME,
    *(name.upper() for name in severity.SEVERITY_BY_NAME),
    *(f" {name} " for name in ("err", "Warning", "informational")),
    *"01234567",
    "8",
    "-1",
    "10",
    "03",
    "¹",
    "",
    "errors",
    "fatal",
    "information",
    "e r r",
]


def test_both_sides_know_the_same_severity_names_and_aliases() -> None:
    assert config.SEVERITY_BY_NAME == severity.SEVERITY_BY_NAME
    assert "informational" in config.SEVERITY_BY_NAME


def device_threshold(text: str) -> int | None:
    try:
        return config.load(None, {"urgent_severity": text}, environ={}).urgent_severity
    except ConfigError:
        return None


def lambda_threshold(text: str) -> int | None:
    env = {"BUCKET_NAME": "b", "REQUIRE_IDENTITY": "false", "ALERT_MIN_SEVERITY": text}
    try:
        return load_settings(env).alert_min_severity
    except Exception:  # the Lambda's ConfigError
        return None


@pytest.mark.parametrize("text", SEVERITY_INPUTS, ids=repr)
def test_urgent_severity_and_alert_min_severity_accept_and_refuse_the_same_values(
    text: str,
) -> None:
    """What pages through ALERT_MIN_SEVERITY seals early through urgent_severity."""
    assert device_threshold(text) == lambda_threshold(text)


@given(st.text(max_size=20))
def test_the_two_severity_parsers_agree_on_any_text(text: str) -> None:
    assert device_threshold(text) == lambda_threshold(text)


@pytest.mark.parametrize("name", sorted(severity.SEVERITY_BY_NAME))
def test_a_customlogformat_line_has_the_same_severity_on_both_sides(name: str) -> None:
    """The device decides the early seal from the line, the Lambda the alert."""
    import parsing

    line = f"2026-11-26 23:14:05 pi daemon.{name}: app[1]: text"
    assert parsing.parse_line(line)["severity_num"] == line_severity(line.encode())


ID_CASES = [
    "pi-0001",
    "a",
    "A.b_c-9",
    "x" * 128,
    "x" * 129,
    "",
    "-lead",
    ".hidden",
    "../etc",
    "a/b",
    "a b",
    "a\n",
    "pi\u00e9",
    "20261126T231000Z-0123456789abcdef.1.2",
]


def device_accepts(value: str) -> bool:
    return bool(spool.BATCH_ID_RE.match(value)) and bool(config.DEVICE_ID_RE.match(value))


def lambda_accepts(value: str) -> bool:
    return bool(request.ID_RE.match(value))


@pytest.mark.parametrize("value", ID_CASES, ids=repr)
def test_batch_and_device_ids_are_accepted_and_refused_alike(value: str) -> None:
    assert device_accepts(value) == lambda_accepts(value)


@given(st.text(alphabet=string.printable + "é\u0000", max_size=140))
def test_the_id_patterns_agree_on_any_text(value: str) -> None:
    assert device_accepts(value) == lambda_accepts(value)


def test_a_device_id_the_lambda_refuses_is_refused_by_the_config() -> None:
    with pytest.raises(ConfigError, match="device_id"):
        config.load(None, {"device_id": "../x"}, environ={})


def test_the_wire_body_has_exactly_the_keys_the_lambda_reads() -> None:
    assert transport.BODY_KEYS == request.BODY_KEYS
    body = transport.build_body("pi-0001", "20261126T231000Z-0123456789abcdef", "x", [b"l"])
    assert tuple(json.loads(gzip.decompress(body.data))) == request.BODY_KEYS


def test_a_device_body_is_read_back_whole_by_the_lambda() -> None:
    lines = [b"first", "caf\u00e9 \u2603".encode(), b"\xff not utf-8"]
    body = transport.build_body(
        "pi-0001", "20261126T231000Z-0123456789abcdef.1", "2026-11-26T23:10:00+00:00", lines
    )
    event = {
        "requestContext": {},
        "isBase64Encoded": True,
        "body": base64.b64encode(body.data).decode(),
    }
    batch = request.read_batch(event, request.event_kind(event), 1 << 20, 1000)
    assert batch.device_id == "pi-0001"
    assert batch.batch_id == "20261126T231000Z-0123456789abcdef.1"
    assert batch.timestamp.isoformat() == "2026-11-26T23:10:00+00:00"
    assert batch.logs == ["first", "caf\u00e9 \u2603", "\ufffd not utf-8"]


def test_the_outputs_provision_reads_are_the_templates() -> None:
    from devstack.template import load_template
    from omprog_forwarder.admin.stack import OUTPUTS

    outputs = load_template()["Outputs"]
    assert set(OUTPUTS) <= set(outputs)
    assert {"UserPoolId", "UserPoolClientId", "IdentityPoolId", "EndpointUrl", "Region"} <= set(
        OUTPUTS
    )


def test_the_device_configs_spool_default_is_the_rsyslog_snippets_neighbour() -> None:
    """provision writes spool_dir; the README and DEPLOY.md install that folder."""
    from pathlib import Path

    deploy_md = (Path(__file__).resolve().parents[1] / "docs" / "DEPLOY.md").read_text()
    assert config.DEFAULT_SPOOL_DIR in deploy_md
