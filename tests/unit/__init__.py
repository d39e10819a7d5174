"""Unit tests: one module or class of one process at a time, no server, no subprocess of ours."""
