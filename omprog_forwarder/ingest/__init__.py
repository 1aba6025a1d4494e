"""The ingest half: what rsyslog starts (`omprog-forwarder run`).

Standard library only, never the network, never the ship half: rsyslog must
never stall on an outage, and the process must stay small. `tests/ingest`
checks that every module in this folder keeps to that.
"""
