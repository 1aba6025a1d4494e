"""Errors of omprog-forwarder, split the way rsyslog splits them.

    ForwarderError                  base; carries an exit code (cli prints it and exits)
    ├── FatalError                  the program cannot work: say why and exit non-zero,
    │   │                           rsyslog keeps the messages and restarts it later
    │   ├── ConfigError             a bad key or value; the message names both
    │   ├── SpoolError              the spool directory cannot be opened or written
    │   ├── UsageError              a command was asked for something that is not there
    │   │                           (e.g. `replay` of a batch that is not in dead/)
    │   ├── AuthError               Cognito refused the device's login (wrong password,
    │   │                           user disabled, MFA asked), or the API kept answering
    │   │                           401/403 after the credentials were renewed: the
    │   │                           shipper stops, every batch stays in ready/
    │   ├── AdminError              an operator command could not do its work: no such
    │   │                           stack, pool or device, or AWS refused the operator
    │   └── CheckFailed             `check` found a step that fails (already printed)
    ├── RecoverableError            this message cannot be taken now: the protocol loop
    │   │                           answers an error status line (ingest/protocol.py,
    │   │                           answer_message), rsyslog retries the same message
    │   ├── SpoolFullError          the spool reached max_spool_bytes
    │   └── DiskFullError           the file system under the spool is full
    └── SendError                   the shipper could not deliver a batch
        ├── TransientSendError      retry later (429, 5xx, timeouts, connection errors)
        │   └── AuthUnavailableError  Cognito unreachable, throttled or failing: the
        │                           same retry policy applies as for the API
        ├── PermanentSendError      the API refused the batch for good: it goes to dead/
        ├── BatchTooLargeError      413: the batch is split in two, never dropped
        └── CredentialsRejectedError  401/403 for the signature or the credentials:
            │                       renew the credentials once and resend
            └── ClockSkewError      403 "Signature expired" / "not yet current": sign
                                    again with the time taken from the response's Date

Each leaf is raised where its condition is found; the bases are caught by
their role: ForwarderError by the command line (message and exit code),
FatalError by `run` at start-up (one error status to rsyslog, then exit),
RecoverableError by the protocol loop, TransientSendError by the retry
policy, CredentialsRejectedError by the shipper's renewal, and SendError
groups what `Transport.post` raises. Messages never contain a password, a
client secret, a token or a secret key. Nothing here imports anything outside
the standard library.
"""

from __future__ import annotations

from typing import Optional


class ForwarderError(Exception):
    """Base class. `exit_code` is what the command exits with."""

    exit_code = 1


class FatalError(ForwarderError):
    """The program cannot work as configured or placed: exit non-zero with the reason."""

    exit_code = 1


class ConfigError(FatalError):
    """A bad or missing setting; the message names the key and the value."""

    exit_code = 2


class SpoolError(FatalError):
    """The spool directory cannot be created, written or read back."""

    exit_code = 1


class UsageError(FatalError):
    """A command was asked for something that is not there."""

    exit_code = 2


class AuthError(FatalError):
    """The device cannot authenticate; an operator has to act (exit 77, EX_NOPERM)."""

    exit_code = 77


class AdminError(FatalError):
    """An operator command (provision, deprovision, devices) failed; the message says why."""

    exit_code = 1


class CheckFailed(FatalError):
    """A step of `check` failed; its line (with the reason) is already printed."""

    exit_code = 1


class RecoverableError(ForwarderError):
    """Turned into an omprog error status line; never exits the program."""


class SpoolFullError(RecoverableError):
    """The spool holds max_spool_bytes: rsyslog keeps the line in its queue."""


class DiskFullError(RecoverableError):
    """The file system is full (ENOSPC, EDQUOT, EFBIG): nothing was written."""


class SendError(ForwarderError):
    """The shipper could not deliver a batch."""


class TransientSendError(SendError):
    """Retry later. `retry_after` (seconds) is the server's Retry-After, when it sent one."""

    def __init__(
        self, message: str, status: Optional[int] = None, retry_after: Optional[float] = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class AuthUnavailableError(TransientSendError):
    """Cognito could not be reached or failed; retried like an API outage."""


class PermanentSendError(SendError):
    """The API refused the batch for good; `status` and `body` go into its .why file."""

    def __init__(self, message: str, status: Optional[int] = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class BatchTooLargeError(SendError):
    """The API answered 413: split, do not dead-letter (that is the caller's policy)."""

    def __init__(self, message: str, status: int = 413, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class CredentialsRejectedError(SendError):
    """The API refused the signature or the credentials (401/403): renew once."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


class ClockSkewError(CredentialsRejectedError):
    """403 because the request time is too far from the server's.

    `server_time` is the server's clock (epoch seconds) when it answered, or
    None when the response said nothing usable about it.
    """

    def __init__(self, message: str, server_time: Optional[float], status: int = 403) -> None:
        super().__init__(message, status)
        self.server_time = server_time
