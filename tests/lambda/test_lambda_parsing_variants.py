"""parsing.py's lenient path: the syslog variants real senders write, field by field.

Where the variants come from: rsyslog's pmrfc3164 and ``ParseTIMESTAMP3164``
(any-case months, a year before the month or after the day, fractions,
Cisco's colon after the time, a space after the PRI, ``[address]`` hosts),
syslog-ng's ``scan_rfc3164_timestamp`` (an ISO time after the PRI, PIX/ASA
years, ``,`` fractions, ``program[pid] message`` when there is no time),
syslog-loose (Vector) and Logstash's ``SYSLOGBASE2`` (``TIMESTAMP_ISO8601`` or
``SYSLOGTIMESTAMP``, zero-padded ``MONTHDAY``, IPv6 ``SYSLOGHOST``).
"""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timezone
from typing import Any, Optional

import parsing
import pytest
from severity import FACILITY_NAMES
from support.events import batch, proxy_event

REF = datetime(2026, 11, 26, 23, 10, tzinfo=timezone.utc)
DEVICE = "pi-kitchen-01"
ABSENT = "<absent>"


def fields(
    *,
    ts: Optional[str],
    host: Optional[str],
    facility: Optional[str],
    severity: tuple[Optional[str], Optional[int]],
    app: Optional[str],
    pid: Optional[str],
    msg: Optional[str],
    fmt: str = "rfc3164",
    assumed_utc: Any = ABSENT,
    raw: Any = ABSENT,
) -> dict[str, Any]:
    """The expected record: every field, ``raw`` and ``ts_assumed_utc`` absent unless given."""
    return {
        "ts": ts,
        "host": host,
        "facility": facility,
        "severity": severity[0],
        "severity_num": severity[1],
        "app": app,
        "pid": pid,
        "msg": msg,
        "format": fmt,
        "ts_assumed_utc": assumed_utc,
        "raw": raw,
    }


def raw(line: str) -> dict[str, Any]:
    return fields(
        ts=None,
        host=None,
        facility=None,
        severity=(None, None),
        app=None,
        pid=None,
        msg=None,
        fmt="raw",
        raw=line,
    )


NO_SEVERITY = (None, None)
ERR = ("err", 3)
NOTICE = ("notice", 5)

VARIANTS = [
    # --- an RFC 3339 time after the PRI (RSYSLOG_ForwardFormat and friends) ---------------
    pytest.param(
        "<11>2026-11-26T23:14:05.534728+00:00 pi sshd[42]: x",
        fields(
            ts="2026-11-26T23:14:05.534728+00:00",
            host="pi",
            facility="user",
            severity=ERR,
            app="sshd",
            pid="42",
            msg="x",
        ),
        id="forward-format",
    ),
    pytest.param(
        "<34>2026-11-26T23:14:05.003Z gw01 su: 'su root' failed",
        fields(
            ts="2026-11-26T23:14:05.003+00:00",
            host="gw01",
            facility="auth",
            severity=("crit", 2),
            app="su",
            pid=None,
            msg="'su root' failed",
        ),
        id="forward-format-Z",
    ),
    pytest.param(
        "<30>2026-11-26t23:14:05z pi systemd[1]: Started",
        fields(
            ts="2026-11-26T23:14:05+00:00",
            host="pi",
            facility="daemon",
            severity=("info", 6),
            app="systemd",
            pid="1",
            msg="Started",
        ),
        id="forward-format-lower-case-t-and-z",
    ),
    pytest.param(
        "<13>2026-11-26 23:14:05 pi app: x",
        fields(
            ts="2026-11-26T23:14:05+00:00",
            host="pi",
            facility="user",
            severity=NOTICE,
            app="app",
            pid=None,
            msg="x",
            assumed_utc=True,
        ),
        id="iso-time-without-zone-is-utc",
    ),
    pytest.param(
        "<13>2026-11-26T23:14:05+0100 pi app: x",
        fields(
            ts="2026-11-26T23:14:05+01:00",
            host="pi",
            facility="user",
            severity=NOTICE,
            app="app",
            pid=None,
            msg="x",
        ),
        id="iso-zone-without-colon",
    ),
    pytest.param(
        "<13>2026-11-26T23:14:05,123-05:00 pi app: x",
        fields(
            ts="2026-11-26T23:14:05.123-05:00",
            host="pi",
            facility="user",
            severity=NOTICE,
            app="app",
            pid=None,
            msg="x",
        ),
        id="iso-comma-before-fraction",
    ),
    pytest.param(
        "<11>2026-11-26T23:14:05Z sshd[42]: x",
        fields(
            ts="2026-11-26T23:14:05+00:00",
            host=None,
            facility="user",
            severity=ERR,
            app="sshd",
            pid="42",
            msg="x",
        ),
        id="forward-format-without-host",
    ),
    pytest.param(
        "<11>2026-11-26T23:14:05Z 2001:db8::1 sshd[42]: x",
        fields(
            ts="2026-11-26T23:14:05+00:00",
            host="2001:db8::1",
            facility="user",
            severity=ERR,
            app="sshd",
            pid="42",
            msg="x",
        ),
        id="forward-format-ipv6-host",
    ),
    # --- BSD timestamps as devices write them ---------------------------------------------
    pytest.param(
        "DEC 31 23:59:59 pi sshd[42]: x",
        fields(
            ts="2025-12-31T23:59:59+00:00",
            host="pi",
            facility=None,
            severity=NO_SEVERITY,
            app="sshd",
            pid="42",
            msg="x",
            assumed_utc=True,
        ),
        id="bsd-upper-case-month",
    ),
    pytest.param(
        "<12>nov 26 23:14:05 pi app: x",
        fields(
            ts="2026-11-26T23:14:05+00:00",
            host="pi",
            facility="user",
            severity=("warning", 4),
            app="app",
            pid=None,
            msg="x",
            assumed_utc=True,
        ),
        id="bsd-lower-case-month",
    ),
    pytest.param(
        "<13>Nov 01 02:03:04 pi app: x",
        fields(
            ts="2026-11-01T02:03:04+00:00",
            host="pi",
            facility="user",
            severity=NOTICE,
            app="app",
            pid=None,
            msg="x",
            assumed_utc=True,
        ),
        id="bsd-zero-padded-day",
    ),
    pytest.param(
        "<11>Dec 31 2026 23:59:59 pi sshd[42]: x",
        fields(
            ts="2026-12-31T23:59:59+00:00",  # the line's own year, even after the batch time
            host="pi",
            facility="user",
            severity=ERR,
            app="sshd",
            pid="42",
            msg="x",
            assumed_utc=True,
        ),
        id="bsd-year-after-day-pix-asa",
    ),
    pytest.param(
        "2026 Nov 26 23:14:05 pi sshd[42]: x",
        fields(
            ts="2026-11-26T23:14:05+00:00",
            host="pi",
            facility=None,
            severity=NO_SEVERITY,
            app="sshd",
            pid="42",
            msg="x",
            assumed_utc=True,
        ),
        id="bsd-year-before-month-brocade-nexus",
    ),
    pytest.param(
        "<11>Nov 26 23:14:05.123 pi sshd[42]: x",
        fields(
            ts="2026-11-26T23:14:05.123+00:00",
            host="pi",
            facility="user",
            severity=ERR,
            app="sshd",
            pid="42",
            msg="x",
            assumed_utc=True,
        ),
        id="bsd-fraction",
    ),
    pytest.param(
        "Nov 26 2026 23:14:05,123456 pi app: x",
        fields(
            ts="2026-11-26T23:14:05.123456+00:00",
            host="pi",
            facility=None,
            severity=NO_SEVERITY,
            app="app",
            pid=None,
            msg="x",
            assumed_utc=True,
        ),
        id="bsd-year-and-comma-fraction",
    ),
    pytest.param(
        "<187>Nov 26 23:14:05.123: %LINK-3-UPDOWN: Interface Gi0/1, changed state to down",
        fields(
            ts="2026-11-26T23:14:05.123+00:00",
            host=None,
            facility="local7",
            severity=ERR,
            app="%LINK-3-UPDOWN",
            pid=None,
            msg="Interface Gi0/1, changed state to down",
            assumed_utc=True,
        ),
        id="bsd-cisco-colon-after-time",
    ),
    pytest.param(
        "<13> Nov 26 23:14:05 pi app: x",
        fields(
            ts="2026-11-26T23:14:05+00:00",
            host="pi",
            facility="user",
            severity=NOTICE,
            app="app",
            pid=None,
            msg="x",
            assumed_utc=True,
        ),
        id="space-after-pri-hp-procurve",
    ),
    pytest.param(
        "<013>Nov 26 23:14:05 pi app: x",
        fields(
            ts="2026-11-26T23:14:05+00:00",
            host="pi",
            facility="user",
            severity=NOTICE,
            app="app",
            pid=None,
            msg="x",
            assumed_utc=True,
        ),
        id="pri-with-leading-zero",
    ),
    pytest.param(
        "<13>Nov 26 23:14:05",
        fields(
            ts="2026-11-26T23:14:05+00:00",
            host=None,
            facility="user",
            severity=NOTICE,
            app=None,
            pid=None,
            msg="",
            assumed_utc=True,
        ),
        id="bsd-time-and-nothing-after",
    ),
    # --- tags and hosts -------------------------------------------------------------------
    pytest.param(
        "Nov 26 23:14:05 pi sshd[42] Accepted publickey for pi",
        fields(
            ts="2026-11-26T23:14:05+00:00",
            host="pi",
            facility=None,
            severity=NO_SEVERITY,
            app="sshd",
            pid="42",
            msg="Accepted publickey for pi",
            assumed_utc=True,
        ),
        id="tag-without-colon",
    ),
    pytest.param(
        "<38>Nov 26 23:14:05 sshd[42] Accepted",
        fields(
            ts="2026-11-26T23:14:05+00:00",
            host=None,
            facility="auth",
            severity=("info", 6),
            app="sshd",
            pid="42",
            msg="Accepted",
            assumed_utc=True,
        ),
        id="tag-without-colon-and-without-host",
    ),
    pytest.param(
        "2026-11-26T23:14:03Z vm sshd[42] Accepted",
        fields(
            ts="2026-11-26T23:14:03+00:00",
            host="vm",
            facility=None,
            severity=NO_SEVERITY,
            app="sshd",
            pid="42",
            msg="Accepted",
            fmt="rsyslog-file",
        ),
        id="tag-without-colon-file-format",
    ),
    pytest.param(
        "2026-11-26 23:14:03 vm auth.err: sshd[42] Failed password",
        fields(
            ts="2026-11-26T23:14:03+00:00",
            host="vm",
            facility="auth",
            severity=ERR,
            app="sshd",
            pid="42",
            msg="Failed password",
            fmt="customlogformat",
            assumed_utc=True,
        ),
        id="tag-without-colon-customlogformat",
    ),
    pytest.param(
        "Nov 26 23:14:05 pi kernel [ 1.0] a[b]c d",
        fields(
            ts="2026-11-26T23:14:05+00:00",
            host="pi",
            facility=None,
            severity=NO_SEVERITY,
            app=None,
            pid=None,
            msg="kernel [ 1.0] a[b]c d",
            assumed_utc=True,
        ),
        id="words-and-brackets-are-no-tag",
    ),
    pytest.param(
        "<13>Nov 26 23:14:05 2001:db8::1 sshd[42]: x",
        fields(
            ts="2026-11-26T23:14:05+00:00",
            host="2001:db8::1",
            facility="user",
            severity=NOTICE,
            app="sshd",
            pid="42",
            msg="x",
            assumed_utc=True,
        ),
        id="ipv6-host",
    ),
    pytest.param(
        "Nov 26 23:14:05 [2001:db8::1] sshd[42]: x",
        fields(
            ts="2026-11-26T23:14:05+00:00",
            host="2001:db8::1",
            facility=None,
            severity=NO_SEVERITY,
            app="sshd",
            pid="42",
            msg="x",
            assumed_utc=True,
        ),
        id="ipv6-host-in-brackets",
    ),
    pytest.param(
        "<13>Nov 26 23:14:05 [192.0.2.1] app: x",
        fields(
            ts="2026-11-26T23:14:05+00:00",
            host="192.0.2.1",
            facility="user",
            severity=NOTICE,
            app="app",
            pid=None,
            msg="x",
            assumed_utc=True,
        ),
        id="ipv4-host-in-brackets",
    ),
    pytest.param(
        "Nov 26 23:14:05 [ERROR] disk full",
        fields(
            ts="2026-11-26T23:14:05+00:00",
            host=None,
            facility=None,
            severity=NO_SEVERITY,
            app=None,
            pid=None,
            msg="[ERROR] disk full",
            assumed_utc=True,
        ),
        id="brackets-around-no-address-stay-in-msg",
    ),
    pytest.param(
        "Nov 26 23:14:05 pi: sshd[42]: x",
        fields(
            ts="2026-11-26T23:14:05+00:00",
            host=None,
            facility=None,
            severity=NO_SEVERITY,
            app="pi",
            pid=None,
            msg="sshd[42]: x",
            assumed_utc=True,
        ),
        id="word-with-colon-after-time-is-the-tag-as-before",
    ),
    # --- a PRI and nothing that parses: the severity is kept, and so is the line -----------
    pytest.param(
        "<11>hello",
        fields(
            ts=None,
            host=None,
            facility="user",
            severity=ERR,
            app=None,
            pid=None,
            msg="hello",
            raw="<11>hello",
        ),
        id="pri-only",
    ),
    pytest.param(
        "<11>sshd[42]: hello",
        fields(
            ts=None,
            host=None,
            facility="user",
            severity=ERR,
            app="sshd",
            pid="42",
            msg="hello",
            raw="<11>sshd[42]: hello",
        ),
        id="pri-and-tag-without-time",
    ),
    pytest.param(
        "<0>kernel: panic",
        fields(
            ts=None,
            host=None,
            facility="kern",
            severity=("emerg", 0),
            app="kernel",
            pid=None,
            msg="panic",
            raw="<0>kernel: panic",
        ),
        id="pri-zero",
    ),
    pytest.param(
        "<11>Nov 31 23:14:05 pi app: x",
        fields(
            ts=None,
            host=None,
            facility="user",
            severity=ERR,
            app=None,
            pid=None,
            msg="Nov 31 23:14:05 pi app: x",
            raw="<11>Nov 31 23:14:05 pi app: x",
        ),
        id="pri-and-impossible-bsd-date",
    ),
    pytest.param(
        "<11>2026-13-45T00:00:00Z pi app: x",
        fields(
            ts=None,
            host=None,
            facility="user",
            severity=ERR,
            app=None,  # "2026-13-45T00" is no program name
            pid=None,
            msg="2026-13-45T00:00:00Z pi app: x",
            raw="<11>2026-13-45T00:00:00Z pi app: x",
        ),
        id="pri-and-impossible-iso-date",
    ),
    pytest.param(
        "<11>",
        fields(
            ts=None,
            host=None,
            facility="user",
            severity=ERR,
            app=None,
            pid=None,
            msg="",
            raw="<11>",
        ),
        id="pri-and-nothing",
    ),
    # --- still raw -------------------------------------------------------------------------
    pytest.param("<192>hello", raw("<192>hello"), id="raw-pri-above-191"),
    pytest.param("<1a>hello", raw("<1a>hello"), id="raw-pri-not-a-number"),
    # Raw, but the PRI's auth.crit is kept (see broken-5424-space-ts).
    pytest.param(
        "<34>1 garbage",
        {**raw("<34>1 garbage"), "facility": "auth", "severity": "crit", "severity_num": 2},
        id="raw-rfc5424-header-then-garbage",
    ),
    pytest.param(
        "2026 Nov 26 2026 23:14:05 pi app: x",
        raw("2026 Nov 26 2026 23:14:05 pi app: x"),
        id="raw-two-years",
    ),
    pytest.param(
        "Dec 31 23:59:60 pi app: x", raw("Dec 31 23:59:60 pi app: x"), id="raw-leap-second"
    ),
    pytest.param("nov 26 24:00:00 pi app: x", raw("nov 26 24:00:00 pi app: x"), id="raw-hour-24"),
    pytest.param("Foo 26 23:14:05 pi app: x", raw("Foo 26 23:14:05 pi app: x"), id="raw-no-month"),
]


@pytest.mark.parametrize(("line", "expected"), VARIANTS)
def test_variant_table(line: str, expected: dict[str, Any]) -> None:
    record = parsing.parse_line(line, REF)
    assert {key: record.get(key, ABSENT) for key in expected} == expected
    assert "parse_error" not in record


@pytest.mark.parametrize("pri", range(192))
def test_every_valid_pri_alone_gives_its_facility_severity_and_alert(pri: int) -> None:
    record = parsing.parse_line(f"<{pri}>hello", REF)
    assert (record["facility"], record["severity_num"]) == (FACILITY_NAMES[pri >> 3], pri & 7)
    assert parsing.is_alerting(record, 3) is (pri & 7 <= 3)
    assert record["raw"] == f"<{pri}>hello"


def test_a_pri_only_line_alerts_through_the_handler(rig: Any) -> None:
    """``<11>hello`` (user.err, no time) is archived with its line and alerts once."""
    event = proxy_event(
        batch(["<11>hello", "<14>just info"]),
        user_pool_id=rig.cognito.user_pool_id,
        sub=rig.cognito.subs[DEVICE],
        identity_pool_id=rig.cognito.identity_pool_id,
    )
    status, body = rig.call(event)
    assert (status, body["accepted"], body["alerts"], body["alert_status"]) == (200, 2, 1, "sent")
    (payload,) = rig.slack.payloads
    assert "hello" in json.dumps(payload) and "just info" not in json.dumps(payload)
    stored = rig.s3.get_object(Bucket="omprog-test-logs", Key=body["key"])["Body"].read()
    first = json.loads(gzip.decompress(stored).decode().splitlines()[0])
    assert (first["severity"], first["facility"], first["raw"]) == ("err", "user", "<11>hello")


@pytest.mark.parametrize(
    "line",
    [
        pytest.param("<34>1 2003-10-11 22:14:15Z h a p m - x", id="broken-5424"),
        pytest.param("2026-02-30 10:00:00 vm daemon.err: app: impossible date", id="howto-date"),
    ],
)
def test_a_raw_line_that_names_its_severity_alerts_with_the_whole_line(rig: Any, line: str) -> None:
    """Raw (no field can be trusted) but the severity is the line's own: it pages, and the
    message shows the line itself, since the record has no `msg`."""
    event = proxy_event(
        batch([line, "<14>just info"]),
        user_pool_id=rig.cognito.user_pool_id,
        sub=rig.cognito.subs[DEVICE],
        identity_pool_id=rig.cognito.identity_pool_id,
    )
    status, body = rig.call(event)
    assert (status, body["alerts"], body["alert_status"]) == (200, 1, "sent")
    (payload,) = rig.slack.payloads
    shown = payload["blocks"][2]["text"]["text"]
    assert shown == "```" + line.replace("<", "&lt;").replace(">", "&gt;") + "```"
    assert "crit" in json.dumps(payload) or "err" in json.dumps(payload)
