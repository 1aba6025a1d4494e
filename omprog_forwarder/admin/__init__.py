"""Operator commands: `provision`, `deprovision`, `devices`.

Run on an operator's machine with the operator's AWS credentials (the
default boto3 chain), never on a device. boto3 is imported inside the
commands; nothing on the ingest path imports this package.
"""
