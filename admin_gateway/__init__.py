"""admin_gateway: the Engine Jobs web panel and admin API (logins, roles, CSRF, SAFE_MODE, engine proxy).

Subpackages by role: ``http`` (the app, its route table, the access rule,
handlers of login, pages, audit page and admin API, OpenAPI), ``auth``
(sessions, users, CSRF, login throttling) and ``audit`` (the audit trail and
the timeline over both journals). Top-level modules (``settings``, ``config``,
``errors``, ``peer``, ``engine_client``, ``cli``) are used by all of them.

May import: itself and ``shared``; never ``engine_hub`` (it speaks to the
engine over HTTP only). Importing it has no side effects.
"""
