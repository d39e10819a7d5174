"""Browser tests: Chromium driven by Playwright against the real processes."""
