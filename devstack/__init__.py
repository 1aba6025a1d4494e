"""The local stack: the AWS side of omprog-forwarder on one machine.

Run from the repository (never installed on a device): moto in server mode
for Cognito, S3 and the rest (`aws.py`), the identity pool's per-identity
credentials moto lacks (`aws.IdentityBroker`), and a gateway that does for
`POST /logs` what API Gateway does, SigV4 verification included
(`gateway.py`), in front of the real Lambda handler. The demo, the tests and
the benchmarks all use it.
"""
