"""The project's rsyslog.d snippet with its paths filled in, for a private rsyslogd.

The demo, the tests and the benchmarks run a real `rsyslogd -n` with
`rsyslog.d/60-omprog-forwarder.conf` as shipped: only the named parameters
(`binary=`, `queue.spoolDirectory=`, `output=`, or any action setting a case
changes) are replaced, each of which must exist, so a renamed setting fails
loudly instead of silently testing another config.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Optional

from devstack.template import REPO_ROOT

SNIPPET = os.path.join(REPO_ROOT, "rsyslog.d", "60-omprog-forwarder.conf")


def render_snippet(params: Mapping[str, str], text: Optional[str] = None) -> str:
    """The snippet with `name="value"` parameters replaced (each must be in it)."""
    if text is None:
        with open(SNIPPET, encoding="utf-8") as fh:
            text = fh.read()
    for name, value in params.items():
        pattern = re.compile(r"(?<![\w.])" + re.escape(name) + r'="[^"]*"')
        if not pattern.search(text):
            raise KeyError(f"parameter {name} not in {SNIPPET}")
        replacement = f'{name}="{value}"'
        text = pattern.sub(lambda _m, r=replacement: r, text, count=1)
    return text
