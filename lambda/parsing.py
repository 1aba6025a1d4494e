"""Turn one syslog line, in whatever format a sender used, into one archive record.

Pure: no I/O, and no clock unless the caller passes no batch time. The contract
that matters more than any field is that :func:`parse_line` never raises and
always returns a record for its line, because the how-to's Lambda answered 502
and lost the whole batch on the first line it could not split. A line that
fits no format is kept verbatim in ``raw`` (``format: raw``) with ``severity:
null``, unless the line carries its severity in a part that did parse: then
the severity is kept, because it decides whether the line pages someone.

Formats are tried in a fixed order (the project's JSON template, the how-to's
CustomLogFormat, rsyslog's file format, RFC 5424, RFC 3164). A look at the
first character skips formats that cannot match, which keeps the order's
meaning while most lines try one regular expression only. Timestamps are
checked with a regular expression plus a small cache of valid dates rather
than ``datetime`` per line: this module is the hot loop of the function, and
the issue holds it to half the speed of a bare ``split``.

What each format accepts, strictly:

* JSON: an object with ``ts`` and ``msg``; ``severity`` a number 0-7, a name or an
  alias (``severity.py``); ``facility`` a name or a number.
* CustomLogFormat: ``YYYY-MM-DD[T ]hh:mm:ss HOST facility.severity: TAG MSG``.
* rsyslog's file format: ``RFC3339 HOST TAG MSG``.
* RFC 5424 as the RFC writes it: ``<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD [MSG]``.
* RFC 3164: ``[<PRI>]Mmm dd hh:mm:ss [HOST] TAG MSG`` (day ``" 1"`` or ``"1"``).

A line none of these takes goes to a lenient path, so that variants cost the
common lines nothing. It reads the RFC 3164 family as rsyslog's ``pmrfc3164``
and syslog-ng do, and says ``rfc3164``:

* after the PRI, an RFC 3339 time (``RSYSLOG_ForwardFormat``:
  ``<11>2026-11-26T23:14:05.534728+00:00 pi sshd[42]: x``), also with ``,``
  before the fraction, a ``+hhmm`` zone or none (taken as UTC);
* a BSD time in any case (``DEC 31``), zero-padded (``Dec 01``), with a year
  before the month or after the day (``2026 Dec 31``, ``Dec 31 2026``), a
  fraction (``23:59:59.123``) or Cisco's colon after it (``23:59:59:``);
* spaces after the PRI (``<13> Dec ...``), and a PRI with leading zeros;
* a valid PRI before anything else (``<11>hello``): facility and severity
  from the PRI, no ``ts``, a leading tag still taken, and the whole line in
  ``raw``. A line that starts as RFC 5424 does (``<PRI>1 ``) and then breaks
  its grammar is ``format: raw`` (nothing after the PRI can be trusted as a
  field) but keeps the PRI's facility and severity.

The how-to's CustomLogFormat with an impossible date (``2026-02-30 ...
daemon.err: ...``) is the same case: ``format: raw``, ``ts`` null, the line in
``raw``, and the facility and severity it names.

Two rules for every format, both only where the strict rule found nothing:
``app[pid] msg`` (no colon) is a tag; an RFC 3164 HOSTNAME written as an
address literal (``[2001:db8::1]``) is the host, without its brackets. An RFC
3164 word ending in ``:`` (``pi: sshd[42]: x``) stays the tag, not a HOSTNAME,
as for pmrfc3164 and syslog-ng.

Normalisations, the same for every format so that one event looks the same
whoever sent it:

* ``msg`` loses the single separator space that rsyslog keeps after the tag
  (``%msg%`` starts with it); any further spaces are kept.
* ``pid`` and RFC 5424 nil values ``-`` become ``null``.
* ``ts`` is ISO 8601 with an offset. A sender's time without a zone (the
  how-to's template, RFC 3164) is taken as UTC and the record says so with
  ``"ts_assumed_utc": true``; an RFC 3164 year is taken from the batch time.
* RFC 5424 ``MSGID`` and structured data are kept as ``msgid`` and ``sd`` when
  present, so that nothing of the line is lost.
* A JSON line with keys other than the template's (``ts, host, facility,
  severity, app, pid, msg, uuid``) keeps the whole line in ``raw`` as well.
"""

from __future__ import annotations

import ipaddress
import json
import re
from datetime import date, datetime, timedelta, timezone
from typing import Any, Optional

from severity import FACILITY_NAMES, SEVERITY_BY_NAME, SEVERITY_NAMES, severity_number

UTC = timezone.utc

FORMAT_JSON = "json"
FORMAT_CUSTOM = "customlogformat"
FORMAT_FILE = "rsyslog-file"
FORMAT_RFC5424 = "rfc5424"
FORMAT_RFC3164 = "rfc3164"
FORMAT_RAW = "raw"

#: Keys every record has, in this order; optional ones follow (see module docstring).
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
    "format",
)
#: Keys a record may have beyond RECORD_FIELDS, in the order of the archive's table
#: (``lambda/template.yaml``): ``raw`` (the line, when it did not parse or did not
#: fit), ``ts_assumed_utc``, RFC 5424 ``msgid`` and ``sd``, and ``parse_error``.
OPTIONAL_FIELDS = ("raw", "ts_assumed_utc", "msgid", "sd", "parse_error")

Record = dict[str, Any]

_F = re.ASCII | re.DOTALL
_TIME = r"(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d"
_OFFSET = r"(?:[Zz]|[+-](?:[01]\d|2[0-3]):[0-5]\d)"
# `%syslogtag%%msg%` ("app[pid]:msg" or "app:msg"); the tag is optional so that
# one expression does both, and a line without a tag keeps all its text in msg.
_TAG = r"(?:([^\s\[\]:]+)(?:\[([^\]\s]*)\])?:)?(.*)\Z"

# The how-to's CustomLogFormat; rsyslog writes a `T`, the how-to's sender a space.
_CUSTOM_RE = re.compile(
    r"(\d{4}-\d\d-\d\d)[T ](" + _TIME + r") (\S+) ([A-Za-z0-9_-]+)\.([A-Za-z]+): " + _TAG, _F
)
# RFC 3339, captured as date, time, fraction and offset.
_RFC3339 = r"(\d{4}-\d\d-\d\d)[Tt ](" + _TIME + r")(\.\d{1,9})?(" + _OFFSET + r")"
_RFC3339_RE = re.compile(_RFC3339 + r"\Z", _F)
# RSYSLOG_FileFormat: "TIMESTAMP HOST TAG MSG".
_FILE_RE = re.compile(_RFC3339 + r" (\S+) " + _TAG, _F)
# RFC 5424: "<PRI>VER TIMESTAMP HOST APP PROCID MSGID SD [MSG]".
_SD = r'(?:-|(?:\[(?:[^\]"\\]|"(?:[^"\\]|\\.)*")*\])+)'
_RFC5424_RE = re.compile(
    r"<(0|[1-9]\d{0,2})>[1-9]\d? (\S+) (\S+) (\S+) (\S+) (\S+) (" + _SD + r")(?: (.*))?\Z", _F
)
# RFC 3164 / RSYSLOG_TraditionalFileFormat: "[<PRI>]Mmm dd hh:mm:ss [HOST] TAG MSG".
_RFC3164_RE = re.compile(
    r"(?:<(0|[1-9]\d{0,2})>)?(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"([ 1-3]?\d) (" + _TIME + r") (.*)\Z",
    _F,
)
_TAG_RE = re.compile(_TAG, _F)
_MONTHS = {
    m: i
    for i, m in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1
    )
}
_MONTH_BY_LOWER = {m.lower(): m for m in _MONTHS}

# The lenient path, for lines that none of the patterns above took.
# `app[pid] msg`: a tag without its colon (pmrfc3164 ends a tag at ":" or " ").
_BARE_TAG_RE = re.compile(r"([^\s\[\]:]+)\[([^\]\s]+)\](?= |\Z)(.*)\Z", _F)
_PRI_RE = re.compile(r"<(\d{1,3})>", _F)  # leading zeros too
# RFC 5424's `VERSION SP` after the PRI: such a line is RFC 5424 or raw.
_VERSION_RE = re.compile(r"[1-9]\d? ", _F)
# BSD timestamps as devices write them: any case, `01`, a year before the month or
# after the day, a fraction, Cisco's colon after the time.
_BSD_LOOSE_RE = re.compile(
    r"(?:((?:19|20)\d\d) +)?([A-Za-z]{3}) +(\d\d?) +(?:((?:19|20)\d\d) +)?(" + _TIME + r")"
    r"(?:[.,](\d{1,9}))?:?(?: (.*))?\Z",
    _F,
)
# An ISO timestamp after a PRI (RSYSLOG_ForwardFormat); the zone may be missing or `+hhmm`.
_ISO_LOOSE_RE = re.compile(
    r"(\d{4}-\d\d-\d\d)[Tt ](" + _TIME + r")(?:[.,](\d{1,9}))?"
    r"([Zz]|[+-](?:[01]\d|2[0-3]):?[0-5]\d)?:?(?: (.*))?\Z",
    _F,
)

_valid_dates: dict[str, bool] = {}


def _date_ok(day: str) -> bool:
    """``YYYY-MM-DD`` is a real date; cached, since a batch spans a few days at most."""
    known = _valid_dates.get(day)
    if known is None:
        try:
            date.fromisoformat(day)
            known = True
        except ValueError:
            known = False
        if len(_valid_dates) > 4096:
            _valid_dates.clear()
        _valid_dates[day] = known
    return known


def parse_line(line: str, ref: Optional[datetime] = None) -> Record:
    """Parse one line into a record; never raises, never returns ``None``.

    ``ref`` is the batch time (timezone-aware), used only to give RFC 3164
    lines a year. Without it the current time is used.
    """
    try:
        text = line.rstrip("\r\n")
        first = text[:1]
        record = None
        if first == "{":
            record = _parse_json(text, line)
        elif "0" <= first <= "9":
            record = _parse_custom(text, line) or _parse_file(text)
        elif first == "<":
            record = _parse_5424(text) or _parse_3164(text, ref)
        elif "A" <= first <= "Z":
            record = _parse_3164(text, ref)
        return record if record is not None else _parse_lenient(text, line, ref)
    except Exception as exc:  # noqa: BLE001 - the contract is "never raises"
        # Reaching this is a parser bug: keep the line, and name the bug so it is seen.
        record = _raw_record(line if isinstance(line, str) else repr(line))
        record["parse_error"] = type(exc).__name__
        return record


def _raw_record(line: str, facility: Optional[str] = None, sev: Optional[int] = None) -> Record:
    return {
        "ts": None,
        "host": None,
        "facility": facility,
        "severity": None if sev is None else SEVERITY_NAMES[sev],
        "severity_num": sev,
        "app": None,
        "pid": None,
        "msg": None,
        "uuid": None,
        "format": FORMAT_RAW,
        "raw": line,
    }


def _strip1(msg: str) -> str:
    """Drop the one space rsyslog keeps between the tag and the message."""
    return msg[1:] if msg[:1] == " " else msg


def _tagged(fmt, ts, host, facility, sev, app, pid, msg, assumed_utc) -> Record:  # noqa: ANN001
    record = {
        "ts": ts,
        "host": host,
        "facility": facility,
        "severity": None if sev is None else SEVERITY_NAMES[sev],
        "severity_num": sev,
        "app": app,
        "pid": None if pid == "-" or pid == "" else pid,
        "msg": msg,
        "uuid": None,
        "format": fmt,
    }
    if assumed_utc:
        record["ts_assumed_utc"] = True
    return record


def _rfc3339(day: str, clock: str, fraction: Optional[str], offset: str) -> Optional[str]:
    if not _date_ok(day):
        return None
    if offset == "Z" or offset == "z":
        offset = "+00:00"
    return f"{day}T{clock}{fraction or ''}{offset}"


def iso_timestamp(value: Any) -> tuple[Optional[str], bool]:
    """Return ``(ISO 8601 with offset, assumed_utc)`` or ``(None, False)``.

    RFC 3339 text is kept as written (sub-second digits survive); other ISO
    forms go through ``datetime``; a time without a zone is taken as UTC.
    """
    if not isinstance(value, str):
        return None, False
    match = _RFC3339_RE.match(value)
    if match is not None:
        return _rfc3339(*match.groups()), False
    if not 10 <= len(value) <= 40 or not value.isascii():
        return None, False
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None, False
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC).isoformat(), True
    return parsed.isoformat(), False


def _text(value: Any) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


#: The keys of the default JSON template (``option.jsonf``); any other key is kept via ``raw``.
_JSON_KEYS = frozenset(("ts", "host", "facility", "severity", "app", "pid", "msg", "uuid"))


def _parse_json(text: str, line: str) -> Optional[Record]:
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if type(obj) is not dict or "msg" not in obj or "ts" not in obj:
        return None
    get = obj.get
    raw_ts = obj["ts"]
    match = _RFC3339_RE.match(raw_ts) if type(raw_ts) is str else None
    if match is not None and raw_ts[10] == "T" and raw_ts[-1] != "Z" and _date_ok(match[1]):
        ts, assumed = raw_ts, False  # the template's own form: keep it as written
    else:
        ts, assumed = iso_timestamp(raw_ts)
    raw_sev = get("severity")
    sev = raw_sev if type(raw_sev) is int and 0 <= raw_sev <= 7 else severity_number(raw_sev)
    facility = get("facility")
    if type(facility) is int:
        facility = (
            FACILITY_NAMES[facility] if 0 <= facility < len(FACILITY_NAMES) else str(facility)
        )
    elif type(facility) is not str and facility is not None:
        facility = _text(facility)
    host, app, pid, uuid, msg = get("host"), get("app"), get("pid"), get("uuid"), obj["msg"]
    record = {
        "ts": ts,
        "host": host if type(host) is str else _text(host),
        "facility": facility,
        "severity": None if sev is None else SEVERITY_NAMES[sev],
        "severity_num": sev,
        "app": app if type(app) is str else _text(app),
        "pid": None if pid == "-" or pid == "" else pid if type(pid) is str else _text(pid),
        "msg": (msg[1:] if msg[:1] == " " else msg) if type(msg) is str else _text(msg),
        "uuid": uuid if type(uuid) is str else _text(uuid),
        "format": FORMAT_JSON,
    }
    if assumed:
        record["ts_assumed_utc"] = True
    # Whatever could not be interpreted is kept verbatim rather than lost.
    # So is a line with keys beyond the template's: the record cannot hold them.
    if (
        ts is None
        or (sev is None and raw_sev is not None)
        or type(msg) is not str
        or not _JSON_KEYS.issuperset(obj)
    ):
        record["raw"] = line
    return record


def _parse_custom(text: str, line: str) -> Optional[Record]:
    match = _CUSTOM_RE.match(text)
    if match is None:
        return None
    day, clock, host, facility, sev_name, app, pid, msg = match.groups()
    sev = SEVERITY_BY_NAME.get(sev_name)
    if sev is None:
        sev = SEVERITY_BY_NAME.get(sev_name.lower())
        if sev is None:
            return None
    if not _date_ok(day):
        # The line says its severity; only its date is impossible (a Pi without RTC).
        return _raw_record(line, facility.lower(), sev)
    ts = f"{day}T{clock}+00:00"
    if app is None:
        app, pid, msg = _bare_tag(msg)
    return _tagged(FORMAT_CUSTOM, ts, host, facility.lower(), sev, app, pid, _strip1(msg), True)


def _parse_file(text: str) -> Optional[Record]:
    match = _FILE_RE.match(text)
    if match is None:
        return None
    day, clock, fraction, offset, host, app, pid, msg = match.groups()
    ts = _rfc3339(day, clock, fraction, offset)
    if ts is None:
        return None
    if app is None:
        app, pid, msg = _bare_tag(msg)
    return _tagged(FORMAT_FILE, ts, host, None, None, app, pid, _strip1(msg), False)


def _pri(value: Optional[str]) -> tuple[Optional[str], Optional[int], bool]:
    if value is None:
        return None, None, True
    pri = int(value)
    if pri > 191:
        return None, None, False
    return FACILITY_NAMES[pri >> 3], pri & 7, True


def _parse_5424(text: str) -> Optional[Record]:
    match = _RFC5424_RE.match(text)
    if match is None:
        return None
    pri, raw_ts, host, app, procid, msgid, sd, msg = match.groups()
    facility, sev, ok = _pri(pri)
    if not ok:
        return None
    ts = None
    if raw_ts != "-":
        ts_match = _RFC3339_RE.match(raw_ts)
        if ts_match is None or raw_ts[10] == " ":
            return None
        ts = _rfc3339(*ts_match.groups())
        if ts is None:
            return None
    if msg is None:
        msg = ""
    elif msg[:1] == "\ufeff":
        msg = msg[1:]
    record = _tagged(
        FORMAT_RFC5424,
        ts,
        None if host == "-" else host,
        facility,
        sev,
        None if app == "-" else app,
        procid,
        msg,  # the separator space was taken by the pattern: nothing to strip
        False,
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
    pri, mon, day, clock, rest = match.groups()
    facility, sev, ok = _pri(pri)
    if not ok:
        return None
    day_text = _day_for(mon, day, ref or datetime.now(UTC))
    if day_text is None:
        return None
    host, app, pid, msg = _host_tag(rest)
    ts = f"{day_text}T{clock}+00:00"
    return _tagged(FORMAT_RFC3164, ts, host, facility, sev, app, pid, msg, True)


def _host_tag(rest: str) -> tuple[Optional[str], Optional[str], Optional[str], str]:
    """RFC 3164's ``HOSTNAME TAG MSG`` after the timestamp, as ``(host, app, pid, msg)``."""
    host, _, tail = rest.partition(" ")
    if not host or host[-1] == ":" or "[" in host:
        if host[:1] == "[" and host[-1] == "]" and _is_address(host[1:-1]):
            host = host[1:-1]  # `[2001:db8::1]`: an address literal, kept without brackets
        else:
            host, tail = None, rest  # no HOSTNAME field: the tag follows the time
    app, pid, msg = _TAG_RE.match(tail).groups()  # always matches: every part is optional
    if app is None:
        app, pid, msg = _bare_tag(msg)
    return host, app, pid, _strip1(msg)


def _bare_tag(msg: str) -> tuple[Optional[str], Optional[str], str]:
    """``app[pid] msg``: a tag without its colon; only asked when no tag was found."""
    match = _BARE_TAG_RE.match(msg)
    return (None, None, msg) if match is None else match.groups()


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


_days: dict[tuple[datetime, str, str], Optional[str]] = {}


def _day_for(mon: str, day: str, ref: datetime) -> Optional[str]:
    """RFC 3164 has no year: the batch's, or the one before when that would put the
    line more than two days after the batch (December lines in January).

    Returns ``YYYY-MM-DD``; cached, since a batch's lines share a few days.
    """
    key = (ref, mon, day)
    if key in _days:
        return _days[key]
    ref_day = ref.astimezone(UTC).date()
    found = None
    for year in (ref_day.year, ref_day.year - 1):
        try:
            candidate = date(year, _MONTHS[mon], int(day))
        except ValueError:
            continue
        if candidate <= ref_day + timedelta(days=2):
            found = candidate.isoformat()
            break
    if len(_days) > 4096:
        _days.clear()
    _days[key] = found
    return found


def _parse_lenient(text: str, line: str, ref: Optional[datetime]) -> Record:
    """The variants (module docstring), for a line no format took; raw if none fits."""
    first = text[:1]
    if first == "<":
        match = _PRI_RE.match(text)
        if match is None or int(match[1]) > 191:
            return _raw_record(line)
        pri = int(match[1])
        facility, sev = FACILITY_NAMES[pri >> 3], pri & 7
        after = text[match.end() :]
        body = after.lstrip(" ")
        record = None
        if "0" <= body[:1] <= "9":
            record = _iso_lenient(body, facility, sev)
        if record is None:
            record = _bsd_lenient(body, facility, sev, ref)
        if record is not None:
            return record
        if _VERSION_RE.match(after):
            # It says RFC 5424 and is not: raw, since no field after the PRI can be
            # trusted, but the PRI itself is well-formed and carries the severity.
            return _raw_record(line, facility, sev)
        return _pri_only(body, line, facility, sev)
    if (text[3:4] == " " or text[4:5] == " ") and first.isascii() and first.isalnum():
        record = _bsd_lenient(text, None, None, ref)  # `Mmm ` or `YYYY ` first
        if record is not None:
            return record
    return _raw_record(line)


def _iso_lenient(body: str, facility: str, sev: int) -> Optional[Record]:
    match = _ISO_LOOSE_RE.match(body)
    if match is None:
        return None
    day, clock, fraction, offset, rest = match.groups()
    if not _date_ok(day):
        return None
    ts = f"{day}T{clock}.{fraction}" if fraction else f"{day}T{clock}"
    assumed = offset is None
    if assumed or offset == "Z" or offset == "z":
        offset = "+00:00"
    elif len(offset) == 5:
        offset = f"{offset[:3]}:{offset[3:]}"
    host, app, pid, msg = (None, None, None, "") if rest is None else _host_tag(rest)
    return _tagged(FORMAT_RFC3164, ts + offset, host, facility, sev, app, pid, msg, assumed)


def _bsd_lenient(
    text: str, facility: Optional[str], sev: Optional[int], ref: Optional[datetime]
) -> Optional[Record]:
    match = _BSD_LOOSE_RE.match(text)
    if match is None:
        return None
    year_first, mon, day, year_after, clock, fraction, rest = match.groups()
    month = _MONTH_BY_LOWER.get(mon.lower())
    if month is None or (year_first and year_after):
        return None
    year = year_first or year_after
    if year is None:
        day_text = _day_for(month, day, ref or datetime.now(UTC))
        if day_text is None:
            return None
    else:
        try:
            day_text = date(int(year), _MONTHS[month], int(day)).isoformat()
        except ValueError:
            return None
    ts = f"{day_text}T{clock}.{fraction}+00:00" if fraction else f"{day_text}T{clock}+00:00"
    host, app, pid, msg = (None, None, None, "") if rest is None else _host_tag(rest)
    return _tagged(FORMAT_RFC3164, ts, host, facility, sev, app, pid, msg, True)


def _pri_only(body: str, line: str, facility: str, sev: int) -> Record:
    """A PRI and no header that parses: the severity is known, so keep it, and the line."""
    app, pid, msg = _TAG_RE.match(body).groups()
    if app is None:
        app, pid, msg = _bare_tag(msg)
    if app is not None and not app[0].isalpha():  # `2026-13-45T00:...` is no program name
        app, pid, msg = None, None, body
    record = _tagged(FORMAT_RFC3164, None, None, facility, sev, app, pid, _strip1(msg), False)
    record["raw"] = line
    return record


def is_alerting(record: Record, threshold: int) -> bool:
    """True when the line's severity is ``threshold`` or worse (a lower number)."""
    num = record.get("severity_num")
    return num is not None and num <= threshold
