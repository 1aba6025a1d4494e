"""Errors of omprog-forwarder, split the way rsyslog splits them.

    ForwarderError                  base; carries an exit code
    ├── FatalError                  the program cannot work: say why and exit non-zero,
    │   │                           rsyslog keeps the messages and restarts it later
    │   ├── ConfigError             a bad key or value; the message names both
    │   └── SpoolError              the spool directory cannot be opened or written
    ├── RecoverableError            this message cannot be taken now: answer an error
    │   │                           status line, rsyslog retries the same message
    │   └── SpoolFullError          the spool reached max_spool_bytes
    └── SendError                   the shipper could not deliver a batch
        ├── TransientSendError      retry later (429, 5xx, timeouts, connection errors)
        └── PermanentSendError      the API refused the batch for good: it goes to dead/

The shipper's authentication errors live beside these in the same tree once
the shipper exists; nothing here imports anything outside the standard library.
"""

from __future__ import annotations


class ForwarderError(Exception):
    """Base class. `exit_code` is what the command exits with."""

    exit_code = 1


class FatalError(ForwarderError):
    exit_code = 1


class ConfigError(FatalError):
    exit_code = 2


class SpoolError(FatalError):
    exit_code = 1


class RecoverableError(ForwarderError):
    """Turned into an omprog error status line; never exits the program."""


class SpoolFullError(RecoverableError):
    pass


class SendError(ForwarderError):
    pass


class TransientSendError(SendError):
    pass


class PermanentSendError(SendError):
    pass
