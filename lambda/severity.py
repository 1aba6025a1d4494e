"""Syslog severity and facility names, shared by the parser, the settings and the alerts.

Senders disagree on spelling: rsyslog says ``err`` and ``crit``, the how-to's
test event says ``error`` and ``critical``, and RFC 5424/3164 only give numbers.
Everything is mapped onto one canonical name and number here, so that an
alias can never decide whether a line pages someone.
"""

from __future__ import annotations

from typing import Optional, Union

#: Canonical RFC 5424 severity names, indexed by number.
SEVERITY_NAMES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")

#: Every accepted spelling (lower case) → number. The device holds the same table
#: (``omprog_forwarder/config.py``); ``tests/test_contract.py`` keeps them equal.
SEVERITY_BY_NAME = {name: num for num, name in enumerate(SEVERITY_NAMES)}
SEVERITY_BY_NAME.update(
    {
        "error": 3,
        "critical": 2,
        "emergency": 0,
        "panic": 0,
        "warn": 4,
        "informational": 6,
    }
)

#: rsyslog's ``syslogfacility-text`` names, indexed by facility number.
FACILITY_NAMES = (
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "audit",
    "alert",
    "clock",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
)


def severity_number(value: Union[str, int, None]) -> Optional[int]:
    """Return the severity number for a name, alias, number or numeric string.

    ``None`` means "not a severity", never an exception, because the parser
    must keep going on any input.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= 7 else None
    if isinstance(value, str):
        text = value.strip().lower()
        if len(text) == 1 and "0" <= text <= "7":  # not isdigit(): "¹" is a digit too
            return int(text)
        return SEVERITY_BY_NAME.get(text)
    return None


def facility_name(value: Union[str, int, None]) -> Optional[str]:
    """Return rsyslog's facility name for a number, or the given name as it is."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return FACILITY_NAMES[value] if 0 <= value < len(FACILITY_NAMES) else str(value)
    return str(value)
