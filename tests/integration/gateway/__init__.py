"""Integration tests of the gateway, in front of a real in-process engine (the upstream engine)."""
