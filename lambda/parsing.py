"""Turn one syslog line, in whatever format a sender used, into one archive record.

Pure: no I/O, no clock unless the caller gives none. The contract that matters
more than any field is that :func:`parse_line` never raises and always returns a
record for its line, because the how-to's Lambda answered 502 and lost the whole
batch on the first line it could not split. A line that fits no format is kept
verbatim in ``raw`` with ``severity: null``.

Formats are tried in a fixed order (the project's JSON template, the how-to's
CustomLogFormat, rsyslog's file format, RFC 5424, RFC 3164). A cheap look at the
first character skips formats that cannot match, which keeps the order's
meaning while most lines try one regex only.

Normalisations, applied the same way to every format so that one event looks
the same whoever sent it:

* ``msg`` loses the single separator space that rsyslog keeps after the tag
  (``%msg%`` starts with it); any further spaces are kept.
* ``pid`` and RFC 5424 nil values ``-`` become ``null``.
* ``ts`` is ISO 8601 with an offset. A sender's time without a zone (the
  how-to's template, RFC 3164) is taken as UTC and the record says so with
  ``"ts_assumed_utc": true``; an RFC 3164 year is taken from the batch time.
* RFC 5424 ``MSGID`` and structured data are kept as ``msgid`` and ``sd`` when
  present, so that nothing of the line is lost.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from severity import SEVERITY_NAMES, facility_name, severity_number

UTC = timezone.utc

#: Field order of every record (``device_id``/``batch_id`` are added by the archive).
RECORD_FIELDS = (
    "ts",
    "host",
    "facility",
    "severity",
    "severity_num",
    "app",
    "pid",
    "msg",
    "uuid",
)

FORMAT_JSON = "json"
FORMAT_CUSTOM = "customlogformat"
FORMAT_FILE = "rsyslog-file"
FORMAT_RFC5424 = "rfc5424"
FORMAT_RFC3164 = "rfc3164"
FORMAT_RAW = "raw"

_F = re.ASCII | re.DOTALL

# `%syslogtag%%msg%`: "app[pid]:msg" or "app:msg".
_TAG_RE = re.compile(r"([^\s\[\]:]+)(?:\[([^\]\s]*)\])?:(.*)\Z", _F)

# The how-to's CustomLogFormat; rsyslog writes a `T`, the how-to's sender a space.
_CUSTOM_RE = re.compile(
    r"(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d) (\S+) ([A-Za-z0-9_-]+)\.([A-Za-z]+): (.*)\Z", _F
)

_RFC3339 = r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:[Zz]|[+-]\d\d:\d\d)"
_RFC3339_RE = re.compile(_RFC3339 + r"\Z", _F)

# RSYSLOG_FileFormat: "TIMESTAMP HOST TAG MSG".
_FILE_RE = re.compile(r"(" + _RFC3339 + r") (\S+) (.*)\Z", _F)

# RFC 5424: "<PRI>VER TIMESTAMP HOST APP PROCID MSGID SD [MSG]".
_SD = r'(?:-|(?:\[(?:[^\]"\\]|"(?:[^"\\]|\\.)*")*\])+)'
_RFC5424_RE = re.compile(
    r"<(\d{1,3})>([1-9]\d?) (\S+) (\S+) (\S+) (\S+) (\S+) (" + _SD + r")(?: (.*))?\Z", _F
)

# RFC 3164 / RSYSLOG_TraditionalFileFormat: "[<PRI>]Mmm dd hh:mm:ss REST".
_RFC3164_RE = re.compile(r"(?:<(\d{1,3})>)?([A-Z][a-z]{2}) ([ \d]?\d) (\d\d):(\d\d):(\d\d) (.*)\Z", _F)

_MONTHS = {
    name: num
    for num, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        start=1,
    )
}

Record = dict[str, Any]


def parse_line(line: str, ref: Optional[datetime] = None) -> Record:
    """Parse one line into a record; never raises, never returns ``None``.

    ``ref`` is the batch time (timezone-aware), used only to give RFC 3164
    lines a year. Without it the current time is used.
    """
    try:
        return _parse(line, ref)
    except Exception as exc:  # noqa: BLE001 - the contract is "never raises"
        # Reaching this is a parser bug: keep the line, and name the bug so it is seen.
        record = _raw_record(line if isinstance(line, str) else repr(line))
        record["parse_error"] = type(exc).__name__
        return record


def _parse(line: str, ref: Optional[datetime]) -> Record:
    text = line.rstrip("\r\n")
    first = text[:1]
    if first == "{":
        record = _parse_json(text, line)
        if record is not None:
            return record
    elif first.isdigit():
        record = _parse_custom(text)
        if record is None:
            record = _parse_file(text)
        if record is not None:
            return record
    elif first == "<":
        record = _parse_5424(text)
        if record is None:
            record = _parse_3164(text, ref)
        if record is not None:
            return record
    elif first.isupper():
        record = _parse_3164(text, ref)
        if record is not None:
            return record
    return _raw_record(line)


def _record(
    fmt: str,
    ts: Optional[str],
    host: Optional[str],
    facility: Optional[str],
    sev: Optional[int],
    app: Optional[str],
    pid: Optional[str],
    msg: Optional[str],
    uuid: Optional[str] = None,
    assumed_utc: bool = False,
) -> Record:
    record = {
        "ts": ts,
        "host": host,
        "facility": facility,
        "severity": None if sev is None else SEVERITY_NAMES[sev],
        "severity_num": sev,
        "app": app,
        "pid": pid,
        "msg": msg,
        "uuid": uuid,
        "format": fmt,
    }
    if assumed_utc:
        record["ts_assumed_utc"] = True
    return record


def _raw_record(line: str) -> Record:
    record = _record(FORMAT_RAW, None, None, None, None, None, None, None)
    record["raw"] = line
    return record


def _strip1(msg: str) -> str:
    return msg[1:] if msg[:1] == " " else msg


def _nil(value: Optional[str]) -> Optional[str]:
    return None if value is None or value == "-" or value == "" else value


def _split_tag(rest: str) -> tuple[Optional[str], Optional[str], str]:
    """Split rsyslog's ``%syslogtag%%msg%`` into app, pid and message."""
    match = _TAG_RE.match(rest)
    if match is None:
        return None, None, _strip1(rest)
    app, pid, msg = match.groups()
    return app, _nil(pid), _strip1(msg)


def iso_timestamp(text: Any) -> tuple[Optional[str], bool]:
    """Return ``(ISO 8601 with offset, assumed_utc)`` or ``(None, False)``.

    A time without a zone is taken as UTC; the flag lets the record say so. A
    well-formed RFC 3339 string is returned unchanged (bar ``Z``) so that its
    sub-second digits survive.
    """
    if not isinstance(text, str) or not 10 <= len(text) <= 40 or not text.isascii():
        return None, False
    candidate = text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError:
        return None, False
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC).isoformat(), True
    if candidate[10:11] == "T" and _RFC3339_RE.match(candidate):
        return candidate, False
    return parsed.isoformat(), False


def _text(value: Any) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float, bool)):
        return json.dumps(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _parse_json(text: str, line: str) -> Optional[Record]:
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or "msg" not in obj or "ts" not in obj:
        return None
    ts, assumed = iso_timestamp(obj.get("ts"))
    raw_sev = obj.get("severity")
    sev = severity_number(raw_sev)
    msg = obj.get("msg")
    record = _record(
        FORMAT_JSON,
        ts,
        _text(obj.get("host")),
        facility_name(obj.get("facility")) if isinstance(obj.get("facility"), int) else None,
        sev,
        _text(obj.get("app")),
        _nil(_text(obj.get("pid"))),
        _strip1(msg) if isinstance(msg, str) else _text(msg),
        _text(obj.get("uuid")),
        assumed,
    )
    if record["facility"] is None:
        record["facility"] = _text(obj.get("facility"))
    # Whatever we could not interpret is kept verbatim rather than lost.
    if ts is None or (sev is None and raw_sev is not None) or not isinstance(msg, str):
        record["raw"] = line
    return record


def _parse_custom(text: str) -> Optional[Record]:
    match = _CUSTOM_RE.match(text)
    if match is None:
        return None
    date, clock, host, facility, sev_name, rest = match.groups()
    sev = severity_number(sev_name)
    if sev is None:
        return None
    try:
        parsed = datetime.fromisoformat(date + "T" + clock)
    except ValueError:
        return None
    app, pid, msg = _split_tag(rest)
    ts = parsed.replace(tzinfo=UTC).isoformat()
    return _record(FORMAT_CUSTOM, ts, host, facility.lower(), sev, app, pid, msg, None, True)


def _parse_file(text: str) -> Optional[Record]:
    match = _FILE_RE.match(text)
    if match is None:
        return None
    raw_ts, host, rest = match.groups()
    ts, assumed = iso_timestamp(raw_ts)
    if ts is None:
        return None
    app, pid, msg = _split_tag(rest)
    return _record(FORMAT_FILE, ts, host, None, None, app, pid, msg, None, assumed)


def _pri(value: Optional[str]) -> tuple[Optional[str], Optional[int], bool]:
    if value is None:
        return None, None, True
    pri = int(value)
    if pri > 191 or (len(value) > 1 and value[0] == "0"):
        return None, None, False
    return facility_name(pri >> 3), pri & 7, True


def _parse_5424(text: str) -> Optional[Record]:
    match = _RFC5424_RE.match(text)
    if match is None:
        return None
    pri, _version, raw_ts, host, app, procid, msgid, sd, msg = match.groups()
    facility, sev, ok = _pri(pri)
    if not ok:
        return None
    if raw_ts == "-":
        ts, assumed = None, False
    else:
        ts, assumed = iso_timestamp(raw_ts)
        if ts is None or not _RFC3339_RE.match(raw_ts):
            return None
    if msg is not None and msg.startswith("\ufeff"):
        msg = msg[1:]
    record = _record(
        FORMAT_RFC5424,
        ts,
        _nil(host),
        facility,
        sev,
        _nil(app),
        _nil(procid),
        msg if msg is not None else "",
        None,
        assumed,
    )
    if msgid != "-":
        record["msgid"] = msgid
    if sd != "-":
        record["sd"] = sd
    return record


def _parse_3164(text: str, ref: Optional[datetime]) -> Optional[Record]:
    match = _RFC3164_RE.match(text)
    if match is None:
        return None
    pri, mon, day, hour, minute, second, rest = match.groups()
    month = _MONTHS.get(mon)
    if month is None:
        return None
    facility, sev, ok = _pri(pri)
    if not ok:
        return None
    parsed = _infer_year(month, int(day), int(hour), int(minute), int(second), ref)
    if parsed is None:
        return None
    host, _, tail = rest.partition(" ")
    if not host or host.endswith(":") or "[" in host:
        host, tail = None, rest  # no HOSTNAME field: the tag follows the time
    app, pid, msg = _split_tag(tail)
    return _record(FORMAT_RFC3164, parsed.isoformat(), host, facility, sev, app, pid, msg, None, True)


def _infer_year(
    month: int, day: int, hour: int, minute: int, second: int, ref: Optional[datetime]
) -> Optional[datetime]:
    """RFC 3164 has no year: take the batch's, or the one before for a December line in January."""
    ref = (ref or datetime.now(UTC)).astimezone(UTC)
    for year in (ref.year, ref.year - 1):
        try:
            candidate = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
        except ValueError:
            continue
        if candidate <= ref + timedelta(days=2):
            return candidate
    return None


def is_alerting(record: Record, threshold: int) -> bool:
    """True when the line's severity is ``threshold`` or worse (lower number)."""
    num = record.get("severity_num")
    return num is not None and num <= threshold
