"""The ceiling for any Python omprog program: answers the protocol, does nothing else.

Reads stdin as bytes, answers `OK` to marks and plain messages and
`DEFER_COMMIT` inside transactions; writes the time it saw the sentinel (a line
holding argv[2]) to the file argv[1], so the bench can time it like ingest.
"""

import os
import sys
import time

done_file, sentinel = sys.argv[1], sys.argv[2].encode()
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
        if sentinel in line:
            with open(done_file + ".tmp", "w") as fh:
                fh.write(repr(time.time()))
            os.replace(done_file + ".tmp", done_file)
    out.flush()
