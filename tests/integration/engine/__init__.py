"""Integration tests of the engine: its HTTP API, CLI, runner, durability and crash recovery."""
