"""Read the published how-to's `.env` file as a configuration layer.

A device set up from the how-to already holds its Cognito settings in a
`.env` (`AWS_REGION=...`, `AWS_PASSWORD=...`). `--env-file FILE` lets it
switch to this program without copying secrets into a second file. The
result is a layer just below the INI file (see `config.load`).

The file is read the way python-dotenv reads it, closely enough for what the
how-to writes: `KEY=VALUE` lines, an optional `export ` in front, values in
single quotes (taken literally) or double quotes (`\\"`, `\\\\`, `\\n`
unescaped), `#` comments on their own line or after an unquoted value.
Names the how-to does not define are ignored without an error, since the
same file may hold other things. A line that is not `KEY=VALUE` is skipped
with a warning naming its line number only: its text may be a secret.

On the ingest path's import list (cli imports it), so: standard library only.
"""

from __future__ import annotations

import logging
import re

from omprog_forwarder import config
from omprog_forwarder.errors import ConfigError

log = logging.getLogger(__name__)

#: The how-to's variable names and the configuration keys they feed.
HOWTO_NAMES = {
    "AWS_REGION": "region",
    "AWS_USERPOOLID": "user_pool_id",
    "AWS_CLIENTID": "client_id",
    "AWS_CLIENTSECRET": "client_secret",
    "AWS_IDPOOLID": "identity_pool_id",
    "AWS_USERNAME": "username",
    "AWS_PASSWORD": "password",
    "AWS_ENDPOINTURL": "endpoint_url",
}
_SECRET_NAMES = ("AWS_PASSWORD", "AWS_CLIENTSECRET")
_LINE_RE = re.compile(r"^\s*(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(?P<rest>.*)$")
_DQ_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t", "$": "$"}


def _unquote(rest: str) -> str:
    """The value part of a line: quoted, or unquoted up to a ` #` comment."""
    rest = rest.strip()
    if rest[:1] == "'":
        end = rest.find("'", 1)
        if end < 0:
            raise ValueError("unterminated single quote")
        return rest[1:end]
    if rest[:1] == '"':
        out = []
        i = 1
        while i < len(rest):
            ch = rest[i]
            if ch == "\\" and i + 1 < len(rest):
                nxt = rest[i + 1]
                out.append(_DQ_ESCAPES.get(nxt, "\\" + nxt))
                i += 2
                continue
            if ch == '"':
                return "".join(out)
            out.append(ch)
            i += 1
        raise ValueError("unterminated double quote")
    hash_at = rest.find(" #")
    if hash_at >= 0:
        rest = rest[:hash_at]
    return rest.strip()


def parse_env_text(text: str) -> dict[str, str]:
    """Every `NAME=VALUE` of a .env text (all names, not only the how-to's)."""
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = _LINE_RE.match(line)
        if not m:
            log.warning("env file line %d is not NAME=VALUE; skipped", number)
            continue
        try:
            values[m.group("key")] = _unquote(m.group("rest"))
        except ValueError as exc:
            log.warning("env file line %d: %s; skipped", number, exc)
    return values


def read_env_file(path: str) -> dict[str, str]:
    """The how-to's settings in `path`, as configuration keys.

    A file that holds the password or the client secret must be private
    (`config.check_private`), exactly like the INI file.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read env file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"env file {path} is not UTF-8 text") from None
    raw = parse_env_text(text)
    if any(raw.get(name) for name in _SECRET_NAMES):
        config.check_private(path)
    return {key: raw[name] for name, key in HOWTO_NAMES.items() if name in raw}
