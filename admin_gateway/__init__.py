"""admin_gateway: the Engine Jobs web panel and admin API (logins, roles, CSRF, SAFE_MODE, engine proxy)."""
