"""Unit tests of admin_gateway: settings, users, sessions, throttles, device cookies, peers."""
