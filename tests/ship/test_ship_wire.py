"""What goes on the wire: the documented gzip JSON body, signed, line bytes preserved."""

from __future__ import annotations

import gzip
import json
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from omprog_forwarder.ship import shipper as ship
from omprog_forwarder.ship.transport import build_body

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures")

TRICKY_LINES = [
    b"plain ascii",
    "2024-12-30 22:50:33 raspberrypi daemon.info: dhcpcd[727]: caf\u00e9 \u65e5\u672c".encode(),
    "emoji \U0001f600 and U+2028 [\u2028] U+FEFF [\ufeff]".encode(),
    b'quotes " and \\ backslashes \\" and {"json": [1, 2]}',
    b"tab\there, cr\rthere, nul\x00, esc\x1b[31m, del\x7f",
    b"",
    b"   leading and trailing spaces   ",
    b"<!channel> & <b>mrkdwn</b>",
]


def fixture_lines() -> list[bytes]:
    out = []
    for name in ("rsyslog-8.2302-json-template.jsonl", "rsyslog-8.2302-customlogformat.log"):
        with open(os.path.join(FIXTURES, name), "rb") as fh:
            out.extend(fh.read().splitlines())
    return out


def test_body_is_gzip_of_the_documented_json_with_line_bytes_preserved():
    lines = TRICKY_LINES + fixture_lines()
    body = build_body(
        "dev-1", "20261126T231000Z-1a2b3c4d5e6f7a8b", "2026-11-26T23:10:00+00:00", lines
    )
    assert body.data[:2] == b"\x1f\x8b"
    doc = json.loads(gzip.decompress(body.data))
    assert list(doc) == ["device_id", "batch_id", "timestamp", "logs"]
    assert doc["device_id"] == "dev-1"
    assert doc["batch_id"] == "20261126T231000Z-1a2b3c4d5e6f7a8b"
    assert doc["timestamp"] == "2026-11-26T23:10:00+00:00"
    assert [s.encode("utf-8") for s in doc["logs"]] == lines
    assert body.invalid_utf8 == 0
    assert body.json_bytes == len(gzip.decompress(body.data))


def test_body_inflates_to_exactly_the_compact_json_the_lambda_reads():
    """Encoder settings (level, strategy) may change; the inflated bytes may not."""
    lines = TRICKY_LINES + fixture_lines()
    body = build_body("dev-1", "20261126T231000Z-1a2b3c4d5e6f7a8b", "2026-11-26T23:10:00Z", lines)
    expected = json.dumps(
        {
            "device_id": "dev-1",
            "batch_id": "20261126T231000Z-1a2b3c4d5e6f7a8b",
            "timestamp": "2026-11-26T23:10:00Z",
            "logs": [x.decode("utf-8") for x in lines],
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")
    assert gzip.decompress(body.data) == expected


def test_invalid_utf8_becomes_replacement_characters_and_is_counted():
    lines = [b"ok", b"latin-1 caf\xe9", b"\xff\xfe", b"cut \xe6\x97", b"surrogate \xed\xa0\x80"]
    body = build_body("d", "b", "t", lines)
    logs = json.loads(gzip.decompress(body.data))["logs"]
    assert logs[0] == "ok"
    assert logs[1] == "latin-1 caf\ufffd"
    assert logs[2] == "\ufffd\ufffd"
    assert logs[3].startswith("cut \ufffd")
    assert "\ufffd" in logs[4] and "\ud800" not in logs[4]
    assert body.invalid_utf8 == 4


def test_many_lines_across_json_slices_keep_order():
    lines = [f"line {i}".encode() for i in range(5000)]
    doc = json.loads(gzip.decompress(build_body("d", "b", "t", lines).data))
    assert doc["logs"] == [f"line {i}" for i in range(5000)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"")), max_size=40))
def test_build_body_never_raises_and_round_trips(lines):
    body = build_body("d", "b", "t", lines)
    logs = json.loads(gzip.decompress(body.data))["logs"]
    assert logs == [x.decode("utf-8", "replace") for x in lines]
    bad = 0
    for x in lines:
        try:
            x.decode("utf-8")
        except UnicodeDecodeError:
            bad += 1
    assert body.invalid_utf8 == bad


def test_shipped_request_is_signed_gzip_and_decodes_to_the_batch(make_cfg, gateway, spool, seal):
    lines = TRICKY_LINES + fixture_lines() + [b"bad \xff byte"]
    batch = seal("20261126T231000Z", lines)
    cfg = make_cfg(device_id="pi-kitchen")
    assert ship.run_ship(cfg) == 0

    (req,) = gateway.accepted
    assert req.headers["content-type"] == "application/gzip"
    assert "content-encoding" not in req.headers  # API Gateway must pass the bytes through
    signed = req.headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {"content-type", "host", "x-amz-date", "x-amz-security-token"} <= set(signed)
    assert req.event["isBase64Encoded"] is True
    assert req.payload == {
        "device_id": "pi-kitchen",
        "batch_id": batch.batch_id,
        "timestamp": "2026-11-26T23:10:00+00:00",
        "logs": [x.decode("utf-8", "replace") for x in lines],
    }
    assert [s.encode() for s in req.payload["logs"][:-1]] == lines[:-1]
    assert spool.ready_batches() == []
    counters = spool.read_state("counters.json")
    assert counters["ship_invalid_utf8_lines"] == 1
    assert counters["ship_lines_sent"] == len(lines)
    assert counters["ship_bytes_sent"] == req.body_bytes


def test_device_id_defaults_to_username(make_cfg, gateway, seal, device):
    seal("20261126T231000Z", [b"x"])
    assert ship.run_ship(make_cfg()) == 0
    assert gateway.payloads[0]["device_id"] == device.username


def test_timestamp_falls_back_to_the_file_time_for_a_name_without_window(make_cfg, gateway, spool):
    batch = spool.write_batch("manual-import-1", [b"x"])
    os.utime(batch.path, (1767225600, 1767225600))  # 2026-01-01T00:00:00Z
    assert ship.run_ship(make_cfg()) == 0
    assert gateway.payloads[0]["timestamp"] == "2026-01-01T00:00:00+00:00"
