"""Schemathesis fuzzing of both processes' OpenAPI contracts against live processes."""
