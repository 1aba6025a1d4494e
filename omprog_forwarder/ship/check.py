"""`omprog-forwarder check`: the device tests itself, one step a line.

    ✓ config       the file loads, every shipper key is there, and it is private
    ✓ spool        the spool folder can be created and written
    ✓ rsyslog      the snippet is in place and `rsyslogd -N1` accepts the config
    ✓ login        Cognito accepts the device's password (a fresh SRP login)
    ✓ credentials  the identity pool trades the tokens for AWS credentials
    ✓ api          a signed POST of an empty batch is answered 200, "accepted": 0

The first failing step prints ✗ with the reason and ends the check (exit 1):
each step needs the ones before it. A step that cannot apply here (no
rsyslogd installed) prints – and the reason. Nothing secret is printed: the
errors of the shipper's modules are already free of passwords, secrets,
tokens and keys, and this module prints nothing else of the config but
names, ids and paths.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any, Callable, Optional, TextIO

from omprog_forwarder.config import Config
from omprog_forwarder.errors import CheckFailed, ForwarderError
from omprog_forwarder.spool import CREDENTIALS_CACHE, CREDENTIALS_LOCK, Spool, random_hex

RSYSLOG_CONF = "/etc/rsyslog.conf"
RSYSLOG_SNIPPET = "/etc/rsyslog.d/60-omprog-forwarder.conf"
_BINARY_RE = re.compile(r'binary\s*=\s*"([^"]*)"')
OK_MARK, FAIL_MARK, SKIP_MARK = "✓", "✗", "–"
MAX_REASON = 400


class _Failed(Exception):
    """Internal: the current step failed with this reason."""


class _Skipped(Exception):
    """Internal: the current step does not apply here, for this reason."""


def _marks(out: TextIO) -> tuple[str, str, str]:
    """✓ ✗ – where the terminal can show them, else ASCII."""
    try:
        (OK_MARK + FAIL_MARK + SKIP_MARK).encode(getattr(out, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return "OK", "FAIL", "-"
    return OK_MARK, FAIL_MARK, SKIP_MARK


class Check:
    """The steps, in order; every side effect is a parameter (tests run it against moto)."""

    def __init__(
        self,
        cfg: Config,
        config_path: Optional[str],
        *,
        rsyslog_conf: str = RSYSLOG_CONF,
        rsyslog_snippet: str = RSYSLOG_SNIPPET,
        use_rsyslog: bool = True,
        which: Optional[Callable[[str], Optional[str]]] = None,
        auth: Any = None,
        transport: Any = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.rsyslog_conf = rsyslog_conf
        self.rsyslog_snippet = rsyslog_snippet
        self.use_rsyslog = use_rsyslog
        self.which = which or shutil.which
        self.wall = wall
        self.spool = Spool(cfg.spool_dir)
        self._auth = auth
        self._transport = transport
        self._creds: Any = None

    def steps(self) -> Iterator[tuple[str, Callable[[], str]]]:
        yield "config", self.check_config
        yield "spool", self.check_spool
        yield "rsyslog", self.check_rsyslog
        yield "login", self.check_login
        yield "credentials", self.check_credentials
        yield "api", self.check_api

    def run(self, out: Optional[TextIO] = None) -> int:
        out = out or sys.stdout
        ok, fail, skip = _marks(out)
        for name, step in self.steps():
            try:
                mark, detail = ok, step()
            except _Skipped as exc:
                mark, detail = skip, str(exc)
            except (_Failed, ForwarderError) as exc:
                reason = " ".join(str(exc).split())  # one line, whatever a server answered
                print(f"{fail} {name:<12} {reason[:MAX_REASON]}", file=out, flush=True)
                return CheckFailed.exit_code
            print(f"{mark} {name:<12} {detail}", file=out, flush=True)
        return 0

    # -- the steps --------------------------------------------------------

    def check_config(self) -> str:
        from omprog_forwarder.ship.shipper import check_config

        check_config(self.cfg)
        where = "environment and defaults"
        if self.config_path:
            mode = stat.S_IMODE(os.stat(self.config_path).st_mode)
            if mode & 0o077:
                raise _Failed(
                    f"{self.config_path} holds the device's password but has mode {mode:04o}; "
                    f"chmod 600 {self.config_path}"
                )
            where = f"{self.config_path} (mode {mode:04o})"
        return f"{where}: device {self.cfg.effective_device_id()}, API {self.cfg.endpoint_url}"

    def check_spool(self) -> str:
        self.spool.create()
        probe = self.spool.state_path(f"check-{random_hex(4)}.tmp")
        try:
            with open(probe, "wb") as fh:
                fh.write(b"check\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise _Failed(f"cannot write in {self.spool.state_dir}: {exc.strerror}") from None
        finally:
            try:
                os.unlink(probe)
            except FileNotFoundError:
                pass
        ready, dead = self.spool.ready_batches(), self.spool.dead_batches()
        return f"{self.spool.root} writable ({len(ready)} batches ready, {len(dead)} dead)"

    def check_rsyslog(self) -> str:
        if not self.use_rsyslog:
            raise _Skipped("not checked (--no-rsyslog: this device feeds `run` another way)")
        rsyslogd = self.which("rsyslogd")
        if rsyslogd is None:
            raise _Skipped("rsyslogd is not installed here (apt-get install rsyslog)")
        try:
            with open(self.rsyslog_snippet, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError as exc:
            raise _Failed(
                f"no rsyslog snippet at {self.rsyslog_snippet} ({exc.strerror}): copy "
                "rsyslog.d/60-omprog-forwarder.conf there"
            ) from None
        binaries = [b for b in _BINARY_RE.findall(text) if " run" in b]
        if not binaries:
            raise _Failed(f"{self.rsyslog_snippet} has no action whose binary= runs `... run`")
        if self.config_path and not any(self.config_path in b for b in binaries):
            raise _Failed(
                f"{self.rsyslog_snippet} starts `{binaries[0]}`, which does not read "
                f"{self.config_path}"
            )
        try:
            proc = subprocess.run(
                [rsyslogd, "-N1", "-f", self.rsyslog_conf],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise _Failed(f"rsyslogd -N1 could not run: {exc}") from None
        if proc.returncode != 0:
            said = " ".join((proc.stderr or proc.stdout).split())[-300:]
            raise _Failed(f"rsyslogd -N1 -f {self.rsyslog_conf} failed: {said}")
        return f"{self.rsyslog_snippet} in place; rsyslogd -N1 -f {self.rsyslog_conf} is happy"

    def auth(self) -> Any:
        if self._auth is None:
            from omprog_forwarder.ship.auth import CognitoAuth

            self._auth = CognitoAuth(
                self.cfg,
                self.spool.state_path(CREDENTIALS_CACHE),
                self.spool.state_path(CREDENTIALS_LOCK),
            )
        return self._auth

    def check_login(self) -> str:
        expires = self.auth().login()
        left = max(0, int(expires - self.wall()))
        return f"Cognito accepted {self.cfg.username} (SRP); tokens valid for {left} s"

    def check_credentials(self) -> str:
        self._creds = self.auth().renew()
        left = max(0, int(self._creds.expiration - self.wall()))
        return f"identity pool gave credentials {self._creds.access_key[:4]}…, valid {left} s"

    def check_api(self) -> str:
        from omprog_forwarder.ship.transport import Transport, build_body

        transport = self._transport or Transport(
            self.cfg.endpoint_url, self.cfg.region, timeout=(10.0, self.cfg.request_timeout)
        )
        now = self.wall()
        stamp = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).isoformat()
        body = build_body(self.cfg.effective_device_id(), f"check-{random_hex(8)}", stamp, [])
        sent = transport.post(body.data, self._creds, now)
        try:
            answer = json.loads(sent.answer.decode("utf-8", "replace"))
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or answer.get("accepted") != 0:
            shown = sent.answer[:200].decode("utf-8", "replace")
            raise _Failed(f"HTTP {sent.status}, but the answer is not the Lambda's: {shown!r}")
        took = f"{sent.elapsed:.2f} s"
        return f"POST {self.cfg.endpoint_url}: HTTP {sent.status}, accepted 0 ({took})"
