"""End-to-end tests: the real processes together, from their console scripts (mostly an installed wheel)."""
