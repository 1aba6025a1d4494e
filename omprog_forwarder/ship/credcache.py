"""The device's credential cache: `state/credentials.json`, private and bound.

What Cognito handed out (tokens, the identity id, temporary AWS credentials)
is kept between shipper runs, so a run every few minutes does not log in
every time. The file is 0600 and replaced atomically; a read-renew-write
happens under `state/credentials.lock`, so two shippers (a timer and a seal)
never renew twice or overwrite each other. The cache is bound to the pool,
client, user and endpoint it came from: a changed config never uses a stale
cache, it starts afresh. A cache that cannot be read or written is not an
error (the credentials still work; the next run logs in again), only a
warning, and its content never appears in one.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from omprog_forwarder.spool import locked, write_file_atomic

log = logging.getLogger(__name__)

CACHE_VERSION = 1


class CredentialCache:
    """Load and save one device's cached Cognito state (a JSON object)."""

    def __init__(self, path: str, lock_path: str, binding: Mapping[str, str]) -> None:
        self.path = path
        self.lock_path = lock_path
        self.binding = dict(binding)

    def locked(self) -> contextlib.AbstractContextManager[int]:
        """Hold the cache's lock for a read-renew-write."""
        return locked(self.lock_path)

    def load(self) -> dict[str, Any]:
        """The cached state, or {} when there is none, it is unreadable or bound elsewhere."""
        state: dict[str, Any] = {}
        try:
            with open(self.path, "rb") as fh:
                loaded = json.loads(fh.read() or b"{}")
            if isinstance(loaded, dict):
                state = loaded
        except FileNotFoundError:
            pass
        except (OSError, ValueError):
            log.warning("credential cache %s unreadable; starting afresh", self.path)
        if state.get("version") != CACHE_VERSION or state.get("bound_to") != self.binding:
            return {}
        return state

    def save(self, state: dict[str, Any]) -> None:
        """Write `state` (0600, atomically), stamped with the version and binding."""
        state["version"] = CACHE_VERSION
        state["bound_to"] = self.binding
        data = json.dumps(state, sort_keys=True).encode()
        try:
            write_file_atomic(self.path, data, mode=0o600)
        except OSError as exc:
            # Not fatal: the credentials work; the next run logs in again.
            log.warning("cannot write the credential cache %s: %s", self.path, exc.strerror)
