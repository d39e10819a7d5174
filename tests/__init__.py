"""The Engine Jobs test suite, laid out by process (see docs/development.md, "Tests").

Every folder is a package, so each module is imported once, under one name (``tests.integration.gateway.harness``...).
"""
