"""Integration tests: one process at a time, in-process on an ephemeral port or as a subprocess."""
