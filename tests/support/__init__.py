"""Test helpers shared by several test folders (loopback servers, rsyslogd harness)."""
