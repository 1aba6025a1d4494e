"""parsing.py: every format the function reads, the broken lines it keeps, "never raises"."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import archive
import parsing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from severity import FACILITY_NAMES, SEVERITY_NAMES, severity_number

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
REF = datetime(2026, 11, 26, 23, 10, tzinfo=timezone.utc)
FORMATS = {"json", "customlogformat", "rsyslog-file", "rfc5424", "rfc3164", "raw"}

HOWTO_ERROR = (
    "2024-07-06 13:50:33 raspberrypi daemon.error: dhcpcd[727]: wlan0: Router Advertisement "
    "from 1234abcdeaaaaaaaaaa"
)

# (line, expected subset of the record)
CASES = [
    pytest.param(
        '{"ts":"2026-11-26T23:14:04.534728+00:00", "host":"vm", "facility":"daemon", "severity":3, '
        '"app":"myapp", "pid":"-", "msg":" hello", "uuid":"047575B75C324071BA7A076AEABC995F"}',
        {
            "format": "json",
            "ts": "2026-11-26T23:14:04.534728+00:00",
            "host": "vm",
            "facility": "daemon",
            "severity": "err",
            "severity_num": 3,
            "app": "myapp",
            "pid": None,
            "msg": "hello",
            "uuid": "047575B75C324071BA7A076AEABC995F",
        },
        id="json-template-number-severity-nil-pid",
    ),
    pytest.param(
        '{"ts":"2026-11-26T23:14:04Z","host":"vm","facility":"kern","severity":"warn","app":"kernel",'
        '"pid":"12","msg":"x","uuid":"U"}',
        {
            "format": "json",
            "ts": "2026-11-26T23:14:04+00:00",
            "severity": "warning",
            "severity_num": 4,
            "pid": "12",
        },
        id="json-template-Z-and-alias-name",
    ),
    pytest.param(
        '{"ts":"2026-11-26 23:14:04","host":"vm","severity":"info","msg":"no zone"}',
        {
            "format": "json",
            "ts": "2026-11-26T23:14:04+00:00",
            "ts_assumed_utc": True,
            "severity": "info",
            "facility": None,
            "app": None,
        },
        id="json-template-time-without-zone",
    ),
    pytest.param(
        '{"ts":"yesterday","host":"vm","severity":"loud","msg":"kept anyway"}',
        {
            "format": "json",
            "ts": None,
            "severity": None,
            "msg": "kept anyway",
            "raw": '{"ts":"yesterday","host":"vm","severity":"loud","msg":"kept anyway"}',
        },
        id="json-template-bad-ts-and-severity-keep-raw",
    ),
    pytest.param(
        HOWTO_ERROR,
        {
            "format": "customlogformat",
            "ts": "2024-07-06T13:50:33+00:00",
            "ts_assumed_utc": True,
            "host": "raspberrypi",
            "facility": "daemon",
            "severity": "err",
            "severity_num": 3,
            "app": "dhcpcd",
            "pid": "727",
            "msg": "wlan0: Router Advertisement from 1234abcdeaaaaaaaaaa",
        },
        id="howto-space-error-alias",
    ),
    pytest.param(
        "2024-07-06 13:50:33 raspberrypi daemon.critical: dhcpcd[727]: wlan0: adding address",
        {"format": "customlogformat", "severity": "crit", "severity_num": 2},
        id="howto-critical-alias",
    ),
    pytest.param(
        "2026-11-26T23:14:04 vm daemon.emergency: app: x",
        {"format": "customlogformat", "severity": "emerg", "severity_num": 0},
        id="howto-emergency-alias",
    ),
    pytest.param(
        "2026-11-26T23:14:04 vm kern.panic: kernel: x",
        {"format": "customlogformat", "severity": "emerg", "facility": "kern", "app": "kernel"},
        id="howto-panic-alias",
    ),
    pytest.param(
        "2026-11-26T23:14:04 vm user.notice: no tag here at all",
        {"format": "customlogformat", "app": None, "pid": None, "msg": "no tag here at all"},
        id="howto-without-tag",
    ),
    pytest.param(
        "2026-11-26T23:14:04 vm daemon.chatty: app: unknown severity word",
        {"format": "raw", "severity": None},
        id="howto-unknown-severity-is-raw",
    ),
    # Raw (the date cannot be trusted, so no field is), but the severity the line names
    # is kept: an `err` from a Pi whose clock is wrong must still page someone.
    pytest.param(
        "2026-02-30 10:00:00 vm daemon.err: app: impossible date",
        {
            "format": "raw",
            "ts": None,
            "facility": "daemon",
            "severity": "err",
            "severity_num": 3,
            "msg": None,
            "raw": "2026-02-30 10:00:00 vm daemon.err: app: impossible date",
        },
        id="howto-impossible-date-is-raw",
    ),
    pytest.param(
        "2026-11-26T23:14:03.534930+01:00 vm sshd[123]: Accepted publickey for pi",
        {
            "format": "rsyslog-file",
            "ts": "2026-11-26T23:14:03.534930+01:00",
            "host": "vm",
            "app": "sshd",
            "pid": "123",
            "msg": "Accepted publickey for pi",
            "severity": None,
        },
        id="rsyslog-file-format",
    ),
    pytest.param(
        "2026-11-26T23:14:03Z vm kernel: [    1.000] boot",
        {"format": "rsyslog-file", "ts": "2026-11-26T23:14:03+00:00", "msg": "[    1.000] boot"},
        id="rsyslog-file-format-Z",
    ),
    pytest.param(
        "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 "
        '[exampleSDID@32473 iut="3" eventSource="Application"] \ufeff\'su root\' failed',
        {
            "format": "rfc5424",
            "ts": "2003-10-11T22:14:15.003+00:00",
            "facility": "auth",
            "severity": "crit",
            "severity_num": 2,
            "host": "mymachine.example.com",
            "app": "su",
            "pid": None,
            "msgid": "ID47",
            "msg": "'su root' failed",
            "sd": '[exampleSDID@32473 iut="3" eventSource="Application"]',
        },
        id="rfc5424-with-sd-and-bom",
    ),
    pytest.param(
        "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time",
        {
            "format": "rfc5424",
            "facility": "local4",
            "severity": "notice",
            "pid": "8710",
            "ts": "2003-08-24T05:14:15.000003-07:00",
            "msg": "%% It's time",
        },
        id="rfc5424-rfc-example-2",
    ),
    pytest.param(
        "<13>1 - - - - - -",
        {
            "format": "rfc5424",
            "ts": None,
            "host": None,
            "app": None,
            "msg": "",
            "severity": "notice",
            "facility": "user",
        },
        id="rfc5424-all-nil",
    ),
    pytest.param(
        "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
        {
            "format": "rfc3164",
            "ts": "2026-10-11T22:14:15+00:00",
            "ts_assumed_utc": True,
            "host": "mymachine",
            "facility": "auth",
            "severity": "crit",
            "app": "su",
            "msg": "'su root' failed for lonvick on /dev/pts/8",
        },
        id="rfc3164-with-pri",
    ),
    pytest.param(
        "Dec 31 23:59:59 gw01 CRON[4242]: (root) CMD (run-parts)",
        {
            "format": "rfc3164",
            "ts": "2025-12-31T23:59:59+00:00",
            "host": "gw01",
            "app": "CRON",
            "pid": "4242",
            "severity": None,
        },
        id="rfc3164-traditional-file-year-before",
    ),
    pytest.param(
        "<13>Nov  3 01:02:03 myapp[9]: no hostname field",
        {
            "format": "rfc3164",
            "host": None,
            "app": "myapp",
            "pid": "9",
            "ts": "2026-11-03T01:02:03+00:00",
            "msg": "no hostname field",
        },
        id="rfc3164-without-host",
    ),
    pytest.param("", {"format": "raw", "raw": "", "severity": None}, id="broken-empty"),
    pytest.param("garbage", {"format": "raw", "raw": "garbage"}, id="broken-one-word"),
    pytest.param("a b c", {"format": "raw", "raw": "a b c"}, id="broken-too-few-fields"),
    pytest.param('{"ts": "2026-11-26', {"format": "raw"}, id="broken-truncated-json"),
    pytest.param("[1, 2, 3]", {"format": "raw"}, id="broken-json-array"),
    pytest.param('{"a": 1}', {"format": "raw"}, id="broken-json-other-object"),
    pytest.param(
        "<999>Oct 11 22:14:15 host app: x", {"format": "raw"}, id="broken-pri-out-of-range"
    ),
    # Says RFC 5424 and breaks it (a space in the timestamp): raw, since no field after
    # the PRI can be trusted, but the PRI is well-formed: auth.crit is kept.
    pytest.param(
        "<34>1 2003-10-11 22:14:15Z h a p m - x",
        {
            "format": "raw",
            "ts": None,
            "facility": "auth",
            "severity": "crit",
            "severity_num": 2,
            "raw": "<34>1 2003-10-11 22:14:15Z h a p m - x",
        },
        id="broken-5424-space-ts",
    ),
    pytest.param(
        "Feb 30 10:00:00 host app: x", {"format": "raw"}, id="broken-3164-impossible-date"
    ),
    pytest.param(
        "\x00\x01\x02", {"format": "raw", "raw": "\x00\x01\x02"}, id="broken-control-chars"
    ),
    pytest.param("[" * 100_000, {"format": "raw"}, id="broken-deep-brackets"),
    pytest.param("{" * 100_000, {"format": "raw"}, id="broken-deep-json-recursion"),
]


@pytest.mark.parametrize(("line", "expected"), CASES)
def test_parse_line_table(line: str, expected: dict) -> None:
    record = parsing.parse_line(line, REF)
    assert {key: record.get(key, "<absent>") for key in expected} == expected
    assert "parse_error" not in record


TEMPLATE_LINE = (
    '{"ts":"2026-11-26T23:14:04.534728+00:00","host":"vm","facility":"daemon","severity":3,'
    '"app":"myapp","pid":"12","msg":" boom","uuid":"U1"'
)


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(TEMPLATE_LINE + ',"extra":"kept?"}', id="extra-string-key"),
        pytest.param(TEMPLATE_LINE + ',"tags":["a","b"]}', id="extra-list-key"),
        pytest.param(
            '{"ts":"2026-11-26T23:14:04+00:00","hostname":"vm","severity":"error","msg":"m"}',
            id="misspelled-host-key",
        ),
    ],
)
def test_json_line_with_keys_beyond_the_template_keeps_the_line_in_raw(line: str) -> None:
    record = parsing.parse_line(line, REF)
    assert record["format"] == "json" and record["severity"] == "err"
    assert record["raw"] == line  # nothing of the line is lost
    assert record["ts"].startswith("2026-11-26T23:14:04")


def test_json_line_with_only_template_keys_has_no_raw() -> None:
    record = parsing.parse_line(TEMPLATE_LINE + "}", REF)
    assert (record["format"], record["msg"], record["pid"]) == ("json", "boom", "12")
    assert "raw" not in record


def test_trailing_newline_is_not_part_of_the_message() -> None:
    record = parsing.parse_line(HOWTO_ERROR + "\r\n", REF)
    assert record["msg"].endswith("aaaaaaaaaa")


def test_a_raw_record_keeps_the_line_exactly_including_newline() -> None:
    assert parsing.parse_line("not a log\n", REF)["raw"] == "not a log\n"


def test_real_rsyslog_output_of_both_templates_agrees() -> None:
    """The same four rsyslog 8.2302 messages, once per template, give the same fields."""
    json_lines = (FIXTURES / "rsyslog-8.2302-json-template.jsonl").read_text().splitlines()
    custom_lines = (FIXTURES / "rsyslog-8.2302-customlogformat.log").read_text().splitlines()
    assert len(json_lines) == len(custom_lines) == 4
    for j_line, c_line in zip(json_lines, custom_lines):
        j, c = parsing.parse_line(j_line, REF), parsing.parse_line(c_line, REF)
        assert (j["format"], c["format"]) == ("json", "customlogformat")
        for key in ("host", "facility", "severity", "severity_num", "app", "pid", "msg"):
            assert j[key] == c[key], key
        assert j["ts"][:19] == c["ts"][:19]
        assert "raw" not in j and "raw" not in c
    err = parsing.parse_line(json_lines[1], REF)
    assert err["severity"] == "err" and err["msg"] == 'hello "quoted" <!channel> & tab#011x'


@pytest.mark.parametrize(
    ("value", "number"),
    [
        ("emerg", 0),
        ("panic", 0),
        ("emergency", 0),
        ("alert", 1),
        ("crit", 2),
        ("critical", 2),
        ("err", 3),
        ("error", 3),
        ("ERROR", 3),
        ("warning", 4),
        ("warn", 4),
        ("notice", 5),
        ("info", 6),
        ("debug", 7),
        (3, 3),
        ("3", 3),
        (8, None),
        ("8", None),
        ("loud", None),
        (None, None),
        (True, None),
        (-1, None),
        (2.0, None),
        ("\u00b9", None),  # superscript one: str.isdigit() says yes
        ("\u0663", None),  # Arabic-Indic three
        ("33", None),
    ],
    ids=lambda v: repr(v),
)
def test_severity_names_and_aliases(value: object, number: object) -> None:
    assert severity_number(value) == number


def test_rfc3164_year_comes_from_the_batch_not_the_clock() -> None:
    january = datetime(2027, 1, 2, 0, 5, tzinfo=timezone.utc)
    assert parsing.parse_line("Dec 31 23:59:59 h a: x", january)["ts"].startswith("2026-12-31")
    assert parsing.parse_line("Jan  1 00:00:01 h a: x", january)["ts"].startswith("2027-01-01")
    leap = datetime(2028, 3, 1, tzinfo=timezone.utc)
    assert parsing.parse_line("Feb 29 12:00:00 h a: x", leap)["ts"].startswith("2028-02-29")


# --- properties ------------------------------------------------------------------------------

PREFIXES = st.sampled_from(
    [
        "",
        "{",
        '{"ts":"2026-11-26T23:14:04Z","msg":',
        "2026-11-26 23:14:04 host daemon.err: ",
        "2026-11-26T23:14:04.5+01:00 host ",
        "<34>1 2026-11-26T23:14:04Z h a p m ",
        '<34>1 - - - - - [x a="',
        "<34>Oct 11 22:14:15 ",
        "Dec  1 22:14:15 host ",
    ]
)


def _any_case(word: str) -> st.SearchStrategy[str]:
    flips = st.lists(st.booleans(), min_size=len(word), max_size=len(word))
    return flips.map(lambda f: "".join(c.swapcase() if s else c for c, s in zip(word, f)))


def _two_digits(low: int, high: int, worst: int) -> st.SearchStrategy[str]:
    """Half the time in ``low..high`` (valid), else anywhere in ``0..worst``."""
    return st.one_of(st.integers(low, high), st.integers(0, worst)).map("{:02d}".format)


# Near-syslog lines, for the lenient path: every part sometimes valid, sometimes just off.
MONTH_WORDS = st.sampled_from(
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec", "Foo"]
).flatmap(_any_case)
CLOCK = st.builds(
    "{}:{}:{}".format, _two_digits(0, 23, 24), _two_digits(0, 59, 60), _two_digits(0, 59, 60)
)
FRACTION = st.one_of(
    st.just(""),
    st.builds(str.__add__, st.sampled_from(".,"), st.text("0123456789", min_size=1, max_size=10)),
)
YEAR = st.sampled_from(["", "", "1969 ", "2026 ", "2101 "])
DAY = st.one_of(st.integers(1, 28), st.integers(0, 32)).flatmap(
    lambda d: st.sampled_from([f"{d}", f"{d:02d}", f"{d:2d}"])
)
BSD_TIME = st.builds(
    "{}{}{}{} {}{}{}{}".format,
    YEAR,
    MONTH_WORDS,
    st.sampled_from([" ", "  "]),
    DAY,
    YEAR,
    CLOCK,
    FRACTION,
    st.sampled_from(["", ":"]),
)
ISO_TIME = st.builds(
    "{}-{}-{}{}{}{}{}".format,
    st.integers(1969, 2101).map(str),
    _two_digits(1, 12, 13),
    _two_digits(1, 28, 32),
    st.sampled_from("Tt "),
    CLOCK,
    FRACTION,
    st.sampled_from(["", "Z", "z", "+01:00", "-0530", "+24:00", "+1"]),
)
HOSTS = st.one_of(
    st.sampled_from(
        ["pi", "pi:", "gw01.lan", "192.0.2.1", "[192.0.2.1]", "2001:db8::1", "[2001:db8::1]"]
        + ["[2001:db8::zz]", "[ERROR]", "-", "2026", ""]
    ),
    st.text("abz09.-_:[]", max_size=12),
)
TAGS = st.builds(
    "{}{}{}".format,
    st.text("abSD_-./%09", max_size=10),
    st.sampled_from(["", "[42]", "[]", "[4 2]", "["]),
    st.sampled_from(["", ":"]),
)
SYSLOG_BODIES = st.builds(
    "{}{} {} {} {}".format,
    st.sampled_from(["", " ", "  "]),
    st.one_of(BSD_TIME, ISO_TIME),
    HOSTS,
    TAGS,
    st.text(max_size=20),
)
PRIS = st.one_of(
    st.just(""),
    st.integers(0, 999).map("<{}>".format),
    st.integers(0, 191).map("<{:03d}>".format),
    st.sampled_from(["<", "<>", "<-1>", "< 13>"]),
)
NEAR_SYSLOG = st.builds(str.__add__, PRIS, SYSLOG_BODIES)

LINES = st.one_of(
    st.text(),
    st.builds(lambda p, t: p + t, PREFIXES, st.text()),
    NEAR_SYSLOG,
    st.builds(
        lambda obj: json.dumps(obj),
        st.fixed_dictionaries(
            {
                "ts": st.one_of(st.text(), st.none(), st.integers()),
                "msg": st.one_of(st.text(), st.none(), st.integers()),
            },
            optional={
                "severity": st.one_of(st.integers(-2, 10), st.text(max_size=10), st.none()),
                "facility": st.one_of(st.integers(-2, 30), st.text(max_size=10)),
                "host": st.one_of(st.text(), st.integers(), st.lists(st.integers(), max_size=2)),
                "pid": st.one_of(st.text(max_size=5), st.integers()),
                "app": st.text(),
                "uuid": st.text(),
            },
        ),
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(LINES)
def test_parse_line_never_raises_never_drops_and_encodes_losslessly(line: str) -> None:
    record = parsing.parse_line(line, REF)
    assert "parse_error" not in record  # the safety net caught nothing: no parser bug
    assert list(record)[: len(parsing.RECORD_FIELDS)] == list(parsing.RECORD_FIELDS)
    assert record["format"] in FORMATS
    if record["format"] == "raw":
        # A raw record keeps the line, and has a severity only where the line itself
        # names one in a part that parsed: a valid PRI, or the how-to's `facility.severity`
        # (rule "keep every line's severity whenever the line carries one").
        assert record["raw"] == line
        if record["severity"] is not None:
            assert record["severity_num"] == severity_carried(line), line
    num = record["severity_num"]
    assert num is None or record["severity"] == SEVERITY_NAMES[num]
    for key in ("ts", "host", "facility", "app", "pid", "msg", "uuid"):
        assert record[key] is None or isinstance(record[key], str)
    if record["ts"] is not None:
        assert datetime.fromisoformat(record["ts"]).tzinfo is not None
    # The hand-written encoder says exactly what the generic one would.
    line_out = archive.encode_record(record, archive.record_tail("dev-1", "batch.1"))
    assert json.loads(line_out) == {**record, "device_id": "dev-1", "batch_id": "batch.1"}
    assert line_out.isascii() and "\n" not in line_out


RFC5424_VERSION = re.compile(r"[1-9]\d? ")
HOWTO_HEAD = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d \S+ [A-Za-z0-9_-]+\.([A-Za-z]+): ")


def severity_carried(line: str) -> object:
    """The severity a line names itself, read independently of parsing.py."""
    pri = re.match(r"<(\d{1,3})>", line)
    if pri and int(pri[1]) <= 191:
        return int(pri[1]) & 7
    head = HOWTO_HEAD.match(line)
    return severity_number(head[1]) if head else "no severity in the line"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pri=st.integers(0, 191),
    leading_zeros=st.booleans(),
    body=st.one_of(st.text(), SYSLOG_BODIES, st.builds(str.__add__, PREFIXES, st.text())),
)
def test_a_line_with_a_valid_pri_keeps_its_facility_and_severity(
    pri: int, leading_zeros: bool, body: str
) -> None:
    line = (f"<{pri:03d}>" if leading_zeros else f"<{pri}>") + body
    record = parsing.parse_line(line, REF)
    assert "parse_error" not in record
    assert (record["facility"], record["severity_num"]) == (FACILITY_NAMES[pri >> 3], pri & 7)
    assert record["format"] in ("rfc5424", "rfc3164", "raw")
    if record["format"] == "raw":
        # Only a line that starts as RFC 5424 and then breaks it (broken-5424-space-ts).
        assert RFC5424_VERSION.match(body) and record["raw"] == line and record["ts"] is None
    if record["ts"] is None and record["format"] == "rfc3164":
        assert record["raw"] == line  # the PRI was all that parsed: the line is kept too


def test_parse_line_survives_a_non_string() -> None:
    """A caller bug (not reachable from the handler) still yields a record, flagged."""
    record = parsing.parse_line(None, REF)  # type: ignore[arg-type]
    assert record["format"] == "raw" and record["parse_error"] == "AttributeError"
