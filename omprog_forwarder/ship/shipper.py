"""`omprog-forwarder ship` and `replay`: send the sealed batches in ready/, oldest first.

One shipper per spool: `state/ship.lock` is taken with a non-blocking flock;
a second shipper finds it held and exits 0 at once (the running one re-lists
ready/ before it stops, so it also picks up what was sealed meanwhile).

Per batch: build the gzip body (transport.build_body), get credentials
(auth), POST, and act on the classified answer:

    2xx                 delete the batch, record success in state/ship.json
    transient           retry with retry.RetryPolicy until the time budget ends;
                        the batch stays in ready/
    401/403             renew the credentials once and resend; if the API still
                        refuses, stop the run (AuthError) keeping every batch
    403 clock skew      take the server's time from the response, keep the
                        offset (state/clock.json, so the next run starts
                        corrected), sign again with the corrected time
    413                 split in two (ids PARENT.1 / PARENT.2, so a resend of a
                        half is idempotent), halves written durably before the
                        parent is deleted, then sent; a single line that is
                        still too large goes to dead/
    other 4xx           move to dead/ with a .why file (status, body, time)

Nothing leaves ready/ without a 2xx except into dead/, and every batch moved
to dead/ is counted (`ship_dead_batches`, `ship_dead_lines`,
`ship_dead_<reason>`) and logged with its reason.

Exit codes of `ship` (and of `replay`, which ends with a ship):

    0    ready/ is empty (batches that went to dead/ are counted, not failures),
         or another shipper holds the lock
    75   EX_TEMPFAIL: the time budget (ship_max_seconds) ran out with batches
         left in ready/, typically during an outage; run it again later
    77   EX_NOPERM: Cognito refused the login, or the API kept refusing the
         credentials after a renewal; batches stay in ready/
    2    configuration error (a missing or bad key), or replay of an unknown batch
    1    the spool cannot be used, or an unexpected error (logged)
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import logging
import os
import random
import time
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol
from urllib.parse import urlsplit

from omprog_forwarder.config import DEVICE_ID_RE, Config
from omprog_forwarder.errors import (
    AuthError,
    BatchTooLargeError,
    ClockSkewError,
    ConfigError,
    CredentialsRejectedError,
    PermanentSendError,
    SpoolError,
    TransientSendError,
    UsageError,
)
from omprog_forwarder.ingest.dedup import note_shipped
from omprog_forwarder.ship.retry import RetryPolicy
from omprog_forwarder.spool import (
    BATCH_ID_RE,
    BATCH_SUFFIX,
    CLOCK_STATE,
    CREDENTIALS_CACHE,
    CREDENTIALS_LOCK,
    SHIP_LOCK,
    SHIP_STATE,
    Batch,
    Spool,
    try_locked,
)

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_BUDGET = 75
EXIT_AUTH = AuthError.exit_code
EXIT_FAILED = 1
#: How many times a run re-lists ready/ after releasing its lock.
RELIST_ROUNDS = 3

#: Keys the shipper cannot work without (client_secret is optional: app
#: clients without a secret exist; device_id defaults to username).
REQUIRED_KEYS = (
    "endpoint_url",
    "region",
    "user_pool_id",
    "client_id",
    "identity_pool_id",
    "username",
    "password",
)


if TYPE_CHECKING:
    from omprog_forwarder.ship.auth import Credentials
    from omprog_forwarder.ship.transport import Sent


class Auth(Protocol):
    """Where the shipper gets credentials (auth.CognitoAuth; auth.StaticAuth in benches)."""

    #: Events to add to the spool's counters as `ship_<name>` (logins, renewals, ...).
    counts: collections.Counter[str]

    def credentials(self) -> Credentials:
        """Credentials with time left, renewed when due."""
        ...

    def renew(self) -> Credentials:
        """New credentials now: the API refused the current ones."""
        ...


class Sender(Protocol):
    """How the shipper sends one body (transport.Transport)."""

    def post(self, body: bytes, creds: Credentials, sign_time: float) -> Sent:
        """Returns on a 2xx; raises a classified SendError otherwise."""
        ...


class _Stop(Exception):
    """Internal: end the run with this exit code (the reason is already logged)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def check_config(cfg: Config, need_cognito: bool = True) -> None:
    """Missing or unusable shipper keys -> ConfigError naming them."""
    keys = REQUIRED_KEYS if need_cognito else ("endpoint_url", "region")
    missing = [k for k in keys if not getattr(cfg, k)]
    if not cfg.effective_device_id() and "username" not in missing:
        missing.append("device_id")
    if missing:
        raise ConfigError(
            f"the shipper needs {', '.join(missing)}: set "
            f"{'it' if len(missing) == 1 else 'them'} in the config file, as "
            "OMPROG_FORWARDER_<KEY>, or in the how-to's .env (--env-file)"
        )
    device = cfg.effective_device_id()
    if not DEVICE_ID_RE.match(device):
        key = "device_id" if cfg.device_id else "username"
        raise ConfigError(
            f"bad value {device!r} for {key!r}: the API takes device ids of 1-128 characters "
            "A-Z a-z 0-9 . _ -, starting with a letter or digit"
        )
    url = urlsplit(cfg.endpoint_url)
    if url.scheme not in ("https", "http") or not url.netloc:
        raise ConfigError(
            f"bad value {cfg.endpoint_url!r} for 'endpoint_url': expected the API's "
            "https:// URL (the stage's invoke URL and resource path)"
        )


def _iso(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat(
        timespec="seconds"
    )


def batch_timestamp(batch: Batch) -> str:
    """The wire `timestamp`: the batch's window start, or its mtime for an odd name."""
    window = batch.window
    if window is not None:
        return window.isoformat()
    return _iso(batch.mtime)


class Shipper:
    """The loop over ready/. Every side effect is passed in; run_ship wires the real ones."""

    def __init__(
        self,
        cfg: Config,
        spool: Spool,
        *,
        auth: Optional[Auth] = None,
        transport: Optional[Sender] = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.cfg = cfg
        self.spool = spool
        self.clock = clock
        self.wall = wall
        self.sleep = sleep
        self.rand = rand
        self.offset = self._load_offset()
        if auth is None:
            from omprog_forwarder.ship.auth import CognitoAuth

            auth = CognitoAuth(
                cfg,
                spool.state_path(CREDENTIALS_CACHE),
                spool.state_path(CREDENTIALS_LOCK),
                now=self.now,
            )
        if transport is None:
            from omprog_forwarder.ship.transport import Transport

            transport = Transport(cfg.endpoint_url, cfg.region, timeout=(10.0, cfg.request_timeout))
        self.auth: Auth = auth
        self.transport: Sender = transport
        self.device_id = cfg.effective_device_id()
        self.sent_batches = 0
        self.sent_lines = 0

    # -- clock ----------------------------------------------------------

    def now(self) -> float:
        """The device's wall clock corrected by the offset learnt from the API."""
        return self.wall() + self.offset

    def _load_offset(self) -> float:
        value = self.spool.read_state(CLOCK_STATE).get("offset_seconds", 0.0)
        try:
            return float(value)
        except (TypeError, ValueError):
            return 0.0

    def _set_offset(self, server_time: float) -> None:
        old = self.offset
        self.offset = server_time - self.wall()
        log.warning(
            "the API says this host's clock is off: correcting by %+.0f s (was %+.0f s); "
            "run NTP to fix it for good",
            self.offset,
            old,
        )
        self.spool.write_state(
            CLOCK_STATE, {"offset_seconds": self.offset, "measured_at": _iso(server_time)}
        )
        self._count(ship_clock_corrections=1)

    # -- the run ----------------------------------------------------------

    def run(self) -> int:
        deadline = self.clock() + self.cfg.ship_max_seconds
        try:
            while True:
                batches = self.spool.ready_batches()
                if not batches:
                    log.info(
                        "ready/ is empty: sent %d batches (%d lines) in this run",
                        self.sent_batches,
                        self.sent_lines,
                    )
                    return EXIT_OK
                for batch in batches:
                    self._ship(batch, deadline)
        except _Stop as stop:
            return stop.code
        finally:
            self._flush_auth_counts()

    def _ship(self, batch: Batch, deadline: float, lines: Optional[list[bytes]] = None) -> None:
        if self.clock() >= deadline:
            left = len(self.spool.ready_batches())
            log.warning(
                "time budget of %.0f s spent with %d batches left in ready/; "
                "the next run continues",
                self.cfg.ship_max_seconds,
                left,
            )
            raise _Stop(EXIT_BUDGET)
        if lines is None:
            try:
                lines = batch.read_lines()
            except FileNotFoundError:
                return  # gone meanwhile (split by an earlier run, or replayed twice)
            except SpoolError as exc:
                self._dead(batch, "damaged", None, "", str(exc))
                return
        from omprog_forwarder.ship.transport import build_body

        body = build_body(self.device_id, batch.batch_id, batch_timestamp(batch), lines)
        if body.invalid_utf8:
            log.warning(
                "batch %s: %d lines are not valid UTF-8; bad bytes sent as U+FFFD",
                batch.batch_id,
                body.invalid_utf8,
            )
        policy = RetryPolicy(
            deadline,
            clock=self.clock,
            sleep=self.sleep,
            rand=self.rand,
            on_retry=lambda n, wait, exc: self._on_retry(batch, n, wait, exc),
        )
        try:
            sent = policy.call(lambda: self._attempt(body.data))
        except TransientSendError as exc:
            self._record_error(batch.batch_id, str(exc))
            log.warning(
                "batch %s not sent: %s; the time budget does not allow another retry",
                batch.batch_id,
                exc,
            )
            raise _Stop(EXIT_BUDGET) from None
        except BatchTooLargeError as exc:
            self._split(batch, lines, exc, deadline)
            return
        except PermanentSendError as exc:
            self._dead(batch, "rejected", exc.status, exc.body, str(exc))
            return
        except AuthError as exc:
            self._record_error(batch.batch_id, str(exc))
            log.error("stopping: %s; every batch stays in ready/", exc)
            raise _Stop(EXIT_AUTH) from None
        try:  # before the delete: ingest must still know these lines if rsyslog hands one again
            note_shipped(self.spool, lines, self.cfg.dedup_window)
        except OSError as exc:
            self._count(ship_dedup_note_errors=1)
            log.warning(
                "batch %s: cannot note its lines for the dedup index: %s", batch.batch_id, exc
            )
        self.spool.delete(batch)
        self.sent_batches += 1
        self.sent_lines += len(lines)
        self._count(
            ship_batches_sent=1,
            ship_lines_sent=len(lines),
            ship_bytes_sent=len(body.data),
            ship_invalid_utf8_lines=body.invalid_utf8,
        )
        self._update_state(
            "last_success",
            {
                "time": _iso(self.now()),
                "batch_id": batch.batch_id,
                "lines": len(lines),
                "bytes": len(body.data),
            },
        )
        log.info(
            "sent %s: %d lines, %d bytes, HTTP %d in %.2f s",
            batch.batch_id,
            len(lines),
            len(body.data),
            sent.status,
            sent.elapsed,
        )

    def _attempt(self, data: bytes) -> Sent:
        """One send, with at most one clock correction and one forced credential renewal."""
        creds = self.auth.credentials()
        corrected = renewed = False
        while True:
            try:
                return self.transport.post(data, creds, self.now())
            except CredentialsRejectedError as exc:
                if (
                    isinstance(exc, ClockSkewError)
                    and not corrected
                    and exc.server_time is not None
                ):
                    corrected = True
                    self._set_offset(exc.server_time)
                    continue
                if renewed:
                    raise AuthError(
                        f"the API refused the credentials again after renewing them ({exc})"
                    ) from None
                renewed = True
                log.warning("%s; renewing the credentials and sending again", exc)
                creds = self.auth.renew()

    def _on_retry(self, batch: Batch, attempt: int, wait: float, exc: BaseException) -> None:
        self._count(ship_retries=1)
        log.warning("batch %s: %s; retry %d in %.1f s", batch.batch_id, exc, attempt, wait)

    # -- 413 ------------------------------------------------------------

    def _split(
        self, batch: Batch, lines: list[bytes], exc: BatchTooLargeError, deadline: float
    ) -> None:
        if len(lines) <= 1:
            self._dead(
                batch, "too_large", exc.status, exc.body, f"a single line is too large: {exc}"
            )
            return
        ids = (f"{batch.batch_id}.1", f"{batch.batch_id}.2")
        if not all(BATCH_ID_RE.match(i) for i in ids):
            self._dead(batch, "split_limit", exc.status, exc.body, f"cannot split further: {exc}")
            return
        mid = len(lines) // 2
        # Both halves durable (write_batch fsyncs file and folder) before the
        # parent goes; a crash in between leaves the parent, which splits again
        # into the same names.
        first = self.spool.write_batch(ids[0], lines[:mid])
        second = self.spool.write_batch(ids[1], lines[mid:])
        self.spool.delete(batch)
        self._count(ship_split_batches=1)
        log.warning(
            "batch %s: %s; split into %s (%d lines) and %s (%d lines)",
            batch.batch_id,
            exc,
            first.batch_id,
            first.lines,
            second.batch_id,
            second.lines,
        )
        self._ship(first, deadline, lines[:mid])
        self._ship(second, deadline, lines[mid:])

    # -- dead/ ----------------------------------------------------------

    def _dead(
        self, batch: Batch, reason: str, status: Optional[int], body: str, error: str
    ) -> None:
        why = {
            "batch_id": batch.batch_id,
            "reason": reason,
            "status": status,
            "body": body,
            "error": error,
            "lines": batch.lines,
            "time": _iso(self.now()),
        }
        dead = self.spool.move_to_dead(batch, why)
        self._count(ship_dead_batches=1, ship_dead_lines=batch.lines, **{f"ship_dead_{reason}": 1})
        self._record_error(batch.batch_id, f"moved to dead/ ({reason}): {error}")
        log.error(
            "batch %s (%d lines) moved to dead/ (%s): %s; see %s",
            batch.batch_id,
            batch.lines,
            reason,
            error,
            dead.why_path,
        )

    # -- state/ ---------------------------------------------------------

    def _update_state(self, key: str, value: dict[str, Any]) -> None:
        state = self.spool.read_state(SHIP_STATE)
        state[key] = value
        self.spool.write_state(SHIP_STATE, state)

    def _record_error(self, batch_id: Optional[str], error: str) -> None:
        self._update_state(
            "last_error", {"time": _iso(self.now()), "batch_id": batch_id, "error": error[:300]}
        )

    def _count(self, **deltas: int) -> None:
        self.spool.add_counters(deltas)

    def _flush_auth_counts(self) -> None:
        counts = self.auth.counts
        if counts:
            self._count(**{f"ship_{k}": v for k, v in counts.items()})
            counts.clear()


def ship_lock(spool: Spool) -> contextlib.AbstractContextManager[bool]:
    """Yields True when this process is the spool's only shipper."""
    return try_locked(spool.state_path(SHIP_LOCK))


def run_ship(cfg: Config, **deps: Any) -> int:
    """The `ship` command. `deps` are Shipper's injectable side effects (tests, bench)."""
    check_config(cfg, need_cognito=deps.get("auth") is None)
    spool = Spool(cfg.spool_dir).create()
    spool.remove_stale_temps()
    code = EXIT_OK
    for _ in range(RELIST_ROUNDS):
        with ship_lock(spool) as mine:
            if not mine:
                log.info("another shipper is running on %s; leaving it to that one", spool.root)
                return EXIT_OK
            code = _run_locked(cfg, spool, deps)
        # With the lock released, look once more: a batch sealed after our
        # last listing, whose second shipper found the lock still held and
        # left, would otherwise wait for the next seal.
        if code != EXIT_OK or not spool.ready_batches():
            return code
    return code


def _run_locked(cfg: Config, spool: Spool, deps: dict[str, Any]) -> int:
    shipper = None
    try:
        shipper = Shipper(cfg, spool, **deps)
        return shipper.run()
    except AuthError as exc:  # from a first credentials() outside a batch, defensive
        log.error("stopping: %s", exc)
        return EXIT_AUTH
    except SpoolError:
        raise
    except Exception as exc:
        log.error("the shipper failed: %s: %s", type(exc).__name__, exc, exc_info=True)
        with contextlib.suppress(Exception):
            if shipper is not None:
                shipper._record_error(None, f"shipper failed: {type(exc).__name__}")
        return EXIT_FAILED


def _find_dead(spool: Spool, names: list[str]) -> list[Batch]:
    dead = spool.dead_batches()
    index: dict[str, Batch] = {}
    for b in dead:
        index[b.batch_id] = b
        index[b.name] = b
        index[b.name[: -len(BATCH_SUFFIX)]] = b
        index[os.path.basename(b.why_path)] = b
    chosen, missing = [], []
    for name in names:
        b = index.get(os.path.basename(name.rstrip("/")))
        if b is None:
            missing.append(name)
        elif b not in chosen:
            chosen.append(b)
    if missing:
        raise UsageError(f"not in {spool.dead_dir}: {', '.join(missing)}")
    return chosen


def run_replay(cfg: Config, batches: list[str], all_dead: bool = False, **deps: Any) -> int:
    """The `replay` command: dead/ -> ready/ (all, or the named ones), then a ship."""
    check_config(cfg, need_cognito=deps.get("auth") is None)
    if all_dead and batches:
        raise UsageError("give batch names or --dead, not both")
    if not all_dead and not batches:
        raise UsageError("name the batches to replay, or pass --dead to replay all of dead/")
    spool = Spool(cfg.spool_dir).create()
    chosen = spool.dead_batches() if all_dead else _find_dead(spool, batches)
    for b in chosen:
        spool.move_to_ready(b)
        log.info("replay: %s moved from dead/ back to ready/", b.batch_id)
    spool.add_counters({"ship_replayed_batches": len(chosen)})
    if not chosen:
        log.info("replay: dead/ is empty")
    return run_ship(cfg, **deps)
