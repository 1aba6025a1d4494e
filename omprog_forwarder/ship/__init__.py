"""The ship half: sends sealed batches from the spool (`omprog-forwarder ship`).

Cognito login, SigV4 signing, retries. Its third-party libraries are imported
here only, and only when a command needs them; nothing in `ingest/` imports
this package.
"""
