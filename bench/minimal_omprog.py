"""The ceiling for any Python omprog program: answers the protocol, does nothing else.

Reads stdin as bytes and answers as `omprog-forwarder run` does: `OK` once
ready, `OK` to the transaction marks and to a plain message, `DEFER_COMMIT`
to a message inside a transaction; it exits quietly on EOF. Nothing is
stored, so the bench's ratio forwarder / this program is what the
forwarder's real work costs on top of the conversation with rsyslog.
Arguments are ignored: bench_ingest.py passes a label so it can find this
process in /proc and read its CPU time.
"""

import sys

out = sys.stdout.buffer
out.write(b"OK\n")
out.flush()
in_tx = False
for line in sys.stdin.buffer:
    if line == b"BEGIN TRANSACTION\n":
        in_tx = True
        out.write(b"OK\n")
    elif line == b"COMMIT TRANSACTION\n":
        in_tx = False
        out.write(b"OK\n")
    else:
        out.write(b"DEFER_COMMIT\n" if in_tx else b"OK\n")
    out.flush()
