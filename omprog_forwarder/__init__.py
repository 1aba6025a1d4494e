"""omprog-forwarder: lossless, secure syslog shipping from small hosts to AWS.

The package is split by stage (see the README): the ingest path (`run`) is
`cli` -> `config` -> `spool` / `batcher` -> `protocol` and imports the standard
library only; the shipper (`ship`) lives in modules imported lazily.
"""

__version__ = "0.1.0"
