"""Shared pytest setup. Helpers are found through `pythonpath` (pyproject.toml):
`support.*` for the test helpers, the Lambda's modules by their own names."""
